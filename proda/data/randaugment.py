"""RandAugment for segmentation (FixMatch pool) recording the parameters it drew, and
`affine_sample`, which replays a recorded geometric transform on a label or feature map.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
