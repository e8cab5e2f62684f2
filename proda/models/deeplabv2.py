"""DeepLabv2 on ResNet-101 as ProDA uses it (reference `models/deeplabv2.py`).

The backbone keeps stride 8: layers 3 and 4 use dilation 2 and 4 instead of striding. The
head, `Classifier_Module2`, runs five parallel branches (a 1x1 conv and 3x3 convs with
dilation 6, 12, 18, 24; each with GroupNorm), re-weights their concatenation with a
squeeze-and-excitation block, fuses it to 256 channels and classifies after dropout. The
forward pass returns {'feat': the 256-channel features ProDA's prototypes live in,
'out': the logits}, both at about 1/8 of the input size (H/8 + 1 for H a multiple of 8:
the max pool rounds up).

Module and parameter names equal the reference, so the released ProDA checkpoints load with
strict=True. Initialisation as the reference: ImageNet ResNet-101 weights (or a SimCLR
checkpoint) for the backbone, then optionally a previous stage's checkpoint (`restore_from`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Iterator, Optional, Sequence, Type

import torch
import torch.nn as nn
import torch.nn.functional as F

from proda.files import CheckpointError
from proda.models.utils import freeze_bn_params, is_batchnorm
from proda.utils import LOGGER_NAME, load_checkpoint
from proda.weight_sources import SOURCES, missing_hint

run_logger = logging.getLogger(LOGGER_NAME)  # the run's log file and console, where the init count belongs

affine_par = True
RESNET101_LAYERS = (3, 4, 23, 3)
ASPP_DILATIONS = (6, 12, 18, 24)
IMAGENET_URL = SOURCES["imagenet"].url  # the reference's file
# file names under <torch hub dir>/checkpoints that hold torchvision's ImageNet ResNet-101 (V1) weights
IMAGENET_FILES = ("resnet101-5d3b4d8f.pth", "resnet101-63fe2227.pth")
INITIALIZATIONS = ("imagenet", "simclr", "random")


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, x4 channels) with the stride on the first 1x1 conv, as Caffe's."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None, BatchNorm: Type[nn.Module] = nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = BatchNorm(planes, affine=affine_par)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=dilation, bias=False,
                               dilation=dilation)
        self.bn2 = BatchNorm(planes, affine=affine_par)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = BatchNorm(planes * 4, affine=affine_par)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block: relu(bn3(conv3(...)) + shortcut(x))."""
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + residual)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: re-weight channels by a gate computed from their global average."""

    def __init__(self, inplanes: int, r: int = 16) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.se = nn.Sequential(nn.Linear(inplanes, inplanes // r), nn.ReLU(inplace=True),
                                nn.Linear(inplanes // r, inplanes), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x * sigmoid(MLP(avgpool(x))), per sample and channel."""
        pooled = self.global_pool(x).flatten(1)
        return x * self.se(pooled)[:, :, None, None]


def _branch(inplanes: int, kernel_size: int, dilation: int) -> nn.Sequential:
    """One ASPP branch of the head: conv to 256 channels, GroupNorm(32), ReLU."""
    padding = 0 if kernel_size == 1 else dilation
    return nn.Sequential(nn.Conv2d(inplanes, 256, kernel_size=kernel_size, stride=1, padding=padding,
                                   dilation=dilation, bias=True),
                         nn.GroupNorm(num_groups=32, num_channels=256, affine=True),
                         nn.ReLU(inplace=True))


def conv_on_map(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv` (3x3, stride 1, padding = dilation) without the kernel taps that read only zero padding.

    On a map no taller (wider) than the dilation, the kernel's outer rows (columns) never reach
    it: the same sums without their zero terms, at a third (a ninth) of the work. The weights of
    the left-out taps get zero gradient, as they do in the full convolution. [added: --trim_aspp]
    """
    (d_h, d_w), (height, width) = conv.dilation, x.shape[-2:]
    keep_rows, keep_cols = d_h < height, d_w < width
    if keep_rows and keep_cols:
        return conv(x)
    weight = conv.weight[:, :, slice(None) if keep_rows else slice(1, 2), slice(None) if keep_cols else slice(1, 2)]
    return F.conv2d(x, weight, conv.bias, padding=(d_h if keep_rows else 0, d_w if keep_cols else 0),
                    dilation=conv.dilation)


class Classifier_Module2(nn.Module):
    """ProDA's head: ASPP branches with GroupNorm, an SE block, a 256-channel fusion, dropout, 1x1 classifier."""

    trim_taps = False  # [added] --trim_aspp: dilated branches skip the taps that only read padding

    def __init__(self, inplanes: int, dilation_series: Sequence[int], padding_series: Sequence[int],
                 num_classes: int, droprate: float = 0.1, use_se: bool = True) -> None:
        super().__init__()
        # padding_series is accepted for the reference's signature; it equals the dilations there
        self.conv2d_list = nn.ModuleList([_branch(inplanes, 1, 1)] +
                                         [_branch(inplanes, 3, d) for d in dilation_series])
        width = 256 * (len(dilation_series) + 1)
        fuse = [nn.Conv2d(width, 256, kernel_size=3, stride=1, padding=1, dilation=1, bias=True),
                nn.GroupNorm(num_groups=32, num_channels=256, affine=True)]
        self.bottleneck = nn.Sequential(*([SEBlock(width)] if use_se else []), *fuse)
        self.head = nn.Sequential(nn.Dropout2d(droprate),
                                  nn.Conv2d(256, num_classes, kernel_size=1, padding=0, dilation=1, bias=False))
        # the reference's head init (ResNet101 redraws every conv weight afterwards; the zero bias stays)
        for m in self.bottleneck:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.head[1].weight, 0, 0.001)

    def _branch_forward(self, branch: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        """One ASPP branch; with trim_taps its dilated conv leaves out the taps outside the map."""
        if not (self.trim_taps and branch[0].kernel_size == (3, 3)):
            return branch(x)
        return branch[1:](conv_on_map(branch[0], x))

    def forward(self, x: torch.Tensor, get_feat: bool = False):
        """Logits, or {'feat': fused features after dropout, 'out': logits} when get_feat."""
        out = torch.cat([self._branch_forward(branch, x) for branch in self.conv2d_list], 1)
        out = self.bottleneck(out)
        if not get_feat:
            return self.head(out)
        feat = self.head[0](out)
        return {"feat": feat, "out": self.head[1](feat)}


class ResNet101(nn.Module):
    """Dilated ResNet backbone (output stride 8) with ProDA's head as `layer5`."""

    def __init__(self, block: Type[Bottleneck], layers: Sequence[int], num_classes: int,
                 BatchNorm: Type[nn.Module], bn_clr: bool = False, trim_aspp: bool = False) -> None:
        super().__init__()
        self.inplanes = 64
        self.bn_clr = bn_clr
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNorm(64, affine=affine_par)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.layer1 = self._make_layer(block, 64, layers[0], BatchNorm=BatchNorm)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, BatchNorm=BatchNorm)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=1, dilation=2, BatchNorm=BatchNorm)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=1, dilation=4, BatchNorm=BatchNorm)
        self.layer5 = Classifier_Module2(2048, ASPP_DILATIONS, ASPP_DILATIONS, num_classes)
        self.layer5.trim_taps = trim_aspp
        if self.bn_clr:  # extra BN on the backbone output, for SimCLR-initialised students
            self.bn_pretrain = BatchNorm(2048, affine=affine_par)
        self._init_weights()

    def _init_weights(self) -> None:
        """Reference init: every conv weight ~ N(0, 0.01) (head included), batch norms to identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, 0.01)
            elif is_batchnorm(m):
                m.weight.data.fill_(1)
                m.bias.data.zero_()

    def _make_layer(self, block: Type[Bottleneck], planes: int, blocks: int, stride: int = 1,
                    dilation: int = 1, BatchNorm: Type[nn.Module] = nn.BatchNorm2d) -> nn.Sequential:
        """A ResNet stage; its first block gets a 1x1 projection shortcut whenever shape or dilation changes."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion or dilation in (2, 4):
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                BatchNorm(planes * block.expansion, affine=affine_par))
        layers = [block(self.inplanes, planes, stride, dilation=dilation, downsample=downsample, BatchNorm=BatchNorm)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=dilation, BatchNorm=BatchNorm) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, ssl: bool = False, lbl: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Image batch -> {'feat': N x 256 x h x w, 'out': N x classes x h x w}; ssl and lbl are unused.

        h = ceil((floor(ceil(H / 2) / 2) + 1) / 2), H/8 + 1 for H a multiple of 8 (ceil-mode max pool).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.bn_clr:
            x = self.bn_pretrain(x)
        return self.layer5(x, get_feat=True)

    def get_1x_lr_params(self, unique: bool = False) -> Iterator[nn.Parameter]:
        """Backbone parameters (base learning rate), as the reference yields them.

        The reference walks every sub-module of each stage and yields its parameters
        *recursively*, so most backbone parameters come out 3 or 4 times; SGD then updates
        them that many times per step. That shaped the published numbers and is the default;
        unique=True yields each parameter once.
        """
        seen = set()
        for part in (self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4):
            for module in part.modules():
                for p in module.parameters():
                    if p.requires_grad and not (unique and id(p) in seen):
                        seen.add(id(p))
                        yield p

    def get_10x_lr_params(self) -> Iterator[nn.Parameter]:
        """Head parameters (10x learning rate): the extra SimCLR batch norm and layer5."""
        if self.bn_clr:
            yield from self.bn_pretrain.parameters()
        yield from self.layer5.parameters()


def imagenet_weights_path(imagenet_path: str = "") -> str:
    """Local file with torchvision's ImageNet ResNet-101 weights: the given path or torch's hub cache."""
    if imagenet_path:
        if not os.path.isfile(imagenet_path):
            raise CheckpointError(f"ImageNet ResNet-101 weights not found: {imagenet_path} (--imagenet_path; "
                                  f"{SOURCES['imagenet'].download_line()})")
        return imagenet_path
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    for name in IMAGENET_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    try:  # online: fetch into the hub cache like the reference's model_zoo.load_url
        os.makedirs(folder, exist_ok=True)
        torch.hub.download_url_to_file(IMAGENET_URL, os.path.join(folder, IMAGENET_FILES[0]), progress=False)
    except Exception:
        raise CheckpointError(
            f"ImageNet ResNet-101 weights not found and not downloadable: place {IMAGENET_FILES[0]} "
            f"(from {IMAGENET_URL}) in {folder}, or pass --imagenet_path FILE, "
            "or use --student_init random (no pretrained weights)") from None
    return os.path.join(folder, IMAGENET_FILES[0])


def require_tensors(weights: Any, path: str, what: str) -> Dict[str, torch.Tensor]:
    """`weights` if it maps names to tensors; else one CheckpointError line naming the file (a file
    loaded with --trust_checkpoint can hold anything)."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path} is not a ProDA checkpoint: its {what} is a {type(weights).__name__}, "
                              "not a mapping of names to tensors")
    return weights


BACKBONE = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")  # what a pretrained file initialises
# prefixes a backbone's keys carry in other code's files: (Distributed)DataParallel, SimCLR/MoCo encoders,
# detection/segmentation backbones; tried alone and nested, the one matching most backbone tensors wins
WRAPPER_PREFIXES = ("", "module.", "encoder.", "backbone.", "module.encoder.", "module.backbone.",
                    "encoder.module.", "backbone.module.")


def backbone_keys(model: nn.Module) -> list:
    """The backbone tensors a pretrained file must provide (BN batch counters excepted: old files lack them)."""
    return [k for k in model.state_dict() if k.startswith(BACKBONE) and not k.endswith("num_batches_tracked")]


def unwrap_keys(weights: Dict[str, torch.Tensor], wanted: Sequence[str]) -> tuple:
    """The file's tensors under the wrapper prefix that names the most backbone tensors, and that prefix."""
    unwrapped = {p: {k[len(p):]: v for k, v in weights.items() if k.startswith(p)} for p in WRAPPER_PREFIXES}
    best = max(WRAPPER_PREFIXES, key=lambda p: sum(k in unwrapped[p] for k in wanted))  # "" first: kept on ties
    return unwrapped[best], best


def load_matching(model: nn.Module, weights: Dict[str, torch.Tensor], path: str, what: str,
                  allow_partial: bool = False) -> int:
    """Copy the file's backbone tensors into the model (the reference's partial init, keys unwrapped);
    refuse a file that leaves part of the backbone uninitialised unless allow_partial; returns the count."""
    state_dict, wanted = model.state_dict(), backbone_keys(model)
    weights, prefix = unwrap_keys(weights, wanted)
    matched = {k: v for k, v in weights.items() if k in state_dict and tuple(v.shape) == tuple(state_dict[k].shape)}
    absent = [k for k in wanted if k not in matched]
    if absent and not allow_partial:
        sample = ", ".join(list(weights)[:3]) or "none"
        raise CheckpointError(f"{path} ({what}) initialises {len(wanted) - len(absent)} of the model's {len(wanted)} "
                              f"backbone tensors (missing e.g. {', '.join(absent[:2])}; the file's keys look like "
                              f"{sample}): pass --allow_partial_init to train from a partial initialisation")
    state_dict.update(matched)
    model.load_state_dict(state_dict)
    run_logger.info("initialised %d of the %d backbone tensors (%d tensors in all) from %s %s%s",
                    len(wanted) - len(absent), len(wanted), len(matched), what, path,
                    f" (keys under '{prefix}')" if prefix else "")
    return len(matched)


def load_pretrained(model: nn.Module, init: str, initialization: Optional[str], imagenet_path: str,
                    allow_partial: bool = False) -> None:
    """Backbone initialisation: ImageNet weights, a SimCLR checkpoint's 'state_dict', or nothing (random)."""
    if init == "random":
        return
    if init == "imagenet":
        path = imagenet_weights_path(imagenet_path)
        weights = require_tensors(load_checkpoint(path, what="ImageNet ResNet-101 weights"), path, "content")
    else:
        checkpoint = load_checkpoint(initialization, what="SimCLR checkpoint",
                                     hint=f"{SOURCES['simclr'].download_line()}; set --simclr_path")
        if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
            raise CheckpointError(f"SimCLR checkpoint {initialization} has no 'state_dict' entry")
        path, weights = initialization, require_tensors(checkpoint["state_dict"], initialization, "'state_dict'")
    load_matching(model, weights, path, f"{init} weights", allow_partial)


def restore(model: nn.Module, restore_from: str, num_classes: int) -> None:
    """Load checkpoint['ResNet101']['model_state'] strictly, explaining class-count and bn_clr mismatches."""
    checkpoint = load_checkpoint(restore_from, what="checkpoint (--resume_path)",
                                 hint=missing_hint(restore_from))
    try:
        state = checkpoint["ResNet101"]["model_state"]
    except (KeyError, TypeError, IndexError):
        raise CheckpointError(f"{restore_from} is not a ProDA checkpoint (no ['ResNet101']['model_state'])") from None
    require_tensors(state, restore_from, "['ResNet101']['model_state']")
    head = state.get("layer5.head.1.weight")
    if head is not None and head.shape[0] != num_classes:
        raise CheckpointError(f"{restore_from} was trained for {head.shape[0]} classes, "
                              f"but the model has {num_classes} (--n_class)")
    has_clr, wants_clr = "bn_pretrain.weight" in state, hasattr(model, "bn_pretrain")
    if has_clr != wants_clr:
        raise CheckpointError(f"{restore_from} was trained {'with' if has_clr else 'without'} the extra "
                              f"SimCLR batch norm: {'add' if has_clr else 'drop'} --bn_clr (and --student_init simclr)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{restore_from} does not fit the model (--backbone_layers?): {err}") from None


def Deeplab(BatchNorm: Type[nn.Module], num_classes: int = 21, freeze_bn: bool = False,
            restore_from: Optional[str] = None, initialization: Optional[str] = None, bn_clr: bool = False,
            *, layers: Sequence[int] = RESNET101_LAYERS, init: Optional[str] = None,
            imagenet_path: str = "", trim_aspp: bool = False, allow_partial_init: bool = False) -> ResNet101:
    """Build ProDA's DeepLabv2 and initialise it as the reference does.

    initialization: None -> ImageNet weights; a path -> SimCLR checkpoint (its 'state_dict').
    init (keyword, [added]) overrides that choice: 'imagenet' | 'simclr' | 'random'.
    restore_from: a ProDA checkpoint loaded strictly on top. It overwrites every tensor, so the
    pretrained weights are then not read at all (same result, no ImageNet file needed).
    layers (keyword, [added]): blocks per stage; (3, 4, 23, 3) is ResNet-101.
    trim_aspp (keyword, [added]): see conv_on_map; changes the work, not the function computed.
    allow_partial_init (keyword, [added]): accept a pretrained file that covers only part of the backbone.
    """
    init = init or ("imagenet" if initialization is None else "simclr")
    if init not in INITIALIZATIONS:
        raise ValueError(f"Deeplab: unknown init {init!r}, expected one of {INITIALIZATIONS}")
    model = ResNet101(Bottleneck, list(layers), num_classes, BatchNorm, bn_clr=bn_clr, trim_aspp=trim_aspp)
    if freeze_bn:
        model.apply(freeze_bn_params)
    if restore_from is not None:
        restore(model, restore_from, num_classes)
    else:
        load_pretrained(model, init, initialization, imagenet_path, allow_partial_init)
    return model
