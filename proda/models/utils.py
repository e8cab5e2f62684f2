"""The poly learning-rate schedule and batch-norm freezing shared by ProDA's models.

Mirrors the reference `models/utils.py`, which also holds `cross_entropy2d`: it lives in
`losses.py` with ProDA's other losses and is importable from here as well. The vendored
SynchronizedBatchNorm is replaced by torch's own `nn.SyncBatchNorm`, which `freeze_bn`
recognises by its class name like any other batch norm.
"""
from __future__ import annotations

from typing import Any, List

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler

from proda.models.losses import cross_entropy2d  # noqa: F401  (the reference keeps it here)


class PolynomialLR(LRScheduler):
    """Poly schedule lr = base_lr * (1 - it / max_iter) ** gamma, stepped once per iteration."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_iter: int, decay_iter: int = 1,
                 gamma: float = 0.9, last_epoch: int = -1) -> None:
        self.decay_iter = decay_iter  # kept for the reference's signature; unused there too
        self.max_iter = max_iter
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        """Learning rates at iteration `last_epoch`; zero from max_iter on (the reference crashes there)."""
        factor = max(1 - self.last_epoch / float(self.max_iter), 0.0) ** self.gamma
        return [base_lr * factor for base_lr in self.base_lrs]


def get_scheduler(optimizer: torch.optim.Optimizer, opt: Any) -> PolynomialLR:
    """The reference's only schedule: poly decay with power 0.9 over opt.train_iters iterations."""
    return PolynomialLR(optimizer, max_iter=opt.train_iters, gamma=0.9)


def is_batchnorm(m: nn.Module) -> bool:
    """True for any batch norm layer (BatchNorm2d, SyncBatchNorm, ...), matched by class name as the reference."""
    return m.__class__.__name__.find("BatchNorm") != -1 or isinstance(m, nn.modules.batchnorm._BatchNorm)


def freeze_bn_params(m: nn.Module) -> None:
    """Stop gradients to a batch norm's affine weight and bias (Deeplab(freeze_bn=True) does only this)."""
    if is_batchnorm(m) and m.affine:
        m.weight.requires_grad = False
        m.bias.requires_grad = False


def freeze_bn(m: nn.Module) -> None:
    """Freeze a batch norm layer: eval mode (running statistics fixed) and no affine gradients."""
    if is_batchnorm(m):
        m.eval()
        freeze_bn_params(m)
