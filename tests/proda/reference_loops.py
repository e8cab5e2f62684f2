"""Per-class loop versions of ProDA's prototype operations, in the reference's form.

The oracle tests/proda/test_proda_model_protos.py checks the vectorised operations of
proda/models/prototypes.py and proda/data/replay.py with, and the baseline that
benchmarks/proda_proto_bench.py times them against. Kept out of the package on purpose:
nothing in training uses them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from proda.data.randaugment import GEOMETRIC, UNSET, affine_sample


def loop_distance(feat: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:
    """feat_prototype_distance as the reference: one norm over channels per class."""
    n, _, h, w = feat.shape
    out = -torch.ones((n, protos.shape[0], h, w), device=feat.device)
    for k in range(protos.shape[0]):
        out[:, k] = torch.norm(protos[k].reshape(-1, 1, 1).expand(-1, h, w) - feat, 2, dim=1)
    return out


def loop_one_hot(label: torch.Tensor, n_class: int) -> torch.Tensor:
    """process_label by a loop over classes; everything else goes to the extra last channel."""
    out = torch.zeros(label.shape[0], n_class + 1, *label.shape[2:], device=label.device)
    for k in range(n_class):
        out[:, k] = (label[:, 0] == k).float()
    out[:, n_class] = (label[:, 0] >= n_class).float()
    return out


def loop_mean_vectors(feat: torch.Tensor, outputs: torch.Tensor, n_class: int,
                      labels: Optional[torch.Tensor] = None,
                      thresh: Optional[float] = None) -> Tuple[List[torch.Tensor], List[int]]:
    """calculate_mean_vector as the reference: a pooled product per image and class, with .item() checks."""
    probs = F.softmax(outputs, dim=1)
    mask = probs.max(dim=1, keepdim=True)[0].ge(-1 if thresh is None else thresh)
    pred = loop_one_hot(probs.argmax(dim=1, keepdim=True).float(), n_class)
    if labels is not None:
        pred = loop_one_hot(labels, n_class) * pred
    scale = F.adaptive_avg_pool2d(pred * mask, 1)
    vectors, ids = [], []
    for n in range(feat.shape[0]):
        for t in range(n_class):
            if scale[n][t].item() == 0 or (pred[n][t] > 0).sum() < 10:
                continue
            vectors.append(F.adaptive_avg_pool2d(feat[n] * pred[n][t] * mask[n], 1) / scale[n][t])
            ids.append(t)
    return vectors, ids


def loop_update(protos: torch.Tensor, counts: torch.Tensor, vectors: List[torch.Tensor], ids: List[int],
                momentum: float = 1e-4, name: str = "moving_average", start_mean: bool = False) -> None:
    """update_objective_SingleVector as the reference, applied in place one vector at a time."""
    for vector, i in zip(vectors, ids):
        if vector.sum().item() == 0:
            continue
        mode = "mean" if (start_mean and counts[i].item() < 100) else name
        if mode == "moving_average":
            protos[i] = protos[i] * (1 - momentum) + momentum * vector.squeeze()
            counts[i] += 1
        else:
            protos[i] = protos[i] * counts[i] + vector.squeeze()
            counts[i] += 1
            protos[i] = protos[i] / counts[i]
        counts[i] = min(counts[i], 3000)


def loop_full_to_weak(feat: torch.Tensor, weak: Dict) -> torch.Tensor:
    """full2weak as the reference: resize, crop and flip with .item() per image."""
    views = []
    for i in range(feat.shape[0]):
        h, w = weak["RandomSized"][0][i].item(), weak["RandomSized"][1][i].item()
        view = F.interpolate(feat[i:i + 1], size=[int(h / 4), int(w / 4)], mode="bilinear", align_corners=True)
        y1, y2, x1, x2 = (t[i].item() for t in weak["RandomCrop"])
        view = view[:, :, int(y1 / 4):int(y1 / 4) + int((y2 - y1) / 4), int(x1 / 4):int(x1 / 4) + int((x2 - x1) / 4)]
        views.append(view.flip(3) if weak["RandomHorizontallyFlip"][i] else view)
    return torch.cat(views)


def loop_strong_transform(label: torch.Tensor, params: Dict, padding: float, scale: int = 1) -> torch.Tensor:
    """label_strong_T as the reference: .item() per image and recorded op."""
    label = label + 1
    for i in range(label.shape[0]):
        for name, param in params.items():
            if name == "Hflip" and param[i].item() == 1:
                label[i] = label[i].clone().flip(-1)
            elif name in GEOMETRIC and param[i].item() != UNSET:
                v = param[i].item()
                v = int(v // scale) if name.startswith("Translate") else v
                label[i:i + 1] = affine_sample(label[i:i + 1].clone(), v, name)
            elif name == "CutoutAbs" and isinstance(param, list):
                x0, y0, x1, y1 = (int(p[i].item() // scale) for p in param)
                label[i, :, y0:y1, x0:x1] = 0
    label[label == 0] = padding + 1
    return label - 1
