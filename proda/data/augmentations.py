"""Joint weak augmentations of an image, its label maps and its soft pseudo labels.

Each transform records the parameters it drew in a `params` dict, exactly as the reference:
'RandomSized': (h, w), 'RandomCrop': (y1, y1 + th, x1, x1 + tw), 'RandomHorizontallyFlip': bool.
The model replays them on features of the full image (`full2weak`) to find the weak view.
Randomness comes from Python's `random`, in the reference's order.
"""
from __future__ import annotations

import numbers
import random
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Params = Dict[str, Any]
Maps = Tuple[Image.Image, Image.Image, Optional[Image.Image], Optional[torch.Tensor], Params]


def resize_soft(lpsoft: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Resize C x H x W soft pseudo labels bilinearly (align_corners=True, as the reference)."""
    return F.interpolate(lpsoft.unsqueeze(0), size=[h, w], mode="bilinear", align_corners=True)[0]


def _resize_all(img, mask, mask1, lpsoft, w: int, h: int):
    """Resize every map to (w, h): bilinear image and soft labels, nearest label maps."""
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    mask = mask.resize((w, h), Image.Resampling.NEAREST)
    mask1 = None if mask1 is None else mask1.resize((w, h), Image.Resampling.NEAREST)
    lpsoft = None if lpsoft is None else resize_soft(lpsoft, h, w)
    return img, mask, mask1, lpsoft


def _check_sizes(img: Image.Image, mask: Image.Image, mask1: Optional[Image.Image]) -> None:
    """Image and label maps must have the same size before a joint transform."""
    sizes = [img.size, mask.size] + ([] if mask1 is None else [mask1.size])
    if len(set(sizes)) != 1:
        raise ValueError(f"image and label sizes differ: {sizes}")


class Compose:
    """Apply the transforms in order, converting arrays to PIL and back; returns the params."""

    def __init__(self, augmentations: Sequence[Any]) -> None:
        self.augmentations = list(augmentations)

    def __call__(self, img: Any, mask: Any, mask1: Any = None, lpsoft: Any = None):
        """(img, mask, mask1, lpsoft) -> (img, mask, mask1, lpsoft, params)."""
        to_numpy = isinstance(img, np.ndarray)
        if to_numpy:
            img, mask = Image.fromarray(img), Image.fromarray(mask)
            mask1 = None if mask1 is None else Image.fromarray(mask1)
        if lpsoft is not None:
            # soft labels are saved at the network's output size: bring them to the image first
            lpsoft = torch.as_tensor(lpsoft)
            lpsoft = resize_soft(lpsoft, img.size[1], img.size[0])
        _check_sizes(img, mask, mask1)

        params: Params = {}
        for aug in self.augmentations:
            img, mask, mask1, lpsoft, params = aug(img, mask, mask1, lpsoft, params)

        if to_numpy:
            img, mask = np.array(img), np.array(mask, dtype=np.uint8)
            mask1 = None if mask1 is None else np.array(mask1, dtype=np.uint8)
        return img, mask, mask1, lpsoft, params


class RandomSized:
    """Resize to a random width in [0.5, 1.5) x size, keeping the aspect ratio."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img, mask, mask1=None, lpsoft=None, params: Optional[Params] = None) -> Maps:
        """Draw the width, record 'RandomSized' = (h, w) and resize every map."""
        params = {} if params is None else params
        _check_sizes(img, mask, mask1)
        prop = 1.0 * img.size[0] / img.size[1]
        w = int(random.uniform(0.5, 1.5) * self.size)
        h = int(w / prop)
        params["RandomSized"] = (h, w)
        img, mask, mask1, lpsoft = _resize_all(img, mask, mask1, lpsoft, w, h)
        return img, mask, mask1, lpsoft, params


class RandomCrop:
    """Random crop to size=(tw, th); a smaller image is resized to the crop size instead."""

    def __init__(self, size: Any) -> None:
        self.size = (int(size), int(size)) if isinstance(size, numbers.Number) else tuple(size)

    def __call__(self, img, mask, mask1=None, lpsoft=None, params: Optional[Params] = None) -> Maps:
        """Crop every map alike and record 'RandomCrop' = (y1, y1 + th, x1, x1 + tw)."""
        params = {} if params is None else params
        _check_sizes(img, mask, mask1)
        w, h = img.size
        tw, th = self.size
        if w < tw or h < th:
            # recorded so that full2weak resizes the full map straight to the crop size
            img, mask, mask1, lpsoft = _resize_all(img, mask, mask1, lpsoft, tw, th)
            params["RandomSized"] = (th, tw)
            params["RandomCrop"] = (0, th, 0, tw)
            return img, mask, mask1, lpsoft, params
        if w == tw and h == th:
            x1 = y1 = 0  # the reference returns early here without drawing
        else:
            x1 = random.randint(0, w - tw)
            y1 = random.randint(0, h - th)
        params["RandomCrop"] = (y1, y1 + th, x1, x1 + tw)
        box = (x1, y1, x1 + tw, y1 + th)
        img, mask = img.crop(box), mask.crop(box)
        mask1 = None if mask1 is None else mask1.crop(box)
        lpsoft = None if lpsoft is None else lpsoft[:, y1:y1 + th, x1:x1 + tw]
        return img, mask, mask1, lpsoft, params


class RandomHorizontallyFlip:
    """Flip every map left-right with probability p."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img, mask, mask1=None, lpsoft=None, params: Optional[Params] = None) -> Maps:
        """Draw the flip and record 'RandomHorizontallyFlip' = True / False."""
        params = {} if params is None else params
        flip = random.random() < self.p
        params["RandomHorizontallyFlip"] = flip
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask1 = None if mask1 is None else mask1.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            lpsoft = None if lpsoft is None else lpsoft.flip(2)  # C x H x W
        return img, mask, mask1, lpsoft, params
