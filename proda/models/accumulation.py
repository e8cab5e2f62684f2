"""Gradient accumulation for ProDA's trainer (--accum_steps K): one optimiser step from K micro-batches.

--bs stays the effective batch; each step's batch is cut into K micro-batches, and each
micro-batch's loss is weighted so that the summed gradients are the whole batch's:

  * a term that is a mean over labelled pixels (the cross entropies, symmetric CE's reverse
    term, the masked KL of prototype consistency) is weighted by the micro-batch's share of the
    batch's labelled pixels -- not 1/K, which would give a micro-batch with few labelled pixels
    as much weight as one with many;
  * a term that is a mean over all pixels or all images (the adversarial and discriminator
    losses, the confidence regulariser, distillation) by its share of the batch's images.

What cannot be equal: batch-norm statistics of a micro-batch are not the batch's (stage 1
trains BN; --freeze_bn or --freeze_bn_stats remove the difference, SyncBatchNorm over GPUs is
the exact route). The EMA update, the prototype update and the schedules run once per step.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
import torch.nn as nn

from proda.models.utils import is_batchnorm
from proda.utils import IGNORE_INDEX


def split_batch(batch: Any, k: int) -> List[Any]:
    """Cut a batch (tensor, collated dict / list of per-image values, or None) into k micro-batches along dim 0."""
    if k == 1:
        return [batch]
    if batch is None:
        return [None] * k
    if isinstance(batch, torch.Tensor):
        return list(torch.chunk(batch, k))
    if isinstance(batch, dict):
        parts = {key: split_batch(value, k) for key, value in batch.items()}
        return [{key: parts[key][i] for key in batch} for i in range(k)]
    if isinstance(batch, (list, tuple)):  # default_collate's tuples: one tensor per field
        parts = [split_batch(value, k) for value in batch]
        return [type(batch)(p[i] for p in parts) for i in range(k)]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}")


def shares(counts: Sequence[float]) -> List[float]:
    """Each micro-batch's share of the batch's total count (the normaliser of a mean loss)."""
    total = float(sum(counts))
    if total == 0:  # nothing labelled anywhere: the batch's mean is undefined, as the reference's is
        return [1.0 / len(counts)] * len(counts)
    return [float(c) / total for c in counts]


def labelled_pixels(labels: torch.Tensor) -> int:
    """How many pixels carry a label (not 250): the normaliser of the cross entropies."""
    return int((labels != IGNORE_INDEX).sum())


def image_shares(micro_batches: Sequence[torch.Tensor]) -> List[float]:
    """Each micro-batch's share of the batch's images (terms that are means over all pixels)."""
    return shares([m.shape[0] for m in micro_batches])


def weighted(loss: torch.Tensor, share: float) -> Optional[torch.Tensor]:
    """share * loss; the loss itself when it is the whole batch's; None when the micro-batch has no weight."""
    if share == 1.0:
        return loss
    if share == 0.0:  # no labelled pixel here: its mean is NaN and must not reach the gradients
        return None
    return loss * share


def combine(*terms: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The sum of the terms that are not None, left to right (None when all are)."""
    parts = [t for t in terms if t is not None]
    return sum(parts[1:], parts[0]) if parts else None


def freeze_bn_statistics(net: nn.Module) -> None:
    """Batch norm normalises with its running statistics and stops updating them; affine stays trained."""
    for module in net.modules():
        if is_batchnorm(module):
            module.eval()
