"""ProDA's trainer, the reference's `models/adaptation_modelv2.py`: `CustomModel` and its state.

CustomModel builds what the stage needs (student, EMA network, teacher, discriminator,
optimisers, schedules, prototypes) and checks the stage's options once; proda/checkpoint.py
saves and restores it all. Its four steps, dispatched by `stage_step(source, target)` through
`STAGE_STEPS`, are in models/steps.py; the reference's names (among them the positional
`step_adv`, `step_source`, `step`, `step_distillation`) are forwards in models/compat.py; both
are inherited. Where every other piece lives: docs/code-map.md.
Under torchrun the student and discriminator are DDP-wrapped and prototype updates gathered.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, List, Optional

import torch
import torch.nn as nn

from dacommon.device import get_device
from dacommon.distributed import wrap_ddp
from proda.files import OptionError
from proda.models.builders import batchnorm_class, build_discriminator, build_optimizer, build_student, build_teacher
from proda.models.compat import ReferenceNames
from proda.models.ema import build_ema
from proda.models.precision import MixedPrecision
from proda.models.prototypes import Prototypes
from proda.models.steps import StageSteps
from proda.models.utils import freeze_bn, freeze_bn_params, get_scheduler


def check_stage_options(opt: argparse.Namespace) -> None:
    """Refuse option sets the stage cannot run, once, before anything is built."""
    needs_ema = [flag for flag, on in (("--proto_rectify", opt.proto_rectify),
                                       ("--proto_consistW > 0", opt.proto_consistW > 0),
                                       ("--moving_prototype", opt.moving_prototype)) if on]
    if opt.stage == "stage1" and needs_ema and not opt.ema:  # the reference crashes there
        raise OptionError(f"stage 1 with {', '.join(needs_ema)} needs --ema (the EMA network provides "
                          "the features of the full target image)")


class CustomModel(StageSteps, ReferenceNames):
    """ProDA's trainer state: student (BaseNet), EMA network, teacher, discriminator, prototypes, optimisers."""

    def __init__(self, opt: Any, logger: logging.Logger, isTrain: bool = True) -> None:
        check_stage_options(opt)
        self.opt = opt
        self.class_numbers = opt.n_class
        self.logger = logger
        self.device = get_device(opt.device)
        self.best_iou = -100 if opt.no_resume else 0
        self.iter = 0
        self.prototypes = Prototypes(opt.n_class, self.device)
        self.BaseNet = build_student(opt)
        logger.info("the backbone is %s", opt.model_name)
        self.nets: List[nn.Module] = [self.BaseNet]
        self.nets_DP: List[nn.Module] = []
        self.optimizers: List[torch.optim.Optimizer] = []
        self.schedulers: List[Any] = []
        if opt.stage == "warm_up":
            self._add_discriminator()
        self.BaseOpti = build_optimizer(opt, self.BaseNet)
        self.BaseSchedule = get_scheduler(self.BaseOpti, opt)
        self.optimizers.append(self.BaseOpti)
        self.schedulers.append(self.BaseSchedule)
        self.precision = MixedPrecision(opt.amp, self.device, self.optimizers)  # --amp and its gradient scalers
        BatchNorm = batchnorm_class(opt.bn, self.device)
        if opt.ema:
            self.BaseNet_ema = build_ema(opt, self.BaseNet, BatchNorm, self.device)
        if opt.distillation > 0:
            self.teacher = build_teacher(opt, BatchNorm, self.device)
        self.adv_source_label, self.adv_target_label = 0, 1
        self.bceloss = nn.BCEWithLogitsLoss() if opt.gan == "Vanilla" else nn.MSELoss()
        if opt.freeze_bn:  # before DDP, which must know which parameters get gradients
            self.BaseNet.apply(freeze_bn_params)
        self.BaseNet_DP = wrap_ddp(self.BaseNet, self.device)
        self.nets_DP.append(self.BaseNet_DP)

    def _add_discriminator(self) -> None:
        """Warm-up: the discriminator, its optimiser and schedule (DDP-wrapped under torchrun)."""
        self.net_D, self.optimizer_D = build_discriminator(self.opt, self.device)
        self.DSchedule = get_scheduler(self.optimizer_D, self.opt)
        self.net_D_DP = wrap_ddp(self.net_D, self.device)
        self.nets.append(self.net_D)
        self.optimizers.append(self.optimizer_D)
        self.schedulers.append(self.DSchedule)
        self.nets_DP.append(self.net_D_DP)

    # ------------------------------------------------------------------ bookkeeping

    def freeze_bn_apply(self) -> None:
        """Put every batch norm of the trained networks in eval mode and stop its affine gradients."""
        for net in self.nets + self.nets_DP:
            net.apply(freeze_bn)

    def scheduler_step(self) -> None:
        """Advance every poly schedule by one iteration."""
        for scheduler in self.schedulers:
            scheduler.step()

    def optimizer_zerograd(self) -> None:
        """Clear the gradients of every optimiser."""
        for optimizer in self.optimizers:
            optimizer.zero_grad()

    def eval(self, net: Optional[nn.Module] = None, logger: Optional[logging.Logger] = None) -> None:
        """Eval mode for the trained networks (the EMA network and teacher are left as they are, as the reference)."""
        for module in ([net] if net is not None else self.nets + self.nets_DP):
            module.eval()
        if logger is not None:
            logger.info("Successfully set the model eval mode")

    def train(self, net: Optional[nn.Module] = None, logger: Optional[logging.Logger] = None) -> None:
        """Train mode for the trained networks (the teacher stays in eval mode)."""
        for module in ([net] if net is not None else self.nets + self.nets_DP):
            module.train()
