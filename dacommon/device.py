"""The device a run computes on."""
from __future__ import annotations

import torch


def get_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else the CPU (the references always move the model to CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
