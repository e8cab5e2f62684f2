"""Test helpers shared by the ProDA test modules."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from proda.models.deeplabv2 import Deeplab


def save_tiny_checkpoint(path: Path, seed: Optional[int] = None, **fields: Any) -> str:
    """A random one-block-per-stage DeepLabv2 (19 classes) saved at `path` in the reference checkpoint
    format; `seed` reseeds torch first (None: the current random state), `fields` replace iter / best_iou."""
    if seed is not None:
        torch.manual_seed(seed)
    net = Deeplab(nn.BatchNorm2d, num_classes=19, init="random", layers=[1, 1, 1, 1])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"ResNet101": {"model_state": net.state_dict(), "objective_vectors": torch.zeros(19, 256)},
                "iter": 0, "best_iou": 0.0, **fields}, path)
    return str(path)
