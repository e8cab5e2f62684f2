"""Tent: fully test-time adaptation by entropy minimization (Wang et al., ICLR 2021).

Numerically identical to the official tent.py by default: the loss is the softmax entropy
averaged over the batch (for dense outputs such as segmentation logits, N x C x H x W, over
the batch and every pixel, optionally only where a mask is true); each step is forward -> loss -> backward -> step -> zero_grad; only
the affine scale and shift of every nn.BatchNorm2d adapt, always normalising with batch
statistics. Options beyond the reference are keyword-only and off by default: which
normalisation layers adapt (`norm_layers`), skipping the state copy (`copy_state=False`).
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn

__all__ = [
    "Tent", "softmax_entropy", "entropy_loss", "forward_and_adapt", "collect_params", "configure_model",
    "check_model", "copy_model_and_optimizer", "load_model_and_optimizer",
    "DEFAULT_NORM_LAYERS", "BATCH_NORM_LAYERS", "AFFINE_NORM_LAYERS", "norm_layer_types",
]

# the reference adapts nn.BatchNorm2d only
DEFAULT_NORM_LAYERS: Tuple[Type[nn.Module], ...] = (nn.BatchNorm2d,)
# layers with running statistics, which tent replaces by batch statistics
BATCH_NORM_LAYERS: Tuple[Type[nn.Module], ...] = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# layers without running statistics (for models without batch norm): only the affine adapts
AFFINE_NORM_LAYERS: Tuple[Type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm)

_NORM_LAYERS_BY_NAME = {cls.__name__: cls for cls in BATCH_NORM_LAYERS + AFFINE_NORM_LAYERS}


def norm_layer_types(names: Sequence[str]) -> Tuple[Type[nn.Module], ...]:
    """Layer classes for names such as 'BatchNorm2d' or 'GroupNorm' (config files use names)."""
    unknown = [n for n in names if n not in _NORM_LAYERS_BY_NAME]
    if unknown or not names:
        raise ValueError(f"unknown normalisation layer(s) {unknown or list(names)}; "
                         f"choose from {sorted(_NORM_LAYERS_BY_NAME)}")
    return tuple(_NORM_LAYERS_BY_NAME[n] for n in names)


class Tent(nn.Module):
    """Tent adapts a model by entropy minimization during testing.

    Once tented, a model adapts itself by updating on every forward.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 1,
                 episodic: bool = False, *, copy_state: bool = True) -> None:
        super().__init__()
        self.model = model
        self.optimizer = optimizer
        self.steps = steps
        if steps <= 0:
            raise ValueError("tent requires >= 1 step(s) to forward and update")
        self.episodic = episodic
        if episodic and not copy_state:
            raise ValueError("episodic tent resets before every batch, so it needs copy_state=True")
        # the reference always copies; for continual adaptation that is never reset the copy
        # only costs memory, so copy_state=False skips it (and reset() then raises)
        self.model_state: Optional[Dict[str, Any]] = None
        self.optimizer_state: Optional[Dict[str, Any]] = None
        if copy_state:
            self.model_state, self.optimizer_state = copy_model_and_optimizer(self.model, self.optimizer)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Adapt on the batch `steps` times and return the outputs of the last forward.

        `mask` (dense outputs only) selects the positions whose entropy counts, e.g. not void.
        """
        if self.episodic:
            self.reset()
        for _ in range(self.steps):
            outputs = forward_and_adapt(x, self.model, self.optimizer, mask=mask)
        return outputs

    def reset(self) -> None:
        """Restore the model and optimizer to their states from construction time."""
        if self.model_state is None or self.optimizer_state is None:
            raise RuntimeError("cannot reset without saved model/optimizer state: "
                               "this Tent was built with copy_state=False")
        load_model_and_optimizer(self.model, self.optimizer, self.model_state, self.optimizer_state)


def softmax_entropy(x: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax distribution from logits."""
    return -(x.softmax(1) * x.log_softmax(1)).sum(1)


def entropy_loss(outputs: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean softmax entropy over every position but the class dimension 1 (batch, pixels).

    For classifier outputs (N x C) this is the reference's `softmax_entropy(x).mean(0)`, bit for
    bit; for dense outputs (N x C x H x W) every pixel of every image weighs the same. With
    `mask` (boolean, the outputs' shape without dimension 1) only the true positions count.
    """
    # entropy in float32 even under autocast, so the loss is not computed in half precision
    entropy = softmax_entropy(outputs.float())
    if mask is None:
        return entropy.mean(0) if entropy.dim() == 1 else entropy.mean()
    if mask.shape != entropy.shape:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the outputs "
                         f"without their class dimension, {tuple(entropy.shape)}")
    weights = mask.to(entropy.dtype)
    # an all-false mask gives a zero loss (no update) rather than 0 / 0
    return (entropy * weights).sum() / weights.sum().clamp_min(1.0)


@torch.enable_grad()  # ensure grads in possible no grad context for testing
def forward_and_adapt(x: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                      *, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Forward and adapt model on batch of data.

    Measure entropy of the model prediction, take gradients, and update params.
    """
    outputs = model(x)
    loss = entropy_loss(outputs, mask)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return outputs


def collect_params(model: nn.Module, norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS
                   ) -> Tuple[List[nn.Parameter], List[str]]:
    """Collect the affine scale + shift parameters from normalisation layers.

    Walk the model's modules and collect the weight (scale) and bias (shift) of every layer of
    the `norm_layers` types (batch norm 2d by default). Return the parameters and their names.
    """
    params, names = [], []
    for nm, m in model.named_modules():
        if isinstance(m, tuple(norm_layers)):
            for np_, p in m.named_parameters(recurse=False):
                if np_ in ("weight", "bias"):  # weight is scale, bias is shift
                    params.append(p)
                    names.append(f"{nm}.{np_}")
    return params, names


def copy_model_and_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer
                             ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Copy the model and optimizer states for resetting after adaptation."""
    return deepcopy(model.state_dict()), deepcopy(optimizer.state_dict())


def load_model_and_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer,
                             model_state: Dict[str, Any], optimizer_state: Dict[str, Any]) -> None:
    """Restore the model and optimizer states from copies."""
    model.load_state_dict(model_state, strict=True)
    optimizer.load_state_dict(optimizer_state)


def configure_model(model: nn.Module, norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS
                    ) -> nn.Module:
    """Configure model for use with tent: train mode, only norm affine params trainable, batch stats."""
    # train mode, because tent optimizes the model to minimize entropy
    model.train()
    # disable grad, to (re-)enable only what tent updates
    model.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, tuple(norm_layers)):
            m.requires_grad_(True)
            if isinstance(m, BATCH_NORM_LAYERS):
                # force use of batch stats in train and eval modes; clearing the buffers matters
                # because track_running_stats=False alone still updates them (pytorch #20967)
                m.track_running_stats = False
                m.running_mean = None
                m.running_var = None
    return model


def check_model(model: nn.Module, norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS) -> None:
    """Check model for compatibility with tent.

    Raises AssertionError like the reference's asserts, but also under `python -O`.
    """
    param_grads = [p.requires_grad for p in model.parameters()]
    problems = [
        (model.training, "tent needs train mode: call model.train()"),
        (any(param_grads), "tent needs params to update: check which require grad"),
        (not all(param_grads), "tent should not update all params: check which require grad"),
        (any(isinstance(m, tuple(norm_layers)) for m in model.modules()),
         "tent needs normalization for its optimization"),
    ]
    for ok, message in problems:
        if not ok:
            raise AssertionError(message)
