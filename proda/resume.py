"""What an exact resume needs besides the model: random-number state and the data position.

A resumed run must continue bit for bit where the interrupted one stood, whatever
--num_workers is. Two things make that possible:

* `SeededSampler` draws each epoch's order, and one seed per position in it, from a generator
  seeded by (--seed, stream, epoch) alone; `SeededItems` loads item i under its own seed (for
  `random`, NumPy and torch), in the main process or any worker. So the augmentations of an
  item depend on where it stands in the run, not on which process loaded it or what ran
  before, and a resumed epoch simply starts its sampler at the next unseen batch.
* `rng_state` / `set_rng_state` save and restore the global generators of the training
  process (Python, NumPy, torch CPU and every CUDA device), which the model itself draws from.

    state = {"rng": rng_state(), "data": data_state(datasets)}   # saved with the checkpoint
    load_data_state(datasets, state["data"]); set_rng_state(state["rng"])   # on resume, last
"""
from __future__ import annotations

import random
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.utils.data

from proda.distributed import in_process_group

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


# ----------------------------------------------------------------------------- RNG state

def rng_state() -> Dict[str, Any]:
    """The training process's generators, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuple(value: Any) -> Any:
    """Lists back to the nested tuples random.setstate wants."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what rng_state() saved (CUDA only when saved and present)."""
    random.setstate(_as_tuple(state["python"]))
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# ----------------------------------------------------------------------------- data position

def data_state(datasets: Any) -> Dict[str, Any]:
    """Where the endless source provider stands (the target position follows from the iteration)."""
    return {"source": datasets.source_train_loader.state_dict()}


def load_data_state(datasets: Any, state: Optional[Dict[str, Any]]) -> None:
    """Put the source provider back where data_state() found it."""
    if state is not None:
        datasets.source_train_loader.load_state_dict(state["source"])


# ----------------------------------------------------------------------------- per process

def process_state(datasets: Any, nets: Dict[str, torch.nn.Module]) -> Dict[str, Any]:
    """What differs between the processes of a torchrun run: random state, data position and the
    buffers of every network (batch-norm statistics are updated on each process's own batch)."""
    return {"rng": rng_state(), "data": data_state(datasets),
            "buffers": {name: {k: v.detach().cpu().clone() for k, v in net.named_buffers()}
                        for name, net in nets.items()}}


def gather_process_states(state: Dict[str, Any]) -> Optional[list]:
    """Every process's process_state, in rank order, on rank 0 (None on the others); a list of
    one without a process group."""
    if not in_process_group():
        return [state]
    states = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(state, states, dst=0)
    return states


def load_process_state(state: Dict[str, Any], datasets: Any, nets: Dict[str, torch.nn.Module]) -> None:
    """Put this process's buffers and data position back (its random state: set_rng_state, last)."""
    for name, buffers in state.get("buffers", {}).items():
        named = dict(nets[name].named_buffers())
        for key, value in buffers.items():
            named[key].copy_(value)
    load_data_state(datasets, state.get("data"))
