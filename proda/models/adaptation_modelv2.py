"""ProDA's trainer, the reference's `models/adaptation_modelv2.py`: `CustomModel`, its state and checkpoints.

CustomModel builds what the stage needs (student, EMA network, teacher, discriminator,
optimisers, schedules, prototypes), checks the stage's options once, and saves and restores
it all. Its four steps -- dispatched by `stage_step(source, target)` through
models/steps.py's `STAGE_STEPS`, with the reference's positional `step_adv` (warm-up),
`step_source` (src_only), `step` (stage 1) and `step_distillation` (stages 2-3) -- are in
models/steps.py, the reference's other names in models/compat.py; both are inherited. Where every other piece lives: docs/proda-code-map.md.
Under torchrun the student and discriminator are DDP-wrapped and prototype updates gathered.
"""
from __future__ import annotations

import argparse
import logging
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn

from proda.distributed import wrap_ddp
from proda.models.builders import batchnorm_class, build_discriminator, build_optimizer, build_student, build_teacher
from proda.models.compat import ReferenceNames
from proda.models.ema import build_ema
from proda.models.precision import MixedPrecision
from proda.models.prototypes import Prototypes
from proda.models.steps import StageSteps
from proda.models.utils import freeze_bn, freeze_bn_params, get_scheduler
from proda.utils import CheckpointError, OptionError, get_device

# compatibility: the module-level names defined here before the split stay importable from here
from proda.data.replay import full_to_weak, per_sample, per_sample_tuples, strong_transform  # noqa: E402,F401
from proda.distributed import all_gather_rows, is_distributed  # noqa: E402,F401
from proda.models.ema import EMA_DECAY  # noqa: E402,F401
from proda.models.prototypes import (FEAT_CHANNELS, MIN_CLASS_PIXELS, NEAR_PAIR_TOL, PROTO_COUNT_CAP,  # noqa: E402,F401
                                     PROTO_MEAN_WARMUP, class_mean_vectors, exact_distance, occurrence_rank,
                                     one_hot_labels, prototype_distance, rectification_weights, update_prototypes,
                                     valid_vectors)


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
        # --amp (off for an options namespace from before the option) and its gradient scalers
        self.precision = MixedPrecision(getattr(opt, "amp", "off"), self.device, self.optimizers)
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

    # ------------------------------------------------------------------ checkpoints

    def reference_checkpoint(self, iters: Optional[int] = None, best_iou: Optional[float] = None) -> Dict[str, Any]:
        """The reference's checkpoint dict: {'ResNet101': {model_state, objective_vectors}, ['FCDiscriminator'], iter, best_iou}."""
        state: Dict[str, Any] = {net.__class__.__name__: {"model_state": net.state_dict(),
                                                          "objective_vectors": self.objective_vectors}
                                 for net in self.nets}
        state["iter"] = self.iter if iters is None else iters
        state["best_iou"] = self.best_iou if best_iou is None else best_iou
        return state

    def training_state(self) -> Dict[str, Any]:
        """Everything needed to resume this stage exactly: networks, EMA, optimisers, schedules, prototypes, counters."""
        state = {"nets": {net.__class__.__name__: net.state_dict() for net in self.nets},
                 "optimizers": [o.state_dict() for o in self.optimizers],
                 "schedulers": [s.state_dict() for s in self.schedulers],
                 "objective_vectors": self.objective_vectors,
                 "objective_vectors_num": self.objective_vectors_num,
                 "iter": self.iter,
                 "best_iou": self.best_iou,
                 "stage": self.opt.stage}
        if self.opt.ema:
            state["ema"] = self.BaseNet_ema.state_dict()
        if self.precision.mode == "fp16":  # the loss scales of the gradient scalers, one per optimiser
            state["scalers"] = self.precision.state_dict(self.optimizers)
        return state

    def load_training_state(self, state: Dict[str, Any]) -> None:
        """Restore what training_state() saved; a state from another stage or model gives one clear error."""
        if state.get("stage") != self.opt.stage:
            raise CheckpointError(f"the resume state was saved in stage {state.get('stage')!r}, "
                                  f"not {self.opt.stage!r}")
        missing = [k for k in ("nets", "optimizers", "schedulers") if k not in state] + \
                  (["ema"] if self.opt.ema and "ema" not in state else []) + \
                  (["scalers"] if self.precision.mode == "fp16" and "scalers" not in state else [])
        if missing:
            raise CheckpointError(f"the resume state lacks {missing} (saved with other options?)")
        try:
            for net in self.nets:
                net.load_state_dict(state["nets"][net.__class__.__name__])
            if self.opt.ema:
                self.BaseNet_ema.load_state_dict(state["ema"])
            for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
                optimizer.load_state_dict(saved)
            for scheduler, saved in zip(self.schedulers, state["schedulers"], strict=True):
                scheduler.load_state_dict(saved)
            if self.precision.mode == "fp16":
                self.precision.load_state_dict(self.optimizers, state["scalers"])
            self.objective_vectors = state["objective_vectors"]
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"the resume state does not fit this model and options: {err}") from None
        counts = torch.as_tensor(state["objective_vectors_num"])
        self.objective_vectors_num = counts.to(self.device, torch.float32, copy=True)
        self.iter = int(state["iter"])
        self.best_iou = state["best_iou"]
