"""Construction of ProDA's networks and optimisers from the options, as the reference builds them.

`build_student(opt)` is the one network factory: the trainer uses it, and so do the inference
entry points (test.py, generate_pseudo_label.py, calc_prototype.py), which need the student and
its weights only -- no optimiser, EMA network, teacher or discriminator.
"""
from __future__ import annotations

import argparse
import warnings
from typing import Any, Optional, Tuple, Type

import torch
import torch.nn as nn

from dacommon.device import get_device
from dacommon.distributed import in_process_group, is_distributed
from proda.models.deeplabv2 import Deeplab
from proda.models.discriminator import FCDiscriminator

SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 2e-4
D_LR, D_BETAS = 1e-4, (0.9, 0.99)  # the warm-up discriminator's Adam


def batchnorm_class(bn: str, device: torch.device) -> Type[nn.Module]:
    """'sync_bn' -> nn.SyncBatchNorm when several GPU processes train together, else BatchNorm2d."""
    if bn not in ("sync_bn", "bn"):
        raise NotImplementedError(f"batch norm choice {bn} is not implemented")
    if bn == "sync_bn" and is_distributed() and device.type != "cpu":
        return nn.SyncBatchNorm
    return nn.BatchNorm2d


def network_options(opt: argparse.Namespace) -> dict:
    """The options every DeepLabv2 of a run is built with (student, EMA network, teacher)."""
    return dict(num_classes=opt.n_class, layers=opt.backbone_layers, trim_aspp=opt.trim_aspp,
                allow_partial_init=opt.allow_partial_init)


def student_network(opt: argparse.Namespace, BatchNorm: Type[nn.Module], restore_from: Optional[str]) -> nn.Module:
    """The student as the reference builds it for --student_init (bn_clr only with simclr, or random)."""
    common = dict(restore_from=restore_from, **network_options(opt))
    if opt.student_init == "simclr":
        return Deeplab(BatchNorm, initialization=opt.simclr_path, bn_clr=opt.bn_clr, **common)
    if opt.student_init == "random":
        return Deeplab(BatchNorm, init="random", bn_clr=opt.bn_clr, **common)
    return Deeplab(BatchNorm, imagenet_path=opt.imagenet_path, **common)


def build_student(opt: argparse.Namespace) -> nn.Module:
    """The student network with its weights (--resume_path unless --no_resume) on opt.device."""
    device = get_device(opt.device)
    restore_from = None if opt.no_resume else opt.resume_path
    return student_network(opt, batchnorm_class(opt.bn, device), restore_from).to(device)


def build_teacher(opt: argparse.Namespace, BatchNorm: Type[nn.Module], device: torch.device) -> nn.Module:
    """Stages 2-3: the previous stage's network from --resume_path, frozen, in eval mode."""
    teacher = Deeplab(BatchNorm, restore_from=opt.resume_path, bn_clr=opt.ema_bn, **network_options(opt)).to(device)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


REFERENCE_BATCH = 4  # the reference's batch size, the base of --scale_lr


def lr_scale(opt: argparse.Namespace) -> float:
    """--scale_lr: learning rates scaled linearly with the effective batch, total bs / 4; else 1.

    Under torchrun opt.bs is already each process's share, so it is multiplied back by the world size.
    """
    if not opt.scale_lr:
        return 1.0
    world = torch.distributed.get_world_size() if in_process_group() else 1
    return opt.bs * world / REFERENCE_BATCH


def scaled(lr: float, opt: argparse.Namespace) -> float:
    """`lr` under --scale_lr (exactly `lr` without it)."""
    return lr * lr_scale(opt) if opt.scale_lr else lr


def build_optimizer(opt: argparse.Namespace, net: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, weight decay 2e-4); backbone 1x / head 10x groups with --finetune and in warm-up."""
    lr = scaled(opt.lr, opt)
    if opt.finetune or opt.stage in ("warm_up", "src_only"):
        params: Any = [
            {"params": list(net.get_1x_lr_params(unique=opt.unique_lr_params)), "lr": lr},
            {"params": list(net.get_10x_lr_params()), "lr": lr * 10}]
    else:
        params = net.parameters()
    with warnings.catch_warnings():  # the reference's repeated backbone parameters are deliberate
        warnings.filterwarnings("ignore", message="optimizer contains a parameter group with duplicate")
        # foreach=False: the per-parameter loop, which applies repeated parameters one after another
        return torch.optim.SGD(params, lr=lr, weight_decay=SGD_WEIGHT_DECAY, momentum=SGD_MOMENTUM,
                               foreach=False)


def build_discriminator(opt: argparse.Namespace, device: torch.device) -> Tuple[nn.Module, torch.optim.Optimizer]:
    """Warm-up: the output-space discriminator over the n_class softmax and its Adam optimiser."""
    net_D = FCDiscriminator(inplanes=opt.n_class).to(device)
    return net_D, torch.optim.Adam(net_D.parameters(), lr=scaled(D_LR, opt), betas=D_BETAS)
