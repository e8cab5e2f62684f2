"""Replays of what the augmentations recorded, on label maps, distances and features.

The weak view (`augmentations.py`: RandomSized, RandomCrop, RandomHorizontallyFlip) and the
strong view (`randaugment.py`: RandAugmentMC) record the parameters they drew; stage 1 maps the
EMA network's 1/4-resolution maps of the full target image onto the weak view
(`full_to_weak`, the reference's `full2weak`) and weak-view maps onto the strong view
(`strong_transform`, the reference's `label_strong_T`), so that pixel i of every map is the
same scene point. Loops run over the batch and the recorded ops only.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F

from proda.data.randaugment import GEOMETRIC, UNSET, affine_sample
from proda.utils import IGNORE_INDEX


def per_sample(value: Any) -> List[Any]:
    """A collated per-image parameter as a Python list (one host transfer instead of one per image)."""
    if torch.is_tensor(value):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):  # not collated: one entry per image already
        return [v.tolist() if torch.is_tensor(v) else v for v in value]
    return [value]


def per_sample_tuples(value: Sequence[Any]) -> List[Tuple[Any, ...]]:
    """A collated tuple parameter (a list of per-image tensors, e.g. a crop box) as per-image tuples."""
    return list(zip(*[per_sample(v) for v in value]))


def full_to_weak(feat: torch.Tensor, weak_params: Dict[str, Any]) -> torch.Tensor:
    """Map 1/4-resolution maps of the full target image onto its weak view (resize, crop, flip).

    Replays the recorded RandomSized (h, w), RandomCrop (y1, y2, x1, x2) and flip, at 1/4 scale
    with the reference's int() rounding. Loops over the batch only: each image has its own size.
    """
    n = feat.shape[0]
    sizes = per_sample_tuples(weak_params["RandomSized"]) if "RandomSized" in weak_params else [None] * n
    crops = per_sample_tuples(weak_params["RandomCrop"]) if "RandomCrop" in weak_params else [None] * n
    flips = per_sample(weak_params["RandomHorizontallyFlip"]) if "RandomHorizontallyFlip" in weak_params else [False] * n
    views = []
    for i in range(n):
        view = feat[i:i + 1]
        if sizes[i] is not None:
            h, w = sizes[i]
            view = F.interpolate(view, size=[int(h / 4), int(w / 4)], mode="bilinear", align_corners=True)
        if crops[i] is not None:
            y1, y2, x1, x2 = crops[i]
            y1, th, x1, tw = int(y1 / 4), int((y2 - y1) / 4), int(x1 / 4), int((x2 - x1) / 4)
            view = view[:, :, y1:y1 + th, x1:x1 + tw]
        if flips[i]:
            view = view.flip(3)
        views.append(view)
    return torch.cat(views, 0)


def strong_transform(label: torch.Tensor, params: Dict[str, Any], padding: float, scale: int = 1) -> torch.Tensor:
    """Replay the strong view's recorded RandAugment geometry on N x C x H x W maps (labels or distances).

    Follows the reference: flip, shears, translations (pixels // scale), rotation and the cutout
    box (// scale), in the order of the params dict; pixels that fall outside the image or
    inside the cutout become `padding`. Loops over the batch and the recorded ops only.
    """
    label = label + 1  # 0 now marks "empty" (grid_sample's zero padding and the cutout)
    n = label.shape[0]
    recorded = []
    for name, value in params.items():
        if name == "CutoutAbs":
            if isinstance(value, (list, tuple)):  # 1e4 (a tensor) when no cutout was drawn
                recorded.append((name, per_sample_tuples(value)))
        elif name == "Hflip" or name in GEOMETRIC:
            recorded.append((name, per_sample(value)))
    for i in range(n):
        for name, values in recorded:
            v = values[i]
            if name == "Hflip":
                if v == 1:
                    label[i] = label[i].flip(-1)
            elif name == "CutoutAbs":
                x0, y0, x1, y1 = (int(c // scale) for c in v)
                label[i, :, y0:y1, x0:x1] = 0
            elif v != UNSET:
                v = int(v // scale) if name in ("TranslateX", "TranslateY") else v
                label[i:i + 1] = affine_sample(label[i:i + 1].clone(), v, name)
    label.masked_fill_(label == 0, padding + 1)
    return label - 1


def strong_labels(labels: torch.Tensor, params: Dict[str, Any]) -> torch.Tensor:
    """Labels at 1/4 resolution (N x 1 x h x w) moved onto the strong view as int64; pixels that left it are 250."""
    return strong_transform(labels.float(), params, padding=IGNORE_INDEX, scale=4).to(torch.int64)
