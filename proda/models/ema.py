"""The momentum (EMA) network of stage 1: a slowly moving copy of the student.

Its features of the full target image give the prototype distances that denoise the pseudo
labels and the soft prototype assignments that the strong view must match; its class means
update the prototypes.
"""
from __future__ import annotations

import argparse
from typing import Type

import torch
import torch.nn as nn

from proda.files import OptionError
from proda.models.builders import network_options
from proda.models.deeplabv2 import Deeplab

EMA_DECAY = 0.999  # momentum of the EMA network's parameters


def build_ema(opt: argparse.Namespace, student: nn.Module, BatchNorm: Type[nn.Module],
              device: torch.device) -> nn.Module:
    """The EMA network: initialised like the student, then given the student's state (as the reference)."""
    if opt.ema_bn != student.bn_clr:
        raise OptionError("--ema_bn gives the EMA network the extra SimCLR batch norm, so the student needs "
                          "it too: use --ema_bn together with --bn_clr --student_init simclr (or neither)")
    ema = Deeplab(BatchNorm, bn_clr=opt.ema_bn, init="random", **network_options(opt)).to(device)
    ema.load_state_dict(student.state_dict())
    ema.requires_grad_(False)  # updated by update_ema only
    return ema


@torch.no_grad()
def update_ema(student: nn.Module, ema: nn.Module, decay: float = EMA_DECAY) -> None:
    """EMA <- decay * EMA + (1 - decay) * student for parameters; buffers (BN statistics) copied."""
    for param_q, param_k in zip(student.parameters(), ema.parameters()):
        param_k.copy_(param_k * decay + param_q * (1.0 - decay))
    for buffer_q, buffer_k in zip(student.buffers(), ema.buffers()):
        buffer_k.copy_(buffer_q)
