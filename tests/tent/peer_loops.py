"""The peers' evaluation loops, re-stated in plain Python from reading their code, for the protocol tests.

Each replay yields the events of a stream: ("reset",) where the peer calls `model.reset()`, and
("piece", corruption(s), severity, sample ids) for every loader it builds, with the sample ids in
the order its loader yields them. A sample id is (corruption, index in that corruption's file).
`mariodoebler_updates` replays the update / reset bookkeeping of its `TTAMethod.forward`.

Read from (commits as fetched):
- DequanWang/tent cifar10c.py and qinenergy/cotta cifar/cifar10c.py, imagenet/imagenetc.py,
  cifar/cifar10c_gradual.py (c212a20): robustbench's loaders, `n_examples` first images, unshuffled.
- mariodoebler/test-time-adaptation (8b2ed63) classification/test_time.py (`evaluate`),
  datasets/data_loading.py (`get_test_loader`, `sort_by_dirichlet`), methods/base.py (`forward`).
"""
from __future__ import annotations

import random
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

Event = Tuple


def tent_stream(types: Sequence[str], severities: Sequence[int], num_ex: int) -> Iterator[Event]:
    """DequanWang/tent cifar10c.py: for severity, for corruption: reset, then the first num_ex images."""
    for severity in severities:
        for corruption in types:
            yield ("reset",)
            yield ("piece", (corruption,), severity, [(corruption, i) for i in range(num_ex)])


def cotta_stream(types: Sequence[str], severities: Sequence[int], num_ex: int) -> Iterator[Event]:
    """CoTTA cifar10c.py / imagenetc.py: for severity, for corruption: reset when i_c == 0."""
    for severity in severities:
        for i_c, corruption in enumerate(types):
            if i_c == 0:
                yield ("reset",)
            yield ("piece", (corruption,), severity, [(corruption, i) for i in range(num_ex)])


def cotta_gradual_stream(types: Sequence[str], num_ex: int) -> Iterator[Event]:
    """CoTTA cifar10c_gradual.py: first corruption 5..1 after a reset, every next one 1..5..1."""
    for i_c, corruption in enumerate(types):
        if i_c == 0:
            yield ("reset",)
            severities = [5, 4, 3, 2, 1]
        else:
            severities = [1, 2, 3, 4, 5, 4, 3, 2, 1]
        for severity in severities:
            yield ("piece", (corruption,), severity, [(corruption, i) for i in range(num_ex)])


def mariodoebler_stream(setting: str, types: Sequence[str], severities: Sequence[int],
                        labels: Dict[str, List[int]], num_ex: int, rng_seed: int,
                        delta: float) -> Iterator[Event]:
    """test_time.py `evaluate`: for domain (or 'mixed'), reset at the first (every, if reset_each_shift), for severity."""
    domain_seq_loop = ["mixed"] if "mixed_domains" in setting else list(types)
    if "gradual" in setting and len(severities) == 1:
        severities = [1, 2, 3, 4, 5, 4, 3, 2, 1]
    for i_dom, domain_name in enumerate(domain_seq_loop):
        if i_dom == 0 or "reset_each_shift" in setting:
            yield ("reset",)
        for severity in severities:
            samples = mariodoebler_loader(setting, domain_name, types, labels, num_ex, rng_seed, delta)
            domains = tuple(types) if domain_name == "mixed" else (domain_name,)
            yield ("piece", domains, severity, [(s[0], s[1]) for s in samples])


def mariodoebler_loader(setting: str, domain_name: str, types: Sequence[str], labels: Dict[str, List[int]],
                        num_ex: int, rng_seed: int, delta: float) -> List[Tuple[str, int, int]]:
    """data_loading.py `get_test_loader`: the samples (corruption, index, label), in loader order."""
    random.seed(rng_seed)
    np.random.seed(rng_seed)
    seq = types if "mixed_domains" in setting else [domain_name]  # create_cifarc_dataset
    samples = [(c, i, y) for c in seq for i, y in enumerate(labels[c])]
    random.shuffle(samples)
    if num_ex != -1:
        samples = random.sample(samples, k=min(num_ex, len(samples)))
    if "correlated" in setting:
        if delta > 0.:
            samples = sort_by_dirichlet(delta, samples)
        else:
            samples.sort(key=lambda x: x[2])
    return samples


def sort_by_dirichlet(delta: float, samples: list) -> list:
    """data_loading.py `sort_by_dirichlet` (NOTE's sampler) on the global numpy generator, NaN and all."""
    n = len(samples)
    class_labels = np.array([s[2] for s in samples])
    k = int(np.max(class_labels) + 1)
    min_size = -1
    while min_size < 10:
        idx_batch = [[] for _ in range(k)]
        idx_batch_cls = [[] for _ in range(k)]
        for c in range(k):
            idx_k = np.where(class_labels == c)[0]
            np.random.shuffle(idx_k)
            proportions = np.random.dirichlet(np.repeat(delta, k))
            proportions = np.array([p * (len(idx_j) < n / k) for p, idx_j in zip(proportions, idx_batch)])
            with np.errstate(invalid="ignore", divide="ignore"):
                proportions = proportions / proportions.sum()
                cuts = (np.cumsum(proportions) * len(idx_k)).astype(int)[:-1]
            idx_batch = [idx_j + idx.tolist() for idx_j, idx in zip(idx_batch, np.split(idx_k, cuts))]
            min_size = min(len(idx_j) for idx_j in idx_batch)
            for idx_j, idx in zip(idx_batch_cls, np.split(idx_k, cuts)):
                idx_j.append(idx)
    out = []
    for chunk in idx_batch_cls:
        cls_seq = list(range(k))
        np.random.shuffle(cls_seq)
        for c in cls_seq:
            out.extend(samples[i] for i in chunk[c])
    return out


def mariodoebler_updates(batch_sizes: Sequence[int], steps: int, reset_after: int, window: int,
                         shift_resets: Sequence[int] = ()) -> List[Event]:
    """methods/base.py `TTAMethod.forward` over a stream of batches: ("update", batch) and ("reset", batch).

    `shift_resets`: the batches before which test_time.py calls `model.reset()` (which leaves
    `performed_updates`, the window and its pointer alone).
    """
    events: List[Event] = []
    performed, pointer, filled = 0, 0, 0
    for b, size in enumerate(batch_sizes):
        if b in shift_resets:
            events.append(("reset", b))
        if size == 1:  # single sample: the sliding window
            filled = min(filled + 1, window)
            adapt = pointer == window - 1
            pointer = (pointer + 1) % window
        else:
            adapt = True
        if not adapt:
            continue
        for _ in range(steps):
            events.append(("update", b))
            performed += 1
            if reset_after > 0 and performed % reset_after == 0:
                events.append(("reset", b))
    return events
