"""ResNet-26 of Sun et al.'s test-time training (TTT): the tent paper's CIFAR and digit source model (R-26).

It is TTT's `ResNetCifar` (yueatsprograms/ttt_cifar_release, models/ResNet.py) with that code's
defaults `--depth 26 --width 1 --group_norm 0`, i.e. batch norm as in the tent paper: a 3x3 stem of
16 channels; three stages of four pre-activation basic blocks (BN, ReLU, 3x3 conv, BN, ReLU, 3x3
conv) of 16, 32 and 64 channels; parameter-free shortcuts (2x2 average pooling, then zero channels)
where a stage halves the resolution; a final BN and ReLU, global average pooling and a linear
classifier. Module names follow TTT's, so the `net` state dict of a TTT checkpoint loads as it is.

TTT normalises its inputs with mean 0.5 and standard deviation 0.5 per channel outside the network;
`ResNet26` takes the project's RGB images in [0, 1] (as robustbench's models do) and normalises them
itself, with non-persistent constants, so its state dict holds TTT's tensors only.

The source checkpoint (written by `python -m tent.train_source`) is a dict whose "model_state" is
the state dict, loaded weights-only from CKPT_DIR/<source>/.../ResNet26.pt (`checkpoint_path`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Union

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, CorruptFileError, MissingResourceError
from .pycls_resnet import key_differences
from .safe_load import load_checkpoint

ARCH = "ResNet26"
DEPTH, WIDTH = 26, 1  # TTT's --depth and --width
BLOCKS_PER_STAGE = (DEPTH - 2) // 6  # depth = 6 N + 2: a stem, 3 stages of N two-conv blocks, a classifier
MEAN = STD = 0.5  # TTT's transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# the source domain of each CORRUPTION.DATASET a ResNet26 runs on, and its number of classes
SOURCE_OF: Dict[str, str] = {"cifar10": "cifar10", "cifar100": "cifar100",
                             "svhn2mnist": "svhn", "svhn2mnistm": "svhn", "svhn2usps": "svhn",
                             "mnist2svhn": "mnist"}
NUM_CLASSES: Dict[str, int] = {"cifar10": 10, "cifar100": 100, "svhn": 10, "mnist": 10}
DIGIT_SOURCES = ("svhn", "mnist")  # kept directly under CKPT_DIR/<source>/ (no robustbench corruptions/ folder)


def conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free 3x3 convolution with padding 1 (batch norm supplies the shift)."""
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """x + conv(relu(bn(conv(relu(bn(x)))))): TTT's BasicBlock, normalisation before each convolution."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.bn1, self.relu1, self.conv1 = nn.BatchNorm2d(c_in), nn.ReLU(inplace=True), conv3x3(c_in, c_out, stride)
        self.bn2, self.relu2, self.conv2 = nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), conv3x3(c_out, c_out)
        self.stride, self.extra_channels = stride, c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """Identity, or TTT's Downsample: average-pool by the stride and append zero channels."""
        if self.stride != 1:
            x = F.avg_pool2d(x, self.stride)
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The residual branch added to the shortcut (no activation after the sum: pre-activation)."""
        residual = self.conv1(self.relu1(self.bn1(x)))
        residual = self.conv2(self.relu2(self.bn2(residual)))
        return self.shortcut(x) + residual


def stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """BLOCKS_PER_STAGE blocks; the first changes the width and resolution."""
    return nn.Sequential(PreActBlock(c_in, c_out, stride),
                         *(PreActBlock(c_out, c_out) for _ in range(BLOCKS_PER_STAGE - 1)))


class ResNet26(nn.Module):
    """TTT's CIFAR ResNet-26 with batch norm, taking RGB images in [0, 1]."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        w = (16 * WIDTH, 32 * WIDTH, 64 * WIDTH)
        self.register_buffer("mean", torch.full((1, 3, 1, 1), MEAN), persistent=False)
        self.register_buffer("std", torch.full((1, 3, 1, 1), STD), persistent=False)
        self.conv1 = conv3x3(3, 16)  # the Wide ResNet convention: a fixed 16-channel stem
        self.layer1, self.layer2, self.layer3 = stage(16, w[0], 1), stage(w[0], w[1], 2), stage(w[1], w[2], 2)
        self.bn, self.relu = nn.BatchNorm2d(w[2]), nn.ReLU(inplace=True)
        self.fc = nn.Linear(w[2], num_classes)
        for m in self.modules():  # TTT's initialisation: N(0, 2 / (k * k * out_channels)), He et al.'s fan-out
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of [0, 1] images (32 x 32: the final 8 x 8 map is pooled whole, as TTT's AvgPool2d(8))."""
        x = self.conv1((x - self.mean) / self.std)
        x = self.relu(self.bn(self.layer3(self.layer2(self.layer1(x)))))
        return self.fc(x.mean((2, 3)))


def checkpoint_path(ckpt_dir: Union[str, Path], source: str) -> Path:
    """Where the source model of `source` lives: robustbench's <dir>/<dataset>/corruptions/ layout for CIFAR."""
    folder = Path(ckpt_dir) / source
    return (folder if source in DIGIT_SOURCES else folder / "corruptions") / f"{ARCH}.pt"


def source_of(dataset: str) -> str:
    """The source domain a ResNet26 for CORRUPTION.DATASET `dataset` was trained on."""
    if dataset not in SOURCE_OF:
        raise ConfigError(f"config key MODEL.ARCH: {ARCH} has no source model for CORRUPTION.DATASET {dataset}; "
                          f"it runs on {', '.join(SOURCE_OF)}")
    return SOURCE_OF[dataset]


def load_resnet26(ckpt_dir: Union[str, Path], dataset: str, trust: bool = False) -> ResNet26:
    """The ResNet26 source model for CORRUPTION.DATASET `dataset`, loaded weights-only and strictly, in eval mode."""
    source = source_of(dataset)
    path = checkpoint_path(ckpt_dir, source)
    if not path.is_file():
        raise MissingResourceError(f"{ARCH} checkpoint {path} not found: train it with "
                                   f"`python -m tent.train_source --dataset {source} --ckpt_dir {ckpt_dir}`")
    checkpoint = load_checkpoint(path, trust)
    state = checkpoint.get("model_state") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CorruptFileError(f"{path} is not a {ARCH} checkpoint (no 'model_state' dict); "
                               f"train it again with `python -m tent.train_source --dataset {source}`")
    model = ResNet26(NUM_CLASSES[source])
    problems = key_differences(model, state)
    if problems:
        raise CorruptFileError(f"{path} does not hold {ARCH} weights for {source}: {'; '.join(problems)}")
    model.load_state_dict(state)
    return model.eval()
