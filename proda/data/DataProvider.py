"""`DataProvider`: an endless iterator over a DataLoader, for the source domain.

Training loops run over the target loader; each step draws a source batch with
`provider.next()`, and the provider silently starts a new epoch (a new shuffle) whenever
the source loader is exhausted, as the reference does.
"""
from __future__ import annotations

from typing import Any, Dict

import torch.utils.data as data


class DataProvider:
    """Wrap DataLoader(dataset, **kw) so that next() never runs out."""

    def __init__(self, dataset: data.Dataset, **kw: Any) -> None:
        self.args = kw
        self.dataset = dataset
        self.epoch = 0
        self.iteration = 0
        self.loader = data.DataLoader(dataset, **kw)
        self.DataLoader = None
        self.build()

    def build(self, skip_batches: int = 0) -> None:
        """Start a pass over the data (the sampler gets the epoch for its shuffle), optionally
        `skip_batches` batches in (resume; needs a sampler that can start mid-epoch)."""
        sampler = self.loader.sampler
        if skip_batches:
            sampler.set_epoch(self.epoch, skip_batches * self.args.get("batch_size", 1))
        elif hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        self.DataLoader = iter(self.loader)

    def state_dict(self) -> Dict[str, int]:
        """Where the provider stands: its epoch and the batches drawn in it."""
        return {"epoch": self.epoch, "iteration": self.iteration}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continue with the next unseen batch of the saved epoch."""
        self.epoch, self.iteration = int(state["epoch"]), int(state["iteration"])
        self.build(skip_batches=self.iteration)

    def __next__(self) -> Dict[str, Any]:
        """The next batch, restarting the loader when an epoch ends."""
        try:
            batch = next(self.DataLoader)
        except StopIteration:
            self.epoch += 1
            self.iteration = 0
            self.build()
            try:
                batch = next(self.DataLoader)
            except StopIteration:
                raise ValueError(f"{type(self.dataset).__name__} yields no batch: {len(self.dataset)} images, "
                                 f"batch size {self.args.get('batch_size', 1)}, drop_last="
                                 f"{self.args.get('drop_last', False)}") from None
        self.iteration += 1
        return batch

    next = __next__

    def __iter__(self) -> "DataProvider":
        """Iterating a provider never ends."""
        return self

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader)
