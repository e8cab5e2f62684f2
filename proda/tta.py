"""Test-time adaptation of a trained ProDA network with tent or norm (Wang et al., ICLR 2021).

Source-free: the segmentation network adapts on the target images it predicts, one batch at a
time, with no labels and no source data. `norm` predicts with each batch's own batch-norm
statistics; `tent` also takes `steps` gradient steps on the mean pixel entropy of its
predictions, updating only the batch norms' scale and shift (the tent package's own
configure_model / collect_params / Tent, unchanged). Online mode (the default) carries the
adapted state over the whole target stream; episodic mode restores the network before every
batch (with --bs 1: every image), so no image sees another.

Choices this repository makes for DeepLabv2 (the official tent code is classification only):
- the head's Dropout2d stays in eval mode, because tent's configure_model puts the whole
  network in train mode and random dropout masks would make every prediction noisy;
- `bn_stats="batch"` (tent's definition) normalises with the test batch's statistics;
  `bn_stats="source"` keeps the source running statistics (as a --freeze_bn model was
  trained) and adapts only the affine scale and shift;
- the GroupNorm layers of the ASPP head are left alone unless `norm_layers` names them.
"""
from __future__ import annotations

import math
import time
from typing import Dict, List, Optional, Sequence, Type

import numpy as np
import torch
import torch.nn as nn

import tent as tent_method
from dacommon.files import atomic_write
from proda.metrics import runningScore
from tent.norm import Norm
from tent.tent import DEFAULT_NORM_LAYERS

TTA_METHODS = ("none", "norm", "tent")
BN_STATS = ("batch", "source")


class Logits(nn.Module):
    """The class scores of a network that returns {'feat', 'out'}: tent needs a tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x C x h x w logits."""
        return self.net(x)["out"]


class Adapted(nn.Module):
    """A test-time-adapted network with the ProDA output convention ({'out': logits})."""

    def __init__(self, adapter: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Adapt on the batch (per the method) and return its logits as ProDA's networks do."""
        return {"out": self.adapter(x)}


def dropout_eval(model: nn.Module) -> nn.Module:
    """Put every dropout layer in eval mode: adaptation must not randomise predictions."""
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    return model


def configure_affine_only(model: nn.Module, norm_layers: Sequence[Type[nn.Module]]) -> nn.Module:
    """Eval mode (source statistics) with only the normalisation layers' affine trainable."""
    model.eval()
    model.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, tuple(norm_layers)):
            m.requires_grad_(True)
    return model


def build_tent(net: nn.Module, *, lr: float, steps: int, episodic: bool, bn_stats: str = "batch",
               optim: str = "adam", momentum: float = 0.9,
               norm_layers: Sequence[Type[nn.Module]] = DEFAULT_NORM_LAYERS) -> tent_method.Tent:
    """Tent on the network's logits: Adam (the reference) or SGD on the norms' scale and shift."""
    model = Logits(net)
    if bn_stats == "batch":
        model = tent_method.configure_model(model, norm_layers=norm_layers)
    else:
        model = configure_affine_only(model, norm_layers)
    dropout_eval(model)
    params, _ = tent_method.collect_params(model, norm_layers=norm_layers)
    if not params:
        raise ValueError(f"the network has no {[c.__name__ for c in norm_layers]} layers to adapt")
    if optim == "adam":
        optimizer = torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))
    else:
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    return tent_method.Tent(model, optimizer, steps=steps, episodic=episodic)


def build_tta(net: nn.Module, method: str, *, lr: float = 1e-3, steps: int = 1,
              episodic: bool = False, bn_stats: str = "batch", optim: str = "adam",
              norm_layers: Optional[Sequence[Type[nn.Module]]] = None) -> nn.Module:
    """`net` wrapped for test-time adaptation ('none': eval mode as trained)."""
    if method not in TTA_METHODS:
        raise ValueError(f"unknown test-time adaptation {method!r}; choose from {TTA_METHODS}")
    if bn_stats not in BN_STATS:
        raise ValueError(f"unknown batch-norm statistics {bn_stats!r}; choose from {BN_STATS}")
    if not (math.isfinite(lr) and lr >= 0) or steps < 1:  # inf adapts to NaN without an error
        raise ValueError(f"tent needs a finite learning rate >= 0 and steps >= 1, got lr={lr}, steps={steps}")
    layers = tuple(norm_layers or DEFAULT_NORM_LAYERS)
    if method == "none":
        return net.eval()
    if method == "norm":
        # batch statistics of each test batch; with episodic the running estimates reset too
        return Adapted(Norm(Logits(net.eval()), norm_layers=layers))
    return Adapted(build_tent(net, lr=lr, steps=steps, episodic=episodic, bn_stats=bn_stats,
                              optim=optim, norm_layers=layers))


def image_miou(labels: np.ndarray, preds: np.ndarray, n_class: int) -> List[float]:
    """mIoU (%) of each image of a batch, over the classes in its labels or its prediction."""
    values = []
    for label, pred in zip(labels, preds):
        score = runningScore(n_class)
        score.update(label, pred)
        values.append(float(score.get_scores()[0]["Mean IoU : \t"]) * 100)
    return values


class StreamRecord:
    """The per-image mIoU over the target stream (collapse shows as a falling curve) and the time."""

    def __init__(self, n_class: int) -> None:
        self.n_class = n_class
        self.miou: List[float] = []
        self.start = time.perf_counter()

    def __call__(self, batch: dict, pred: torch.Tensor) -> None:
        """evaluation.evaluate's per-batch callback."""
        self.miou.extend(image_miou(batch["label"].numpy(), pred.cpu().numpy(), self.n_class))

    def seconds_per_image(self) -> float:
        """Wall-clock seconds per image since construction (adaptation and prediction)."""
        return (time.perf_counter() - self.start) / max(1, len(self.miou))


def plot_stream(miou: Sequence[float], title: str, path: str) -> None:
    """PNG of each image's mIoU in stream order, with its running mean."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    values = np.asarray(miou, dtype=float)
    steps = np.arange(1, len(values) + 1)
    seen = np.cumsum(~np.isnan(values))
    running = np.nancumsum(values) / np.maximum(seen, 1)   # images without labels do not count
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values, ".", alpha=0.5, label="image mIoU")
    ax.plot(steps, running, "-", label="running mean")
    ax.set_xlabel("image in stream order")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
