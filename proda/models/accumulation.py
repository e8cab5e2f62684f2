"""Gradient accumulation for ProDA's trainer (--accum_steps K): one optimiser step from K micro-batches.

Each stage (models/steps.py) writes the loss terms of one micro-batch by name (`Term`: its value,
what its mean runs over, its coefficient); `accumulate_and_step` runs its passes (`Pass`: the
micro-batches, their terms, what to log), backward once per micro-batch, and steps once.

--bs stays the effective batch; each step's batch is cut into K micro-batches, and each
micro-batch's term is weighted so that the summed gradients are the whole batch's:

  * a term that is a mean over labelled pixels (the cross entropies, symmetric CE's reverse
    term, the masked KL of prototype consistency) is weighted by the micro-batch's share of the
    batch's labelled pixels (`pixels`) -- not 1/K, which would give a micro-batch with few
    labelled pixels as much weight as one with many;
  * a term that is a mean over all pixels or all images (the adversarial and discriminator
    losses, the confidence regulariser, distillation) by its share of the batch's images (`images`).

What cannot be equal: batch-norm statistics of a micro-batch are not the batch's (stage 1
trains BN; --freeze_bn or --freeze_bn_stats remove the difference, SyncBatchNorm over GPUs is
the exact route). The EMA update, the prototype update and the schedules run once per step.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

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


def pixels(labels: Callable[[Any], torch.Tensor]) -> Callable[[Any], int]:
    """A term's normaliser: the labelled pixels of `labels(micro_batch)` (a mean over labelled pixels)."""
    return lambda part: labelled_pixels(labels(part))


def images(inputs: Callable[[Any], torch.Tensor]) -> Callable[[Any], int]:
    """A term's normaliser: the images of `inputs(micro_batch)` (a mean over all pixels or images)."""
    return lambda part: inputs(part).shape[0]


class Term(NamedTuple):
    """One loss term of one micro-batch: its value as the reference logs it, what its mean runs over,
    and a weight that the objective applies but the log does not (the reference logs prototype
    consistency before gamma_1; the other weights are in its logged values)."""

    value: torch.Tensor
    over: Callable[[Any], int]  # pixels(...) or images(...): the units of a micro-batch the mean runs over
    coefficient: float = 1.0


class Pass(NamedTuple):
    """Micro-batches and the named terms of each (backward once per micro-batch), and what to log.

    `logs` maps a logged key to the terms whose values it sums; `objective` names the key that
    logs the summed objective itself (coefficients included), if any.
    """

    parts: Union[Sequence[Any], Callable[[], Sequence[Any]]]  # a callable: built when the pass starts
    terms: Callable[[Any], Dict[str, Term]]
    logs: Mapping[str, Sequence[str]]
    objective: Optional[str] = None


def accumulate_and_step(optimizer: torch.optim.Optimizer, precision: Any, *passes: Pass) -> Dict[str, torch.Tensor]:
    """One optimiser step (under `precision`, models/precision.py) from the passes, in order; the logged values.

    Gradients are zeroed before and after (the reference zeroes before the warm-up's steps and
    after the other stages'; between steps they are None either way).
    """
    optimizer.zero_grad()
    logged: Dict[str, Optional[torch.Tensor]] = {}
    for one in passes:
        accumulate(one, lambda loss: precision.backward(loss, optimizer), logged)
    precision.step(optimizer)
    optimizer.zero_grad()
    return {key: value for key, value in logged.items() if value is not None}


def accumulate(one: Pass, backward: Callable[[torch.Tensor], None], logged: Dict[str, Any]) -> None:
    """Backward, micro-batch after micro-batch, of sum_t coefficient_t * share_t * term_t; add the logs to `logged`.

    share_t is the micro-batch's share of the batch's units of term t (its labelled pixels or
    images), so that the summed gradients are the whole batch's mean; with one micro-batch every
    share is 1 and nothing is multiplied. The shares are counted after the first micro-batch's
    forward, when the size of the logits that labels are resized to is known.
    """
    parts = one.parts() if callable(one.parts) else one.parts
    term_shares: Optional[Dict[str, List[float]]] = None
    for i, part in enumerate(parts):
        terms = one.terms(part)
        if term_shares is None:
            term_shares = {name: [1.0] if len(parts) == 1 else shares([term.over(p) for p in parts])
                           for name, term in terms.items()}
        values = {name: weighted(term.value, term_shares[name][i]) for name, term in terms.items()}
        loss = combine(*(v if v is None or term.coefficient == 1.0 else term.coefficient * v
                         for v, term in zip(values.values(), terms.values())))
        if loss is not None:  # None: no term of this micro-batch has a weight
            backward(loss)
        values = {name: None if v is None else v.detach() for name, v in values.items()}
        for key, names in one.logs.items():
            logged[key] = combine(logged.get(key), combine(*(values.get(name) for name in names)))
        if one.objective is not None and loss is not None:
            logged[one.objective] = combine(logged.get(one.objective), loss.detach())


def freeze_bn_statistics(net: nn.Module) -> None:
    """Batch norm normalises with its running statistics and stops updating them; affine stays trained."""
    for module in net.modules():
        if is_batchnorm(module):
            module.eval()
