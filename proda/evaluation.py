"""Evaluating a segmentation network: upsampled predictions, the confusion matrix over a loader,
the per-class IoU table (with SYNTHIA's 13-class mIoU) and colour images of label maps.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from dacommon.distributed import is_main
from proda.metrics import runningScore

# SYNTHIA papers report mIoU over 13 classes: the 16-class set without wall, fence and pole.
SYNTHIA_13_OF_16 = [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of `net` upsampled to the input size (bilinear, align_corners=True as the reference)."""
    out = net(images)["out"]
    return F.interpolate(out, size=images.shape[2:], mode="bilinear", align_corners=True)


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable, n_class: int, device: torch.device,
             on_batch: Optional[Callable[[dict, torch.Tensor], None]] = None,
             desc: str = "val") -> runningScore:
    """Confusion matrix of `net` (already in eval mode) over `loader`; on_batch sees each prediction."""
    score = runningScore(n_class)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not is_main()):
        images = batch["img"].to(device)
        pred = predict(net, images).argmax(1)
        score.update(batch["label"].numpy(), pred.cpu().numpy())
        if on_batch is not None:
            on_batch(batch, pred)
    return score


def iou_table(score: runningScore, class_names: List[str]) -> Tuple[str, Dict[str, float]]:
    """Markdown table of per-class IoU (%) with mIoU, and the numbers as a dict."""
    metrics, class_iou = score.get_scores()
    rows = ["| class | IoU (%) |", "| --- | ---: |"]
    per_class = {}
    for idx, name in enumerate(class_names):
        iou = float(class_iou[idx]) * 100
        per_class[name] = iou
        rows.append(f"| {name} | {iou:.2f} |")
    miou = float(metrics["Mean IoU : \t"]) * 100
    rows.append(f"| **mIoU** | **{miou:.2f}** |")
    results = {"mIoU": miou, "per_class_iou": per_class,
               "overall_acc": float(metrics["Overall Acc: \t"]) * 100,
               "mean_acc": float(metrics["Mean Acc : \t"]) * 100}
    if len(class_names) == 16:
        ious = np.array([float(class_iou[i]) for i in SYNTHIA_13_OF_16])
        results["mIoU13"] = float(np.nanmean(ious)) * 100
        rows.append(f"| **mIoU (13 classes)** | **{results['mIoU13']:.2f}** |")
    return "\n".join(rows), results


def colorize(decode_segmap: Callable[[np.ndarray], np.ndarray], labels: torch.Tensor) -> torch.Tensor:
    """N x H x W label maps -> N x 3 x H x W colour images in [0, 1] via the dataset's palette."""
    rgbs = [torch.from_numpy(decode_segmap(lbl.cpu().numpy())).permute(2, 0, 1) for lbl in labels]
    return torch.stack(rgbs).float()
