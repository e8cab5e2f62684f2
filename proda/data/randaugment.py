"""RandAugment for segmentation (FixMatch pool) recording the parameters it drew, and
`affine_sample`, which replays a recorded geometric transform on a label or feature map.
"""
from __future__ import annotations

import math
import random
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import torch
import torch.nn.functional as F
from PIL import Image

PARAMETER_MAX = 10
FILL = (127, 127, 127)  # grey fill of rotations, shears, translations and cutout
GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
UNSET = 1e4  # the reference's marker for "op not applied" in the recorded params


def _float_parameter(v: float, max_v: float) -> float:
    """Magnitude v in [0, PARAMETER_MAX] scaled to [0, max_v]."""
    return float(v) * max_v / PARAMETER_MAX


def _int_parameter(v: float, max_v: float) -> int:
    """Integer magnitude v in [0, PARAMETER_MAX] scaled to [0, max_v]."""
    return int(v * max_v / PARAMETER_MAX)


def _random_sign(v: Any) -> Any:
    """Negate v with probability 1/2 (python `random`, as the reference)."""
    return -v if random.random() < 0.5 else v


def _affine(img: Image.Image, coeffs: Tuple[float, ...]) -> Image.Image:
    """PIL affine warp with bilinear sampling and grey fill, as every geometric op uses."""
    return img.transform(img.size, Image.Transform.AFFINE, coeffs,
                         resample=Image.Resampling.BILINEAR, fillcolor=FILL)


def AutoContrast(img: Image.Image, **kwarg) -> Tuple[Image.Image, None]:
    """Stretch each channel to the full range."""
    return PIL.ImageOps.autocontrast(img), None


def Brightness(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, float]:
    """Brightness enhancement by factor v."""
    v = _float_parameter(v, max_v) + bias
    return PIL.ImageEnhance.Brightness(img).enhance(v), v


def Color(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, float]:
    """Saturation enhancement by factor v."""
    v = _float_parameter(v, max_v) + bias
    return PIL.ImageEnhance.Color(img).enhance(v), v


def Contrast(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, float]:
    """Contrast enhancement by factor v."""
    v = _float_parameter(v, max_v) + bias
    return PIL.ImageEnhance.Contrast(img).enhance(v), v


def Cutout(img: Image.Image, v: float, max_v: float, bias: float = 0):
    """Grey square of side v x min(W, H) at a random place (returns (img, box) like every op)."""
    if v == 0:
        return img, None
    v = _float_parameter(v, max_v) + bias
    return CutoutAbs(img, int(v * min(img.size)))


def CutoutAbs(img: Image.Image, v: int, **kwarg) -> Tuple[Image.Image, Tuple[int, int, int, int]]:
    """Grey square of side v centred at a random point (NumPy draws); returns the box (x0, y0, x1, y1)."""
    w, h = img.size
    x0 = np.random.uniform(0, w)
    y0 = np.random.uniform(0, h)
    x0 = int(max(0, x0 - v / 2.0))
    y0 = int(max(0, y0 - v / 2.0))
    x1 = int(min(w, x0 + v))
    y1 = int(min(h, y0 + v))
    xy = (x0, y0, x1, y1)
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle(xy, FILL)
    return img, xy


def Equalize(img: Image.Image, **kwarg) -> Tuple[Image.Image, None]:
    """Histogram equalisation."""
    return PIL.ImageOps.equalize(img), None


def Identity(img: Image.Image, **kwarg) -> Tuple[Image.Image, None]:
    """No change."""
    return img, None


def Invert(img: Image.Image, **kwarg) -> Tuple[Image.Image, None]:
    """Negative image."""
    return PIL.ImageOps.invert(img), None


def Posterize(img: Image.Image, v: float, max_v: float, bias: int = 0) -> Tuple[Image.Image, int]:
    """Keep v bits per channel."""
    v = _int_parameter(v, max_v) + bias
    return PIL.ImageOps.posterize(img, v), v


def Rotate(img: Image.Image, v: float, max_v: float, bias: int = 0) -> Tuple[Image.Image, int]:
    """Rotate by +-v degrees about the centre (counter-clockwise for positive v)."""
    v = _random_sign(_int_parameter(v, max_v) + bias)
    return img.rotate(v, resample=Image.Resampling.BILINEAR, fillcolor=FILL), v


def Sharpness(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, float]:
    """Sharpness enhancement by factor v."""
    v = _float_parameter(v, max_v) + bias
    return PIL.ImageEnhance.Sharpness(img).enhance(v), v


def ShearX(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, float]:
    """Horizontal shear by +-v about the top-left corner."""
    v = _random_sign(_float_parameter(v, max_v) + bias)
    return _affine(img, (1, v, 0, 0, 1, 0)), v


def ShearY(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, float]:
    """Vertical shear by +-v about the top-left corner."""
    v = _random_sign(_float_parameter(v, max_v) + bias)
    return _affine(img, (1, 0, 0, v, 1, 0)), v


def Solarize(img: Image.Image, v: float, max_v: float, bias: int = 0) -> Tuple[Image.Image, int]:
    """Invert pixels above the threshold 256 - v."""
    v = _int_parameter(v, max_v) + bias
    return PIL.ImageOps.solarize(img, 256 - v), 256 - v


def SolarizeAdd(img: Image.Image, v: float, max_v: float, bias: int = 0,
                threshold: int = 128) -> Tuple[Image.Image, int]:
    """Add +-v to every pixel, then solarize at `threshold`."""
    v = _random_sign(_int_parameter(v, max_v) + bias)
    img_np = np.clip(np.array(img).astype(np.int64) + v, 0, 255).astype(np.uint8)
    return PIL.ImageOps.solarize(Image.fromarray(img_np), threshold), threshold


def TranslateX(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, int]:
    """Shift by +-v x width pixels (recorded in pixels)."""
    v = int(_random_sign(_float_parameter(v, max_v) + bias) * img.size[0])
    return _affine(img, (1, 0, v, 0, 1, 0)), v


def TranslateY(img: Image.Image, v: float, max_v: float, bias: float = 0) -> Tuple[Image.Image, int]:
    """Shift by +-v x height pixels (recorded in pixels)."""
    v = int(_random_sign(_float_parameter(v, max_v) + bias) * img.size[1])
    return _affine(img, (1, 0, 0, 0, 1, v)), v


def fixmatch_augment_pool() -> List[Tuple[Any, Optional[float], Optional[float]]]:
    """The FixMatch RandAugment pool: (op, max_v, bias)."""
    return [(AutoContrast, None, None),
            (Brightness, 0.9, 0.05),
            (Color, 0.9, 0.05),
            (Contrast, 0.9, 0.05),
            (Equalize, None, None),
            (Identity, None, None),
            (Posterize, 4, 4),
            (Rotate, 30, 0),
            (Sharpness, 0.9, 0.05),
            (ShearX, 0.3, 0),
            (ShearY, 0.3, 0),
            (Solarize, 256, 0),
            (TranslateX, 0.3, 0),
            (TranslateY, 0.3, 0)]


class RandAugmentMC:
    """Strong view: random flip, n random ops of magnitude < m, then a cutout; returns what it did.

    The returned dict always has the keys 'Hflip' (bool), the geometric ops (their value, or
    1e4 when not applied) and 'CutoutAbs' (the box), so a batch collates with the default
    collate and `label_strong_T` can replay the geometry on labels and features.
    """

    def __init__(self, n: int, m: int) -> None:
        assert n >= 1
        assert 1 <= m <= 10
        self.n = n
        self.m = m
        self.augment_pool = fixmatch_augment_pool()

    def __call__(self, img: Image.Image, type: str = "crc") -> Tuple[Image.Image, Dict[str, Any]]:
        """type: 'cr' (ops), 'cc' (cutout) or 'crc' (both, the default)."""
        aug_type: Dict[str, Any] = {"Hflip": False, **{name: UNSET for name in GEOMETRIC}, "CutoutAbs": UNSET}
        if random.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            aug_type["Hflip"] = True
        if type in ("cr", "crc"):
            for op, max_v, bias in random.choices(self.augment_pool, k=self.n):
                v = np.random.randint(1, self.m)  # magnitude in [1, m), NumPy as the reference
                if random.random() < 0.5:
                    img, value = op(img, v=v, max_v=max_v, bias=bias)
                    if op.__name__ in GEOMETRIC:
                        aug_type[op.__name__] = value
        if type in ("cc", "crc"):
            img, aug_type["CutoutAbs"] = CutoutAbs(img, min(img.size[0], img.size[1]) // 3)
        return img, aug_type


def affine_sample(tensor: torch.Tensor, v: float, type: str) -> torch.Tensor:
    """Apply the geometric op `type` with parameter `v` to an N x C x H x W map (nearest).

    This is how ProDA maps weak-view labels and prototype distances onto the strong view.
    Numerics follow the reference: shear coefficients are rescaled by the aspect ratio, both
    translations are normalised by the map *height* (an oddity of the reference that shaped
    its numbers, kept on purpose), and the sampling grid uses align_corners=False.
    """
    if type == "Rotate":
        rad = v / 180 * math.pi
        theta = [[math.cos(rad), -math.sin(rad), 0.0], [math.sin(rad), math.cos(rad), 0.0]]
    elif type == "ShearX":
        theta = [[1.0, v, 0.0], [0.0, 1.0, 0.0]]
    elif type == "ShearY":
        theta = [[1.0, 0.0, 0.0], [v, 1.0, 0.0]]
    elif type == "TranslateX":
        theta = [[1.0, 0.0, v], [0.0, 1.0, 0.0]]
    elif type == "TranslateY":
        theta = [[1.0, 0.0, 0.0], [0.0, 1.0, v]]
    else:
        raise ValueError(f"affine_sample: unknown transform {type!r}")

    H, W = tensor.shape[2], tensor.shape[3]
    theta[0][1] = theta[0][1] * H / W
    theta[1][0] = theta[1][0] * W / H
    if type != "Rotate":
        # shears and translations pivot on the top-left corner, as PIL's affine transform does
        theta[0][2] = theta[0][2] * 2 / H + theta[0][0] + theta[0][1] - 1
        theta[1][2] = theta[1][2] * 2 / H + theta[1][0] + theta[1][1] - 1

    theta_t = torch.tensor(theta, dtype=torch.float32).unsqueeze(0).expand(tensor.shape[0], -1, -1)
    grid = F.affine_grid(theta_t, list(tensor.size()), align_corners=False).to(tensor.device, tensor.dtype)
    return F.grid_sample(tensor, grid, mode="nearest", align_corners=False)
