"""runningScore and averageMeter: confusion matrix and IoU equal a plain computation, the
ignore index is skipped, absent classes are NaN and left out of the means, quietly."""
import warnings

import numpy as np
import pytest
import torch

from proda.metrics import averageMeter, runningScore


def plain_confusion(labels, preds, n):
    """Confusion matrix by counting pixel by pixel (truth rows, prediction columns)."""
    cm = np.zeros((n, n))
    for t, p in zip(labels.ravel(), preds.ravel()):
        if 0 <= t < n:
            cm[t, p] += 1
    return cm


def test_confusion_and_scores_equal_plain_computation():
    rng = np.random.RandomState(0)
    n = 5
    labels = rng.randint(0, n, (3, 6, 7))
    labels[rng.rand(*labels.shape) < 0.2] = 250
    preds = rng.randint(0, n, (3, 6, 7))
    score = runningScore(n)
    score.update(labels[:2], preds[:2])
    score.update(torch.from_numpy(labels[2:]), torch.from_numpy(preds[2:]))  # tensors work too
    cm = plain_confusion(labels, preds, n)
    assert np.array_equal(score.confusion_matrix, cm)

    metrics, class_iou = score.get_scores()
    assert set(metrics) == {"Overall Acc: \t", "Mean Acc : \t", "FreqW Acc : \t", "Mean IoU : \t"}
    iou = [cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c]) for c in range(n)]
    assert np.allclose([class_iou[c] for c in range(n)], iou)
    assert metrics["Mean IoU : \t"] == pytest.approx(np.mean(iou))
    assert metrics["Overall Acc: \t"] == pytest.approx(np.trace(cm) / cm.sum())
    assert metrics["Mean Acc : \t"] == pytest.approx(np.mean([cm[c, c] / cm[c].sum() for c in range(n)]))
    freq = cm.sum(1) / cm.sum()
    assert metrics["FreqW Acc : \t"] == pytest.approx(float((freq * np.array(iou)).sum()))


def test_absent_class_is_nan_and_skipped_without_warnings():
    labels = np.array([[0, 0, 1, 250]])
    preds = np.array([[0, 1, 1, 3]])  # class 2 appears nowhere; class 3 only where ignored
    score = runningScore(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score.update(labels, preds)
        metrics, class_iou = score.get_scores()
    assert np.isnan(class_iou[2]) and np.isnan(class_iou[3])
    assert class_iou[0] == pytest.approx(0.5) and class_iou[1] == pytest.approx(0.5)
    assert metrics["Mean IoU : \t"] == pytest.approx(0.5)
    assert metrics["Overall Acc: \t"] == pytest.approx(2 / 3)


def test_empty_and_reset_and_bad_predictions():
    score = runningScore(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics, _ = score.get_scores()
    assert np.isnan(metrics["Mean IoU : \t"])
    score.update(np.array([1, 2]), np.array([1, 2]))
    assert score.get_scores()[0]["Mean IoU : \t"] == pytest.approx(1.0)
    score.reset()
    assert score.confusion_matrix.sum() == 0
    with pytest.raises(ValueError, match="predictions must lie in"):
        score.update(np.array([0, 1]), np.array([0, 3]))


def test_average_meter():
    meter = averageMeter()
    meter.update(2.0)
    meter.update(5.0, n=3)
    assert meter.val == 5.0 and meter.count == 4 and meter.avg == pytest.approx(17 / 4)
    meter.reset()
    assert meter.count == 0 and meter.avg == 0
