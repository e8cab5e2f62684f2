"""ProDA's losses: pixel-wise cross entropy, symmetric CE's reverse term, the confidence
regulariser, and the two KL terms (prototype consistency in stage 1, distillation in stages 2-3).

All follow the reference's formulas and reductions exactly; label 250 (IGNORE_INDEX) marks
unlabelled pixels. `cross_entropy2d` is also importable from `proda.models.utils`, where the
reference keeps it.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from proda.utils import IGNORE_INDEX


def cross_entropy2d(input: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None,
                    size_average: Optional[bool] = True, softmax_used: bool = False,
                    reduction: str = "mean", cls_num_list: Any = None) -> torch.Tensor:
    """Pixel-wise cross entropy of N x C x H x W logits against N x H x W labels, ignoring 250.

    As in the reference, the legacy `size_average` flag wins over `reduction` (torch's rule for
    the two together): with the default size_average=True the loss is always the mean over
    labelled pixels, whatever `reduction` says. `cls_num_list` is accepted and unused, as there.
    """
    n, c, h, w = input.size()
    nt, ht, wt = target.size()
    if h != ht or w != wt:
        raise NotImplementedError("sizes of input and label are not consistent")
    if size_average is not None:
        reduction = "mean" if size_average else "sum"
    if softmax_used:
        return F.nll_loss(input, target, weight=weight, ignore_index=IGNORE_INDEX, reduction=reduction)
    return F.cross_entropy(input, target, weight=weight, ignore_index=IGNORE_INDEX, reduction=reduction)


def rce(pred: torch.Tensor, labels: torch.Tensor, n_class: int) -> torch.Tensor:
    """Reverse cross entropy of symmetric CE: -sum p log(one-hot clamped to 1e-4), over labelled pixels."""
    pred = torch.clamp(F.softmax(pred, dim=1), min=1e-7, max=1.0)
    mask = (labels != IGNORE_INDEX).float()
    labels = torch.where(labels == IGNORE_INDEX, torch.full_like(labels, n_class), labels)
    one_hot = F.one_hot(labels, n_class + 1).float()
    one_hot = torch.clamp(one_hot.permute(0, 3, 1, 2)[:, :-1], min=1e-4, max=1.0)
    return -(torch.sum(pred * torch.log(one_hot), dim=1) * mask).sum() / (mask.sum() + 1e-6)


def regular_loss(activation: torch.Tensor, regular_type: str) -> torch.Tensor:
    """Confidence regulariser on all pixels: MRENT (negative entropy) or MRKLD (KL to uniform, up to a constant)."""
    logp = F.log_softmax(activation, dim=1)
    if regular_type == "MRENT":
        p = F.softmax(activation, dim=1)
        return (p * logp).sum() / (p.shape[0] * p.shape[2] * p.shape[3])
    if regular_type == "MRKLD":
        return -logp.sum() / logp.numel()
    raise NotImplementedError(f"regular_type {regular_type}")


def masked_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """F.kl_div(student, teacher) per element, averaged over the elements where mask is 1."""
    loss = F.kl_div(student, teacher, reduction="none")
    return (loss * mask).sum() / mask.sum()


def prototype_consistency(teacher_distance: torch.Tensor, student_distance: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    """Target structure learning: KL(soft prototype assignment of the teacher || the student's).

    `teacher_distance` is the EMA network's weak-view distance moved onto the strong view, where
    pixels that left the image or fell in the cutout are 250 and do not count.
    """
    mask = (teacher_distance != IGNORE_INDEX).float()
    teacher = F.softmax(-teacher_distance * temperature, dim=1)
    student = F.log_softmax(-student_distance * temperature, dim=1)
    return masked_kl(student, teacher, mask)


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      log_softmax: bool = False) -> torch.Tensor:
    """KL from the frozen teacher's softmax to the student's prediction (stages 2-3).

    The reference passes the student's softmax (not its log-softmax) to F.kl_div and masks
    with `teacher != 250`, which is always true; that produced the published numbers and is
    the default. log_softmax=True (--kd_log_softmax) passes the log-softmax (the corrected KL).
    """
    student = F.log_softmax(student_logits, dim=1) if log_softmax else F.softmax(student_logits, dim=1)
    teacher = F.softmax(teacher_logits, dim=1)
    return masked_kl(student, teacher, (teacher != IGNORE_INDEX).float())
