"""Mixed precision for ProDA's trainer (--amp off | bf16 | fp16): autocast forwards, float32 rest.

Only the network forwards (student, EMA network, teacher, discriminator) run under autocast;
their outputs are cast back to float32 at once, so every loss, softmax / entropy term,
prototype distance and update, and the EMA update is computed in float32 as with --amp off.
fp16 also scales the losses (`torch.amp.GradScaler`, one per optimiser: the segmentation
network's and the warm-up discriminator's), so that small gradients do not underflow; the
scalers' state is part of the resume state. bf16 has float32's range and needs no scaling.
With --amp off nothing here changes a single operation.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def as_float32(out: Any) -> Any:
    """A network output (tensor or dict of tensors) in float32."""
    if isinstance(out, dict):
        return {k: v.float() for k, v in out.items()}
    return out.float()


class UniqueParams:
    """What GradScaler sees of an optimiser: each parameter once, stepping the real optimiser.

    The reference's get_1x_lr_params lists most backbone parameters 3-4 times; GradScaler would
    unscale their (shared) gradients 3-4 times. SGD still gets them repeatedly, as the reference.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """One group holding every distinct parameter of the optimiser."""
        seen: Dict[int, torch.Tensor] = {}
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                seen.setdefault(id(p), p)
        return [{"params": list(seen.values())}]

    def step(self) -> Any:
        """The real optimiser's step."""
        return self.optimizer.step()


class MixedPrecision:
    """Autocast context, float32 outputs, and the gradient scalers of one trainer."""

    def __init__(self, mode: str, device: torch.device, optimizers: List[torch.optim.Optimizer]) -> None:
        if mode not in ("off", *AMP_DTYPES):
            raise ValueError(f"--amp {mode!r}: use off, bf16 or fp16")
        self.mode, self.device = mode, device
        # (optimiser, its scaler, what the scaler sees of it); looked up by identity (copy.deepcopy keeps it)
        self.entries = [(o, torch.amp.GradScaler(device.type, enabled=mode == "fp16"), UniqueParams(o))
                        for o in optimizers]

    def _entry(self, optimizer: torch.optim.Optimizer) -> Tuple[Any, torch.amp.GradScaler, UniqueParams]:
        """The (optimiser, scaler, proxy) entry of `optimizer`."""
        for entry in self.entries:
            if entry[0] is optimizer:
                return entry
        raise KeyError("this optimiser was not given to MixedPrecision")

    @property
    def enabled(self) -> bool:
        """True unless --amp off."""
        return self.mode != "off"

    def autocast(self) -> contextlib.AbstractContextManager:
        """torch.autocast in the chosen dtype; nothing at all with --amp off."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.mode])

    def forward(self, net: nn.Module, *args: Any, **kwargs: Any) -> Any:
        """net(*args) under autocast, its output back in float32 (with --amp off: net(*args) itself)."""
        if not self.enabled:
            return net(*args, **kwargs)
        with self.autocast():
            out = net(*args, **kwargs)
        return as_float32(out)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward(), scaled by the optimiser's scaler under fp16."""
        self._entry(optimizer)[1].scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step(); under fp16 unscale first, skip the step on inf/NaN gradients, update the scale."""
        _, scaler, proxy = self._entry(optimizer)
        if not scaler.is_enabled():
            optimizer.step()
            return
        scaler.step(proxy)
        scaler.update()

    def state_dict(self, optimizers: List[torch.optim.Optimizer]) -> List[Dict[str, Any]]:
        """The scalers' states in the order of `optimizers` (empty dicts when not scaling)."""
        return [self._entry(o)[1].state_dict() for o in optimizers]

    def load_state_dict(self, optimizers: List[torch.optim.Optimizer], states: List[Dict[str, Any]]) -> None:
        """Restore what state_dict() saved."""
        for optimizer, state in zip(optimizers, states, strict=True):
            if state:
                self._entry(optimizer)[1].load_state_dict(state)
