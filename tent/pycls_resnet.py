"""pycls's ResNet-50: the ImageNet source model of the tent paper, with pycls's parameter names.

The tent authors adapted pycls's model-zoo ResNet-50 (DequanWang/tent#4), not torchvision's. Its
checkpoint (`R-50-1x64d_dds_8gpu.pyth`) is a dict `{"epoch", "model_state", "optimizer_state",
"cfg"}` whose `model_state` keys are pycls's (`stem.conv.weight`, `s1.b1.f.a_bn.weight`, ...,
`head.fc.bias`), so the network below uses the same module names and loads it with `strict=True`.
pycls feeds the network BGR images, scaled by 1/255 and normalised with the ImageNet mean and
standard deviation in BGR order; `PyclsResNet` takes the project's RGB images in [0, 1] and does
that conversion itself (its mean and std are non-persistent buffers, so the state dict stays pycls's).
"""
from pathlib import Path
from typing import Any, Dict, Sequence, Union

import torch
from torch import nn

from tent.errors import CorruptFileError, MissingResourceError
from tent.safe_load import load_checkpoint

STAGE_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}  # pycls's ImageNet ResNets
MEAN_BGR = (0.406, 0.456, 0.485)  # pycls's ImageNet mean and standard deviation, BGR order
STD_BGR = (0.225, 0.224, 0.229)
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # pycls's cfg.BN.EPS and cfg.BN.MOM
R50_FILE = "R-50-1x64d_dds_8gpu.pyth"
R50_URL = "https://dl.fbaipublicfiles.com/pycls/dds_baselines/161235311/" + R50_FILE  # top-1 error 23.2
ARCH = "pycls_R50"  # its MODEL.ARCH; the weights file lives at CKPT_DIR/imagenet/pycls/R50_FILE


def conv(w_in: int, w_out: int, k: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free k x k convolution with pycls's 'same' padding."""
    return nn.Conv2d(w_in, w_out, k, stride=stride, padding=(k - 1) // 2, bias=False)


def norm(w: int) -> nn.BatchNorm2d:
    """Batch norm with pycls's epsilon and momentum."""
    return nn.BatchNorm2d(w, eps=BN_EPS, momentum=BN_MOMENTUM)


class BottleneckTransform(nn.Sequential):
    """1x1, BN, ReLU, 3x3 (carries the stride, pycls's STRIDE_1X1 False), BN, ReLU, 1x1, BN."""

    def __init__(self, w_in: int, w_out: int, stride: int, w_b: int):
        super().__init__()
        self.a, self.a_bn, self.a_af = conv(w_in, w_b, 1), norm(w_b), nn.ReLU(inplace=True)
        self.b, self.b_bn, self.b_af = conv(w_b, w_b, 3, stride), norm(w_b), nn.ReLU(inplace=True)
        self.c, self.c_bn = conv(w_b, w_out, 1), norm(w_out)


class ResBlock(nn.Module):
    """x + f(x), with a 1x1 projection (`proj`, `bn`) where the width or resolution changes."""

    def __init__(self, w_in: int, w_out: int, stride: int, w_b: int):
        super().__init__()
        self.proj, self.bn = None, None
        if w_in != w_out or stride != 1:
            self.proj, self.bn = conv(w_in, w_out, 1, stride), norm(w_out)
        self.f = BottleneckTransform(w_in, w_out, stride, w_b)
        self.af = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual sum, then ReLU."""
        shortcut = self.bn(self.proj(x)) if self.proj is not None else x
        return self.af(shortcut + self.f(x))


class ResStage(nn.Sequential):
    """d residual blocks named b1..bd; the first one changes width and resolution."""

    def __init__(self, w_in: int, w_out: int, stride: int, d: int, w_b: int):
        super().__init__()
        for i in range(d):
            self.add_module(f"b{i + 1}", ResBlock(w_in if i == 0 else w_out, w_out, stride if i == 0 else 1, w_b))


class ResStemIN(nn.Sequential):
    """7x7/2 convolution, BN, ReLU, 3x3/2 max pool."""

    def __init__(self, w_in: int, w_out: int):
        super().__init__()
        self.conv, self.bn, self.af = conv(w_in, w_out, 7, 2), norm(w_out), nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)


class ResHead(nn.Module):
    """Global average pooling, then the linear classifier."""

    def __init__(self, w_in: int, num_classes: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w_in, num_classes, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the last stage's feature map."""
        return self.fc(self.avg_pool(x).flatten(1))


class PyclsResNet(nn.Module):
    """pycls's ImageNet ResNet (1x64d) taking RGB images in [0, 1]."""

    def __init__(self, depth: int = 50, num_classes: int = 1000):
        super().__init__()
        d1, d2, d3, d4 = STAGE_DEPTHS[depth]
        self.register_buffer("mean", torch.tensor(MEAN_BGR).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD_BGR).view(1, 3, 1, 1), persistent=False)
        self.stem = ResStemIN(3, 64)
        self.s1 = ResStage(64, 256, 1, d1, 64)
        self.s2 = ResStage(256, 512, 2, d2, 128)
        self.s3 = ResStage(512, 1024, 2, d3, 256)
        self.s4 = ResStage(1024, 2048, 2, d4, 512)
        self.head = ResHead(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """pycls's input convention (BGR, normalised in BGR order), then the network."""
        x = (x.flip(1) - self.mean) / self.std
        for stage in (self.stem, self.s1, self.s2, self.s3, self.s4, self.head):
            x = stage(x)
        return x


def model_state(checkpoint: Any, path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """The network weights of a pycls checkpoint (its `model_state`), or a bare state dict."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_state"), dict):
        return checkpoint["model_state"]
    if isinstance(checkpoint, dict) and checkpoint and all(torch.is_tensor(v) for v in checkpoint.values()):
        return checkpoint
    raise CorruptFileError(f"{path} is not a pycls checkpoint (no 'model_state' dict of tensors)")


def key_differences(model: nn.Module, state: Dict[str, torch.Tensor]) -> Sequence[str]:
    """Missing and unexpected keys, and shape mismatches, of a state dict for a model (a few of each)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = [(f"{len(v)} {what} (e.g. {', '.join(v[:3])})") for what, v in
             (("missing", missing), ("unexpected", unexpected), ("with another shape", shapes)) if v]
    return parts


def checkpoint_path(ckpt_dir: Union[str, Path]) -> Path:
    """Where MODEL.ARCH pycls_R50 reads pycls's ResNet-50 weights: CKPT_DIR/imagenet/pycls/<the zoo's file name>."""
    return Path(ckpt_dir) / "imagenet" / "pycls" / R50_FILE


def load_pycls_resnet(path: Union[str, Path], depth: int = 50, num_classes: int = 1000,
                      trust: bool = False) -> PyclsResNet:
    """pycls's ResNet with the weights of a pycls model-zoo checkpoint, loaded weights-only and strictly."""
    path = Path(path)
    if not path.is_file():
        raise MissingResourceError(f"pycls checkpoint {path} not found: download {R50_URL} (pycls's model zoo, "
                                   f"ResNet-50, top-1 error 23.2) to that path")
    model = PyclsResNet(depth, num_classes)
    state = model_state(load_checkpoint(path, trust=trust), path)
    problems = key_differences(model, state)
    if problems:
        raise CorruptFileError(f"{path} does not hold pycls's ResNet-{depth} weights: {'; '.join(problems)}")
    model.load_state_dict(state, strict=True)
    return model
