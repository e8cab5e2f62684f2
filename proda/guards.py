"""Checks a training run makes while it runs: a schedule it would outlive, weights gone
non-finite. Each failure is one OptionError line (proda.runner.run: exit 2) and stops the run before
anything is written, so the checkpoints on disk stay the last good ones.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
from typing import Any, Dict, Iterable

import torch

from proda.files import OptionError
from proda.paths import model_file


class TrainingDiverged(OptionError):
    """A weight became NaN or infinite: the run stops before writing a checkpoint."""


def check_schedule(opt: argparse.Namespace, total: int) -> None:
    """Refuse a run whose last iteration `total` lies past the poly schedule's end (--train_iters):
    every iteration after it would train at learning rate 0 (the reference crashes there)."""
    if total <= opt.train_iters:
        return
    last = model_file(opt, "last")
    go_on = (f"; to go on from this finished run's final model, start a new run from it: --resume_path "
             f"{shlex.quote(last)} --logdir NEW_LOGDIR" if os.path.isfile(last) else
             f"; or stop at the schedule's end: --max_iters {opt.train_iters}")
    raise OptionError(
        f"this run would train {total} iterations (--max_iters / --epochs) but the poly learning-rate "
        f"schedule (--train_iters {opt.train_iters}) reaches 0 at iteration {opt.train_iters}: to train "
        f"{total} iterations, start over with one schedule for them: --train_iters {total} --max_iters {total} "
        f"--restart{go_on} (docs/reliability.md)")


def non_finite(losses: Dict[str, float]) -> Dict[str, float]:
    """The losses that are NaN or infinite."""
    return {k: v for k, v in losses.items() if not math.isfinite(v)}


def all_finite(nets: Iterable[torch.nn.Module]) -> bool:
    """Whether every parameter and floating buffer of `nets` is finite (one reduction per tensor, one sync).

    Buffers too: a BatchNorm running variance can overflow while the weights are still finite,
    and it is saved in the checkpoint like them.
    """
    tensors = [t for net in nets for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
    flags = [t.detach().isfinite().all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


def check_step(model: Any, opt: argparse.Namespace, losses: Dict[str, float]) -> None:
    """Stop the run when its weights are no longer finite after this iteration's step.

    The weights are tested when a loss (already a float on the CPU: free to test) is NaN or
    infinite, and on every iteration that validates and writes checkpoints. A non-finite loss
    alone is no divergence: a batch whose pseudo labels are all ignored has a NaN cross-entropy
    with zero gradient (the reference logs it as nan and trains on), and fp16 gradient scaling
    skips the steps of infinite losses.
    """
    suspect = non_finite(losses)
    if not suspect and (model.iter + 1) % opt.val_interval:
        return
    if all_finite(model.nets):
        return
    what = ", ".join(f"{k} = {v}" for k, v in suspect.items()) or "finite losses"
    raise TrainingDiverged(
        f"training diverged at iteration {model.iter} (weights NaN or infinite; {what}); stopped before writing "
        f"a checkpoint, so those in {opt.logdir} hold earlier, finite iterations only: lower --lr (now {opt.lr}) "
        "or check the pseudo labels, then rerun with --restart")
