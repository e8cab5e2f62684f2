"""Samplers and seeded items: a training loader whose draws depend on the run's position only.

A resumed run must continue bit for bit where the interrupted one stood, whatever
--num_workers is. `SeededSampler` draws each epoch's order, and one seed per position in it,
from a generator seeded by (--seed, stream, epoch) alone; `SeededItems` loads item i under its
own seed (for `random`, NumPy and torch), in the main process or any worker. So the
augmentations of an item depend on where it stands in the run, not on which process loaded it
or what ran before, and a resumed epoch simply starts its sampler at the next unseen batch
(the rest of the resume state: proda/checkpoint.py).

    loader = DataLoader(SeededItems(dataset), batch_size=bs,
                        **seeded_loader_kwargs(dataset, seed, TARGET_STREAM, shuffle=True, drop_last=True))
"""
from __future__ import annotations

import random
from typing import Any, Dict, Iterator, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data

from dacommon.distributed import in_process_group

SOURCE_STREAM, TARGET_STREAM = 0, 1  # separate random streams for the source and target loaders


def epoch_generator(seed: int, stream: int, epoch: int) -> torch.Generator:
    """A torch generator that depends on (seed, stream, epoch) only."""
    state = np.random.SeedSequence([seed, stream, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class SeededSampler(torch.utils.data.DistributedSampler):
    """Yields (index, seed) pairs: a per-epoch order (shuffled or not) and a seed per position.

    Both come from epoch_generator(seed, stream, epoch) alone. Shards and pads across the
    processes of a distributed run as DistributedSampler does (one process otherwise).
    `set_epoch(epoch, skip)` starts the next pass `skip` items into the epoch (resume).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int, stream: int, shuffle: bool,
                 drop_last: bool) -> None:
        distributed = in_process_group()
        super().__init__(dataset, num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.stream, self.skip = stream, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """The epoch whose order the next pass yields, starting `skip` items into it."""
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """This process's indices and item seeds for the current epoch."""
        n = len(self.dataset)
        g = epoch_generator(self.seed, self.stream, self.epoch)
        indices = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2 ** 62, (n,), generator=g)
        if self.total_size > n:  # pad by repeating the start, as DistributedSampler does
            repeat = -(-self.total_size // n)
            indices, seeds = indices.repeat(repeat), seeds.repeat(repeat)
        indices, seeds = indices[:self.total_size], seeds[:self.total_size]
        return indices[self.rank::self.num_replicas], seeds[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        """(index, seed) pairs from position `skip` on; `skip` applies to one pass only."""
        indices, seeds = self.order()
        start, self.skip = self.skip, 0
        return iter(list(zip(indices[start:].tolist(), seeds[start:].tolist())))


class SeededItems(torch.utils.data.Dataset):
    """A dataset read with (index, seed) keys: item `index` is made under `seed` only.

    `random`, NumPy and torch are reseeded for the item and their previous states put back, so
    loading in the main process (--num_workers 0) leaves the training process's streams as
    they were. Other attributes are the wrapped dataset's.
    """

    def __init__(self, dataset: torch.utils.data.Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        """Number of items of the wrapped dataset."""
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        """files, decode_segmap, class_names, ... of the wrapped dataset."""
        if name == "dataset":  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: Tuple[int, int]) -> Any:
        """The item at key[0], its random draws seeded by key[1]."""
        index, seed = key
        py_state, np_state = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                random.seed(seed)
                np.random.seed(seed % 2 ** 32)
                torch.manual_seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def seeded_loader_kwargs(dataset: torch.utils.data.Dataset, seed: int, stream: int, shuffle: bool,
                         drop_last: bool) -> Dict[str, Any]:
    """DataLoader arguments for a resumable training loader over SeededItems(dataset).

    The loader's own generator (worker base seeds) is fixed, so creating an iterator never
    draws from the training process's torch stream.
    """
    return dict(sampler=SeededSampler(dataset, seed, stream, shuffle, drop_last), shuffle=False,
                drop_last=drop_last, generator=torch.Generator().manual_seed(seed))
