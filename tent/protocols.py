"""Evaluation protocols: the test stream of every SETTING, as a plan of pieces and their data.

A *piece* is one stretch of the stream: one corruption at one severity (or, for the mixed
settings, every corruption of a severity shuffled together), with a flag saying whether the
model is reset before it. `plan(...)` lists the pieces of a setting; `piece_data(...)` loads
one piece in stream order (shuffled for mixed, Dirichlet class order for correlated).

Sources of the definitions (docs/protocols.md, docs/fidelity.md list every difference):
- reset_each_shift / continual: DequanWang/tent cifar10c.py, and its never-reset use (CoTTA).
- gradual: qinenergy/cotta cifar10c_gradual.py (first corruption 5 4 3 2 1, every later one
  1 2 3 4 5 4 3 2 1, never reset).
- mixed_domains, *_correlated: mariodoebler/test-time-adaptation test_time.py and
  datasets/data_loading.py (`sort_by_dirichlet`, after NOTE, Gong et al. 2022).
- offline: the tent paper (adapt on the whole test set of a corruption, then predict).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Sequence, Tuple

import numpy as np
import torch

# CoTTA's gradual protocol: the first corruption enters at the largest shift and eases off,
# every later one rises and falls again
GRADUAL_FIRST = (5, 4, 3, 2, 1)
GRADUAL_NEXT = (1, 2, 3, 4, 5, 4, 3, 2, 1)
# settings whose model is reset before every corruption x severity: their pieces are independent
RESET_SETTINGS = ("reset_each_shift", "reset_each_shift_correlated", "offline")
# NOTE / mariodoebler: no Dirichlet chunk may hold fewer samples than this
MIN_CHUNK = 10
MAX_DIRICHLET_TRIES = 1000


@dataclass(frozen=True)
class Piece:
    """One stretch of the test stream: its corruption(s), severity and whether to reset before it."""
    corruptions: Tuple[str, ...]
    severity: int
    reset: bool

    @property
    def name(self) -> str:
        """The log name of the piece: the corruption, or 'mixed' for several."""
        return self.corruptions[0] if len(self.corruptions) == 1 else "mixed"


def corruption_order(corruptions: Sequence[str], order_seed: int) -> List[str]:
    """The corruption sequence, shuffled by `order_seed` unless it is -1 (CoTTA's orders)."""
    if order_seed < 0:
        return list(corruptions)
    order = np.random.RandomState(order_seed).permutation(len(corruptions))
    return [corruptions[i] for i in order]


def plan(setting: str, corruptions: Sequence[str], severities: Sequence[int]) -> List[Piece]:
    """The pieces of a setting, in stream order (the reference loops severity, then corruption)."""
    base = setting.replace("_correlated", "")
    if base in ("reset_each_shift", "offline"):
        return [Piece((c,), s, True) for s in severities for c in corruptions]
    if base == "continual" or setting == "correlated":
        return [Piece((c,), s, False) for s in severities for c in corruptions]
    if base == "gradual":
        return [Piece((c,), s, False) for i, c in enumerate(corruptions)
                for s in (GRADUAL_FIRST if i == 0 else GRADUAL_NEXT)]
    if base == "mixed_domains":
        return [Piece(tuple(corruptions), s, False) for s in severities]
    raise ValueError(f"unknown setting {setting!r}")


def dirichlet_order(labels: np.ndarray, delta: float, seed: int) -> np.ndarray:
    """Indices putting `labels` in a temporally correlated class order (NOTE's Dirichlet sampler).

    Each class is spread over K = #classes chunks with proportions ~ Dir(delta); a chunk already
    holding N / K samples gets no more (balance). Chunks are drawn again until each holds at least
    MIN_CHUNK samples (at most N // (2K) for tiny sets). Chunk after chunk, its classes follow in
    a random order, each class as one run. Small delta: each class in few chunks, so long
    single-class runs. delta 0: sorted by label (stable), as mariodoebler's code.
    """
    labels = np.asarray(labels)
    if delta == 0:
        return np.argsort(labels, kind="stable")
    rng = np.random.RandomState(seed)
    n, k = len(labels), int(labels.max()) + 1
    min_size = min(MIN_CHUNK, n // (2 * k))
    for _ in range(MAX_DIRICHLET_TRIES):
        chunks = dirichlet_chunks(labels, delta, k, rng)
        if min(sum(len(idx) for idx in chunk) for chunk in chunks) >= min_size:
            break
    else:
        raise ValueError(f"no Dirichlet class order with every chunk >= {min_size} samples "
                         f"for TEST.DELTA_DIRICHLET {delta}; try a larger value")
    order = [chunk[c] for chunk in chunks for c in rng.permutation(k)]
    return np.concatenate(order).astype(np.int64)


def dirichlet_chunks(labels: np.ndarray, delta: float, k: int,
                     rng: np.random.RandomState) -> List[List[np.ndarray]]:
    """chunks[j][c]: the indices of class c that chunk j holds (one draw of the sampler)."""
    n = len(labels)
    chunks: List[List[np.ndarray]] = [[] for _ in range(k)]
    sizes = np.zeros(k, dtype=np.int64)
    for c in range(k):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        open_ = sizes < n / k
        proportions = rng.dirichlet(np.repeat(delta, k)) * open_
        if not proportions.sum() > 0:  # a tiny delta put all mass on full chunks: spread over open ones
            proportions = open_.astype(float) if open_.any() else np.ones(k)
        proportions = proportions / proportions.sum()
        cuts = (np.cumsum(proportions) * len(idx)).astype(int)[:-1]
        for j, part in enumerate(np.split(idx, cuts)):
            chunks[j].append(part)
            sizes[j] += len(part)
    return chunks


class PieceData:
    """One piece's samples in stream order: labels, the corruption index of each, and batches."""

    def __init__(self, parts: Sequence, labels: torch.Tensor, domains: torch.Tensor,
                 order: torch.Tensor) -> None:
        self.parts = list(parts)  # (x, y) tensors, or datasets (ImageNet-C folders)
        self.order = order
        self.labels = labels[order]
        self.domains = domains[order]
        self.x = (torch.cat([p[0] for p in self.parts])[order]
                  if all(isinstance(p, tuple) for p in self.parts) else None)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, workers: int = 2) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches in stream order; folders are read by a DataLoader, tensors sliced."""
        if self.x is not None:
            for start in range(0, len(self), batch_size):
                yield self.x[start:start + batch_size], self.labels[start:start + batch_size]
            return
        dataset = torch.utils.data.Subset(torch.utils.data.ConcatDataset(self.parts), self.order.tolist())
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                             num_workers=workers)
        for batch in loader:
            yield batch[0], batch[1]


def part_labels(part) -> torch.Tensor:
    """Labels of an (x, y) pair or of an ImageFolder, without reading any image."""
    if isinstance(part, tuple):
        return part[1].long()
    return torch.as_tensor(part.targets, dtype=torch.long)


def piece_data(piece: Piece, setting: str, load: Callable[[str, int], object],
               delta: float, seed: int) -> PieceData:
    """Load a piece: its corruptions concatenated, shuffled if mixed, class-correlated if asked."""
    parts = [load(c, piece.severity) for c in piece.corruptions]
    labels = torch.cat([part_labels(p) for p in parts])
    domains = torch.cat([torch.full((len(part_labels(p)),), i, dtype=torch.long) for i, p in enumerate(parts)])
    order = np.arange(len(labels))
    folders = not all(isinstance(p, tuple) for p in parts)
    if "mixed_domains" in setting or folders:
        # the same fixed seed for every method, so all see one stream (as mariodoebler's loader);
        # ImageFolder lists the images class by class, which would be a label-sorted stream
        order = np.random.RandomState(seed).permutation(len(labels))
    if "correlated" in setting:
        order = order[dirichlet_order(labels.numpy()[order], delta, seed)]
    return PieceData(parts, labels, domains, torch.from_numpy(order))
