"""Test-time normalization (the paper's "BN" / "norm" baseline).

Identical to the official norm.py by default: every nn.BatchNorm2d switches to train mode so it
normalises with the statistics of the test batch, with the reference's eps / momentum /
reset_stats / no_stats options. Beyond the reference (keyword-only, off by default): which
batch-norm classes adapt (`norm_layers`) and skipping the state copy (`copy_state=False`).
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn

from .tent import BATCH_NORM_LAYERS, DEFAULT_NORM_LAYERS

__all__ = ["Norm", "collect_stats", "configure_model"]


class Norm(nn.Module):
    """Norm adapts a model by estimating feature statistics during testing.

    Once equipped with Norm, the model normalizes its features during testing
    with batch-wise statistics, just like batch norm does during training.
    """

    def __init__(self, model: nn.Module, eps: float = 1e-5, momentum: float = 0.1,
                 reset_stats: bool = False, no_stats: bool = False, *,
                 norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS,
                 copy_state: bool = True) -> None:
        super().__init__()
        self.model = configure_model(model, eps, momentum, reset_stats, no_stats,
                                     norm_layers=norm_layers)
        # skipping the copy saves memory when the model is never reset (continual use)
        self.model_state: Optional[Dict[str, Any]] = (
            deepcopy(self.model.state_dict()) if copy_state else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predict with batch statistics (and, unless no_stats, update the running estimates)."""
        return self.model(x)

    def reset(self) -> None:
        """Restore the statistics (and all other state) from construction time."""
        if self.model_state is None:
            raise RuntimeError("cannot reset without saved model state: "
                               "this Norm was built with copy_state=False")
        self.model.load_state_dict(self.model_state, strict=True)


def _check_batch_norms(norm_layers: Sequence[Type[nn.Module]]) -> Tuple[Type[nn.Module], ...]:
    """Norm estimates statistics, so only batch-norm classes make sense."""
    layers = tuple(norm_layers)
    if not all(issubclass(cls, BATCH_NORM_LAYERS) for cls in layers):
        raise ValueError(f"Norm re-estimates batch statistics; {layers} must all be batch-norm "
                         f"classes from {[c.__name__ for c in BATCH_NORM_LAYERS]}")
    return layers


def collect_stats(model: nn.Module, norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS
                  ) -> Tuple[List[torch.Tensor], List[str]]:
    """Collect the normalization stats from batch norms.

    Walk the model's modules and collect all batch normalization stats.
    Return the stats and their names.
    """
    layers = _check_batch_norms(norm_layers)
    stats, names = [], []
    for nm, m in model.named_modules():
        if isinstance(m, layers):
            state = m.state_dict()
            if m.affine:
                del state["weight"], state["bias"]
            for ns, s in state.items():
                stats.append(s)
                names.append(f"{nm}.{ns}")
    return stats, names


def configure_model(model: nn.Module, eps: float, momentum: float, reset_stats: bool,
                    no_stats: bool, *, norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS
                    ) -> nn.Module:
    """Configure model for adaptation by test-time normalization."""
    layers = _check_batch_norms(norm_layers)
    for m in model.modules():
        if isinstance(m, layers):
            # use batch-wise statistics in forward
            m.train()
            # configure epsilon for stability, and momentum for updates
            m.eps = eps
            m.momentum = momentum
            if reset_stats:
                # reset state to estimate test stats without train stats
                m.reset_running_stats()
            if no_stats:
                # disable state entirely and use only batch stats
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
    return model
