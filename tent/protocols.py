"""Evaluation protocols: the test stream of every SETTING, as a plan of pieces and their data.

A *piece* is one stretch of the stream: one corruption at one severity (or, for the mixed
settings, every corruption of a severity shuffled together), with a flag saying whether the
model is reset before it. `plan(...)` lists the pieces of a setting in the loop of its peer;
`piece_data(...)` loads one piece in that peer's sample order.

Every setting follows one peer's loop exactly (PROTOCOL.PEER chooses the other where both exist;
docs/tent.md lists which, docs/fidelity.md every difference):
- "tent": DequanWang/tent cifar10c.py (reset_each_shift, offline): severity by severity, each
  corruption in turn, reset before every piece, the first NUM_EX images in file order.
- "cotta": qinenergy/cotta cifar10c.py / imagenetc.py / cifar10c_gradual.py: the same loop and
  samples, reset at the start of each severity's pass (continual), or the gradual sequence (first
  corruption 5 4 3 2 1, every later one 1 2 3 4 5 4 3 2 1, reset once).
- "mariodoebler": mariodoebler/test-time-adaptation test_time.py and datasets/data_loading.py:
  corruption by corruption, each through its severities (gradual: 1..5..1 for every corruption
  when one severity is set), reset at the first corruption (every corruption for
  reset_each_shift*); samples shuffled with Python's `random` seeded RNG_SEED, then NUM_EX of
  them drawn at random, then (correlated) NOTE's Dirichlet class order (`sort_by_dirichlet`).
- offline: the tent paper (adapt on the whole test set of a corruption, then predict).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch

# CoTTA's gradual protocol: the first corruption enters at the largest shift and eases off,
# every later one rises and falls again; mariodoebler runs GRADUAL_NEXT on every corruption
GRADUAL_FIRST = (5, 4, 3, 2, 1)
GRADUAL_NEXT = (1, 2, 3, 4, 5, 4, 3, 2, 1)
# settings whose model is reset at every shift (tent's loop: before every corruption x severity)
RESET_SETTINGS = ("reset_each_shift", "reset_each_shift_correlated", "offline")
PEERS = ("tent", "cotta", "mariodoebler")
# mariodoebler's domain name for the clean test set in CORRUPTION.TYPE (forgetting of the source domain)
CLEAN = "none"
# the peer each setting is named after (PROTOCOL.PEER auto)
DEFAULT_PEER: Dict[str, str] = {"reset_each_shift": "tent", "offline": "tent", "gradual": "cotta"}
# NOTE / mariodoebler: no Dirichlet chunk may hold fewer samples than this
MIN_CHUNK = 10
MAX_DIRICHLET_TRIES = 1000


def peer_of(setting: str, peer: str = "auto") -> str:
    """The peer whose loop and sampling a setting follows: `peer`, or the one it is named after."""
    return DEFAULT_PEER.get(setting, "mariodoebler") if peer == "auto" else peer


def peer_allows(setting: str, peer: str) -> bool:
    """Whether `peer`'s code has a loop for `setting` (tent: resetting ones; cotta: never-reset ones)."""
    if peer == "tent":
        return setting in RESET_SETTINGS
    if peer == "cotta":
        return setting not in RESET_SETTINGS and "mixed_domains" not in setting
    return peer == "auto" or (peer == "mariodoebler" and setting != "offline")


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


def plan(setting: str, corruptions: Sequence[str], severities: Sequence[int],
         peer: str = "auto") -> List[Piece]:
    """The pieces of a setting, in the stream order of its peer (see the module docstring)."""
    peer = peer_of(setting, peer)
    if not peer_allows(setting, peer):
        raise ValueError(f"PROTOCOL.PEER {peer} has no loop for SETTING {setting}")
    if peer == "mariodoebler":
        return mariodoebler_plan(setting, corruptions, severities)
    return reference_plan(setting, corruptions, severities)


def reference_plan(setting: str, corruptions: Sequence[str], severities: Sequence[int]) -> List[Piece]:
    """tent's loop (severity, then corruption) and CoTTA's continual and gradual loops."""
    base = setting.replace("_correlated", "")
    if "gradual" in setting:
        return [Piece((c,), s, False) for i, c in enumerate(corruptions)
                for s in (GRADUAL_FIRST if i == 0 else GRADUAL_NEXT)]
    if base in ("reset_each_shift", "offline"):
        return [Piece((c,), s, True) for s in severities for c in corruptions]
    # CoTTA resets at the first corruption of every severity's pass (a no-op at the stream's start)
    return [Piece((c,), s, i == 0 and j > 0) for j, s in enumerate(severities) for i, c in enumerate(corruptions)]


def mariodoebler_plan(setting: str, corruptions: Sequence[str], severities: Sequence[int]) -> List[Piece]:
    """mariodoebler's loop: domain, then severity; reset at each domain's first severity if it resets."""
    mixed = "mixed_domains" in setting
    domains = [tuple(corruptions)] if mixed else [(c,) for c in corruptions]
    if "gradual" in setting and len(severities) == 1:
        severities = GRADUAL_NEXT
    resets = "reset_each_shift" in setting  # else only at the first domain: a no-op on a fresh model
    return [Piece(d, s, resets and j == 0) for d in domains for j, s in enumerate(severities)]


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
        with np.errstate(invalid="ignore"):  # a tiny delta can underflow to 0 / 0 inside numpy's dirichlet
            proportions = rng.dirichlet(np.repeat(delta, k)) * open_
        total = proportions.sum()
        if total > 0:
            cuts = (np.cumsum(proportions / total) * len(idx)).astype(int)[:-1]
        else:  # all mass on full chunks: mariodoebler's 0 / 0 gives NaN cut points, which put the class in the last chunk
            cuts = np.zeros(k - 1, dtype=int)
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


def mariodoebler_order(n: int, seed: int, num_ex: int) -> np.ndarray:
    """mariodoebler's sample list: `random.seed(seed)`, shuffle, then draw `num_ex` at random (-1: all)."""
    rng = random.Random(seed)  # the same generator and calls as its global `random` after random.seed
    idx = list(range(n))
    rng.shuffle(idx)
    if num_ex != -1:
        idx = rng.sample(idx, k=min(num_ex, n))
    return np.asarray(idx, dtype=np.int64)


def stream_order(labels: np.ndarray, setting: str, peer: str, delta: float, seed: int,
                 num_ex: int = -1, folders: bool = False) -> np.ndarray:
    """Indices of a piece's samples (parts concatenated) in the order its peer streams them.

    mariodoebler: shuffled and subsampled as its loader, then class-correlated. tent / CoTTA: the
    order `load` gave (the first NUM_EX of each file); an ImageNet-C folder (listed class by class)
    is shuffled with numpy seed `seed`; correlated: the Dirichlet order of those samples.
    """
    if peer == "mariodoebler":
        order = mariodoebler_order(len(labels), seed, num_ex)
    elif folders:
        order = np.random.RandomState(seed).permutation(len(labels))
    else:
        order = np.arange(len(labels))
    if "correlated" in setting:
        order = order[dirichlet_order(labels[order], delta, seed)]
    return order


def piece_data(piece: Piece, setting: str, load: Callable[[str, int], object],
               delta: float, seed: int, peer: str = "tent", num_ex: int = -1) -> PieceData:
    """Load a piece: its corruptions concatenated, in its peer's order (see `stream_order`).

    With peer mariodoebler, `load` must give every sample (NUM_EX is drawn here); otherwise the
    first NUM_EX of each corruption.
    """
    parts = [load(c, piece.severity) for c in piece.corruptions]
    labels = torch.cat([part_labels(p) for p in parts])
    domains = torch.cat([torch.full((len(part_labels(p)),), i, dtype=torch.long) for i, p in enumerate(parts)])
    folders = not all(isinstance(p, tuple) for p in parts)
    if piece.corruptions == (CLEAN,):  # mariodoebler's loader cannot reorder a torchvision test set: file order
        order = np.arange(len(labels))
    else:
        order = stream_order(labels.numpy(), setting, peer, delta, seed, num_ex, folders)
    return PieceData(parts, labels, domains, torch.from_numpy(order))
