"""Checkpoints of a ProDA training run: the set it writes, loading, repairing, and the resume state.

A run writes three files into its log dir (proda.paths.model_file), all in the reference's format

    {'ResNet101': {'model_state', 'objective_vectors'}, ['FCDiscriminator': {...},] 'iter', 'best_iou'}

('iter' is the next iteration, 'best_iou' the mIoU of that validation), which the reference and
every version of this project read:

* current -- written at every validation, plus 'resume': what an exact resume needs (networks,
  EMA network, optimisers, schedules, prototypes and counts, the random state, the data
  position, the run's inputs, which iteration the best file holds, each process's own state);
* best -- written when the mIoU did not drop (selected on the target val split, as the reference);
* last -- the final model.

The set is written with interrupts held (a Ctrl-C or SIGTERM lands after it), current first; a
kill between the writes leaves a best (or last) file that the rerun repairs from the current one.

    checkpoints = CheckpointSet(opt, inputs, logger)
    checkpoints.resume(model, datasets)           # when the log dir holds an interrupted run
    checkpoints.save(model, datasets, iou, last)  # after each validation, on every process
"""
from __future__ import annotations

import argparse
import logging
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from dacommon.distributed import barrier, in_process_group, is_main
from dacommon.files import interrupts_deferred, remove_stale_temp_files
from proda import manifest
from proda.files import CheckpointError, OptionError, unwritable
from proda.models.adaptation_modelv2 import CustomModel
from proda.paths import model_file, prototype_file
from proda.utils import atomic_save, load_checkpoint

RESUME = "resume"  # the current checkpoint's entry that the reference ignores


# ----------------------------------------------------------------------------- model and trainer state

def reference_checkpoint(model: CustomModel, iters: Optional[int] = None,
                         best_iou: Optional[float] = None) -> Dict[str, Any]:
    """The reference's file: {'ResNet101': {model_state, objective_vectors}, [FCDiscriminator], iter, best_iou}."""
    state: Dict[str, Any] = {net.__class__.__name__: {"model_state": net.state_dict(),
                                                      "objective_vectors": model.prototypes.vectors}
                             for net in model.nets}
    state["iter"] = model.iter if iters is None else iters
    state["best_iou"] = model.best_iou if best_iou is None else best_iou
    return state


def training_state(model: CustomModel) -> Dict[str, Any]:
    """Everything needed to resume a stage exactly: networks, EMA, optimisers, schedules, prototypes, counters."""
    state = {"nets": {net.__class__.__name__: net.state_dict() for net in model.nets},
             "optimizers": [o.state_dict() for o in model.optimizers],
             "schedulers": [s.state_dict() for s in model.schedulers],
             "objective_vectors": model.prototypes.vectors,  # the reference's names, kept in the file
             "objective_vectors_num": model.prototypes.counts,
             "iter": model.iter,
             "best_iou": model.best_iou,
             "stage": model.opt.stage}
    if model.opt.ema:
        state["ema"] = model.BaseNet_ema.state_dict()
    if model.precision.mode == "fp16":  # the loss scales of the gradient scalers, one per optimiser
        state["scalers"] = model.precision.state_dict(model.optimizers)
    return state


def load_training_state(model: CustomModel, state: Dict[str, Any]) -> None:
    """Restore what training_state() saved; a state from another stage or model gives one clear error."""
    if state.get("stage") != model.opt.stage:
        raise CheckpointError(f"the resume state was saved in stage {state.get('stage')!r}, "
                              f"not {model.opt.stage!r}")
    fp16 = model.precision.mode == "fp16"
    missing = [k for k in ("nets", "optimizers", "schedulers") if k not in state] + \
              (["ema"] if model.opt.ema and "ema" not in state else []) + \
              (["scalers"] if fp16 and "scalers" not in state else [])
    if missing:
        raise CheckpointError(f"the resume state lacks {missing} (saved with other options?)")
    try:
        for net in model.nets:
            net.load_state_dict(state["nets"][net.__class__.__name__])
        if model.opt.ema:
            model.BaseNet_ema.load_state_dict(state["ema"])
        for optimizer, saved in zip(model.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)
        for scheduler, saved in zip(model.schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        if fp16:
            model.precision.load_state_dict(model.optimizers, state["scalers"])
        model.prototypes.vectors = state["objective_vectors"]
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"the resume state does not fit this model and options: {err}") from None
    counts = torch.as_tensor(state["objective_vectors_num"])
    model.prototypes.counts = counts.to(model.device, torch.float32, copy=True)
    model.iter = int(state["iter"])
    model.best_iou = state["best_iou"]


def load_prototypes(opt: argparse.Namespace, model: CustomModel, logger: logging.Logger) -> None:
    """Stage 1 starts from the target prototypes that calc_prototype.py wrote beside --resume_path."""
    path = prototype_file(opt, opt.tgt_dataset)
    hint = f"run: python -m proda.calc_prototype --resume_path {opt.resume_path} (same --n_class)"
    stale = manifest.check_prototypes_source(path, opt.resume_path)
    if stale:
        raise OptionError(stale)
    try:  # the setter checks the shape and moves the prototypes to the model's device
        model.prototypes.vectors = load_checkpoint(path, what="prototype file", hint=hint)
    except ValueError as err:
        raise OptionError(f"prototype file {path} does not fit this model: {err} (wrong --n_class?)") from None
    logger.info("loaded prototypes from %s", path)


# ----------------------------------------------------------------------------- random state, data position

def rng_state() -> Dict[str, Any]:
    """The training process's generators, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "gauss": float(gauss)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuple(value: Any) -> Any:
    """Lists back to the nested tuples random.setstate wants."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what rng_state() saved (CUDA only when saved and present)."""
    random.setstate(_as_tuple(state["python"]))
    saved = state["numpy"]
    np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                         saved["has_gauss"], saved["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def data_state(datasets: Any) -> Dict[str, Any]:
    """Where the endless source provider stands (the target position follows from the iteration)."""
    return {"source": datasets.source_train_loader.state_dict()}


def load_data_state(datasets: Any, state: Optional[Dict[str, Any]]) -> None:
    """Put the source provider back where data_state() found it."""
    if state is not None:
        datasets.source_train_loader.load_state_dict(state["source"])


# ----------------------------------------------------------------------------- per process (torchrun)

def process_nets(model: CustomModel) -> Dict[str, torch.nn.Module]:
    """The networks whose buffers each process keeps for itself (the trained ones and the EMA network)."""
    nets = {net.__class__.__name__: net for net in model.nets}
    if model.opt.ema:
        nets["ema"] = model.BaseNet_ema
    return nets


def process_state(datasets: Any, nets: Dict[str, torch.nn.Module]) -> Dict[str, Any]:
    """What differs between the processes of a torchrun run: random state, data position and the
    buffers of every network (batch-norm statistics are updated on each process's own batch)."""
    return {"rng": rng_state(), "data": data_state(datasets),
            "buffers": {name: {k: v.detach().cpu().clone() for k, v in net.named_buffers()}
                        for name, net in nets.items()}}


def gather_process_states(state: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """Every process's process_state, in rank order, on rank 0 (None on the others); a list of
    one without a process group."""
    if not in_process_group():
        return [state]
    states = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(state, states, dst=0)
    return states


def load_process_state(state: Dict[str, Any], datasets: Any, nets: Dict[str, torch.nn.Module]) -> None:
    """Put this process's buffers and data position back (its random state: set_rng_state, last)."""
    for name, buffers in state.get("buffers", {}).items():
        named = dict(nets[name].named_buffers())
        for key, value in buffers.items():
            named[key].copy_(value)
    load_data_state(datasets, state.get("data"))


def own_process_state(state: Dict[str, Any], logger: logging.Logger) -> Dict[str, Any]:
    """This process's saved state: its own entry of 'processes' when the run has as many processes
    as the one that saved it; otherwise (another process count, or a file of an earlier version
    holding rank 0's state only) the shared one, and the resume is not bit-exact."""
    processes = state.get("processes") or []
    world, rank = (dist.get_world_size(), dist.get_rank()) if in_process_group() else (1, 0)
    if len(processes) == world:
        return processes[rank]
    if world > 1 or len(processes) > 1:
        logger.warning("the checkpoint was written by %s process(es), this run has %d: each process "
                       "resumes from rank 0's random state and data position (not bit-exact)",
                       len(processes) or "an unknown number of", world)
    return processes[0] if processes else {"rng": state["rng"], "data": state.get("data")}


# ----------------------------------------------------------------------------- repair

def without_resume_state(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The reference's part of a current checkpoint: what the best and last files hold."""
    return {k: v for k, v in checkpoint.items() if k != RESUME}


def repair_best(opt: argparse.Namespace, checkpoint: Dict[str, Any], logger: logging.Logger) -> None:
    """Make the best file the one the current checkpoint names (a kill between the two writes)."""
    record = checkpoint[RESUME].get("best")
    path = model_file(opt, "best")
    if record is None or record["iter"] != checkpoint["iter"]:
        return  # the best model is older than the current one and was written before it
    best = load_checkpoint(path, what="best checkpoint") if os.path.isfile(path) else None
    if best is not None and best.get("iter") == record["iter"]:
        return
    atomic_save(without_resume_state(checkpoint), path)
    logger.info("repaired %s from the current checkpoint (iteration %d)", path, record["iter"] - 1)


def repair_last(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """A finished run without its last checkpoint (a kill after the final current write, or a run of
    an earlier version): write it from the current checkpoint, which holds the final model."""
    path, current = model_file(opt, "last"), model_file(opt, "current")
    remove_stale_temp_files(path)
    if not os.path.isfile(current):
        return
    checkpoint = load_checkpoint(current, what="current checkpoint")
    last = load_checkpoint(path, what="last checkpoint") if os.path.isfile(path) else None
    if last is not None and last.get("iter") == checkpoint.get("iter"):
        return
    atomic_save(without_resume_state(checkpoint), path)
    logger.info("wrote %s from the current checkpoint (iteration %d)", path, checkpoint.get("iter", 0) - 1)


# ----------------------------------------------------------------------------- the checkpoint set of a run

class CheckpointSet:
    """The current, best and last checkpoints of one training run in its log dir, and the train
    state only they need: `best`, which iteration the best file holds ({'iter', 'best_iou'}, the
    reference's values, or None before the first best file)."""

    def __init__(self, opt: argparse.Namespace, inputs: Dict[str, Any], logger: logging.Logger) -> None:
        self.opt, self.inputs, self.logger = opt, inputs, logger
        self.best: Optional[Dict[str, Any]] = None

    def save(self, model: CustomModel, datasets: Any, iou: Optional[float], last: bool = False) -> None:
        """After a validation, on every process, once the schedules have stepped: gather every
        process's own state and write the set on the main process (`iou`: None elsewhere)."""
        processes = gather_process_states(process_state(datasets, process_nets(model)))
        if iou is not None:
            self.write(model, datasets, iou, processes, last)
            self.logger.info("Best iou until now is %.4f", model.best_iou)
        barrier()

    def write(self, model: CustomModel, datasets: Any, iou: float, processes: List[Dict[str, Any]],
              last: bool) -> None:
        """Write the current checkpoint (with resume state), the best one when mIoU did not drop,
        and after the final iteration (`last`) the last one.

        Called after scheduler_step, so the saved schedules are where the next iteration starts.
        The current file is written first and names the best one (see repair_best, repair_last).
        """
        is_best = iou >= model.best_iou
        if is_best:
            model.best_iou = iou
            self.best = {"iter": model.iter + 1, "best_iou": iou}
        # as the reference: 'iter' is the next iteration and both files' 'best_iou' is this mIoU
        checkpoint = reference_checkpoint(model, iters=model.iter + 1, best_iou=iou)
        state = {**training_state(model), "rng": rng_state(), "data": data_state(datasets),
                 "inputs": self.inputs, "best": self.best, "processes": processes}
        with interrupts_deferred():  # Ctrl-C and SIGTERM land after the whole set is written
            atomic_save({**checkpoint, RESUME: state}, model_file(self.opt, "current"))
            if is_best:
                atomic_save(checkpoint, model_file(self.opt, "best"))
                self.logger.info("new best model: mIoU %.4f at iteration %d", iou, model.iter)
            if last:
                atomic_save(checkpoint, model_file(self.opt, "last"))
                self.logger.info("last model: mIoU %.4f at iteration %d", iou, model.iter)

    def resume(self, model: CustomModel, datasets: Any) -> None:
        """Continue an interrupted run from the current checkpoint in the log dir, if there is one:
        model, optimisers, schedules, prototypes, data position and random state (restored last)."""
        opt, logger = self.opt, self.logger
        path = model_file(opt, "current")
        if not unwritable(opt.logdir):  # a read-only log dir holds a finished run at most
            for target in (path, model_file(opt, "best")):
                remove_stale_temp_files(target)  # left by a kill during a write
        if opt.restart or not os.path.isfile(path):
            return
        checkpoint = load_checkpoint(path, what="current checkpoint",
                                     hint="delete it or pass --restart to start over")
        state = checkpoint.get(RESUME) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or "rng" not in state:
            raise OptionError(f"{path} holds no resume state of this version (written by the reference code or "
                              "an older version?): move it away or pass --restart to start over")
        manifest.check_training_inputs(state.get("inputs"), self.inputs, opt.logdir)
        load_training_state(model, state)
        self.best = state.get("best")
        if is_main() and not unwritable(opt.logdir):
            repair_best(opt, checkpoint, logger)
        own = own_process_state(state, logger)
        try:
            load_process_state(own, datasets, process_nets(model))
            set_rng_state(own["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{path}: its per-process state does not load ({err})") from None
        logger.info("resumed from %s at iteration %d (best mIoU %.4f)", path, model.iter, model.best_iou)

    def finish(self) -> None:
        """A finished run looked at again: make sure its last checkpoint exists (main process, writable log dir)."""
        if is_main() and not unwritable(self.opt.logdir):
            repair_last(self.opt, self.logger)
