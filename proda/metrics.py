"""Segmentation scores: a running confusion matrix with overall / mean accuracy, per-class IoU
and mIoU (the reference's `runningScore`, keys included), and `averageMeter`.

Pixels whose true label is outside [0, n_classes) (the ignore index 250) are not counted.
A class that appears in neither the labels nor the predictions has IoU NaN and is left out
of the means, without warnings.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np


def _as_numpy(x: Any) -> np.ndarray:
    """Arrays pass through; torch tensors are moved to the CPU first."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class runningScore:
    """Confusion matrix accumulated over batches (rows: truth, columns: prediction)."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.confusion_matrix = np.zeros((n_classes, n_classes))

    def _fast_hist(self, label_true: np.ndarray, label_pred: np.ndarray, n_class: int) -> np.ndarray:
        """n_class x n_class histogram of (truth, prediction) pairs with a valid truth."""
        mask = (label_true >= 0) & (label_true < n_class)
        pred = label_pred[mask].astype(np.int64)
        if pred.size and (pred.min() < 0 or pred.max() >= n_class):
            raise ValueError(f"predictions must lie in [0, {n_class}), got [{pred.min()}, {pred.max()}]")
        return np.bincount(n_class * label_true[mask].astype(np.int64) + pred,
                           minlength=n_class ** 2).reshape(n_class, n_class)

    def update(self, label_trues: Any, label_preds: Any) -> None:
        """Add a batch of label maps and predictions (arrays or tensors of the same shape)."""
        label_trues, label_preds = _as_numpy(label_trues), _as_numpy(label_preds)
        if label_trues.shape != label_preds.shape:
            raise ValueError(f"labels {label_trues.shape} and predictions {label_preds.shape} differ in shape")
        self.confusion_matrix += self._fast_hist(label_trues.ravel(), label_preds.ravel(), self.n_classes)

    def get_scores(self) -> Tuple[Dict[str, float], Dict[int, float]]:
        """({overall acc, mean acc, freq-weighted acc, mean IoU}, {class: IoU}), reference keys."""
        hist = self.confusion_matrix
        tp = np.diag(hist)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = tp.sum() / hist.sum()
            acc_cls = tp / hist.sum(axis=1)
            iu = tp / (hist.sum(axis=1) + hist.sum(axis=0) - tp)
            freq = hist.sum(axis=1) / hist.sum()
        fwavacc = (freq[freq > 0] * iu[freq > 0]).sum()
        return (
            {
                "Overall Acc: \t": acc,
                "Mean Acc : \t": _nanmean(acc_cls),
                "FreqW Acc : \t": fwavacc,
                "Mean IoU : \t": _nanmean(iu),
            },
            dict(zip(range(self.n_classes), iu)),
        )

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.confusion_matrix = np.zeros((self.n_classes, self.n_classes))


def _nanmean(values: np.ndarray) -> float:
    """Mean over the non-NaN entries; NaN (without a warning) when there are none."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


class averageMeter:
    """Running average of a scalar (e.g. time per iteration)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start from zero."""
        self.val = 0
        self.avg = 0
        self.sum = 0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        """Add `val` observed `n` times."""
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / self.count
