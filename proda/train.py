"""Train DeepLabv2 with ProDA, one stage per run.

    python -m proda.train --config configs/gta2city_stage1.py [--flag value ...]
    torchrun --nproc_per_node=4 -m proda.train --config configs/gta2city_stage1.py
    python -m proda.launch --nproc_per_node=4 -m proda.train ...   # torchrun, ending in one line

Stages: warm_up (source CE + adversarial alignment), src_only (source CE only), stage1
(prototype-rectified soft pseudo labels + prototype consistency), stage2 / stage3
(self-distillation from the previous stage). Every --val_interval iterations the model is
evaluated on the target val split; the current and best checkpoints are written to the log
dir in the reference format, the current one with everything needed to resume exactly (random
state, data position, the inputs of the run). "best" is selected on that evaluation set, as the
reference selects it; the final model is also kept as the last checkpoint (_last_model.pkl).
Re-running the same command after an interruption (Ctrl-C, SIGTERM, a kill) resumes from it bit
for bit, under torchrun too (each process's own state is saved); a finished run exits at once; a
run whose inputs changed, or a second run into a log dir in use, is refused
(see docs/proda-reliability.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Dict, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from proda import engine, guards, manifest
from proda.data import create_dataset
from proda.distributed import in_process_group
from proda.metrics import averageMeter
from proda.models.accumulation import freeze_bn_statistics
from proda.models.adaptation_modelv2 import CustomModel
from proda.resume import (data_state, gather_process_states, load_process_state, process_state,
                          rng_state, set_rng_state)
from proda.utils import (CheckpointError, OptionError, atomic_save, get_device, interrupts_deferred,
                         load_checkpoint, remove_stale_temp_files)

try:  # tensorboard is a declared dependency; keep training possible without it
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None


def load_prototypes(opt: argparse.Namespace, model: CustomModel, logger: logging.Logger) -> None:
    """Stage 1 starts from the target prototypes that calc_prototype.py wrote beside --resume_path."""
    path = engine.prototype_file(opt, opt.tgt_dataset)
    hint = f"run: python -m proda.calc_prototype --resume_path {opt.resume_path} (same --n_class)"
    stale = manifest.check_prototypes_source(path, opt.resume_path)
    if stale:
        raise OptionError(stale)
    try:  # the setter checks the shape and moves the prototypes to the model's device
        model.objective_vectors = load_checkpoint(path, what="prototype file", hint=hint)
    except ValueError as err:
        raise OptionError(f"prototype file {path} does not fit this model: {err} (wrong --n_class?)") from None
    logger.info("loaded prototypes from %s", path)


def learning_rates(model: CustomModel) -> Dict[str, float]:
    """Current base learning rate of the segmentation network and, in warm-up, the discriminator."""
    rates = {"lr/ResNet101": model.BaseOpti.param_groups[0]["lr"]}
    if hasattr(model, "optimizer_D"):
        rates["lr/FCDiscriminator"] = model.optimizer_D.param_groups[0]["lr"]
    return rates


def process_nets(model: CustomModel) -> Dict[str, torch.nn.Module]:
    """The networks whose buffers each process keeps for itself (the trained ones and the EMA network)."""
    nets = {net.__class__.__name__: net for net in model.nets}
    if model.opt.ema:
        nets["ema"] = model.BaseNet_ema
    return nets


def save_checkpoints(model: CustomModel, datasets, opt: argparse.Namespace, iou: float,
                     inputs: dict, logger: logging.Logger, last: bool = False,
                     processes: Optional[list] = None) -> None:
    """Write the current checkpoint (with resume state), when mIoU did not drop the best one, and
    after the final iteration (`last`) the last one.

    Called after scheduler_step, so the saved schedules are where the next iteration starts.
    The current file is written first and names the best one; a kill between the two writes
    leaves a best file that resume() rewrites from the current one (they hold the same model);
    a kill before the last file is written leaves it to repair_last (a rerun of the finished run).
    `processes`: every process's own state (resume.process_state, rank order), saved as
    'processes' in the resume state so that a torchrun run resumes each process exactly.
    """
    is_best = iou >= model.best_iou
    if is_best:
        model.best_iou = iou
        model.best_record = {"iter": model.iter + 1, "best_iou": iou}
    # as the reference: 'iter' is the next iteration and both files' 'best_iou' is this mIoU
    checkpoint = model.reference_checkpoint(iters=model.iter + 1, best_iou=iou)
    state = {**model.training_state(), "rng": rng_state(), "data": data_state(datasets), "inputs": inputs,
             "best": getattr(model, "best_record", None),
             "processes": processes if processes is not None else [process_state(datasets, process_nets(model))]}
    with interrupts_deferred():  # Ctrl-C and SIGTERM land after the whole set is written
        atomic_save({**checkpoint, "resume": state}, engine.model_file(opt, "current"))
        if is_best:
            atomic_save(checkpoint, engine.model_file(opt, "best"))
            logger.info("new best model: mIoU %.4f at iteration %d", iou, model.iter)
        if last:
            atomic_save(checkpoint, engine.model_file(opt, "last"))
            logger.info("last model: mIoU %.4f at iteration %d", iou, model.iter)


def validation(model: CustomModel, datasets, opt: argparse.Namespace, logger: logging.Logger,
               writer: Optional["SummaryWriter"], device: torch.device) -> Optional[float]:
    """Evaluate on the target val split (main process) and log it; returns the mIoU as a
    fraction on the main process, None on the others."""
    for name, lr in learning_rates(model).items():
        logger.info("learning rate is %g for %s net", lr, name.split("/", 1)[1])
    iou = None
    if engine.is_main_process():
        model.eval(logger=logger)
        val_set = datasets.target_valid_loader.dataset
        first = {}

        def keep_first(batch: dict, pred: torch.Tensor) -> None:
            if not first:
                first.update(img=batch["img"][:4], label=batch["label"][:4], pred=pred[:4].cpu())

        net = model.BaseNet  # the unwrapped network: DDP's forward would wait for the other ranks
        score = engine.evaluate(net, datasets.target_valid_loader, opt.n_class, device, on_batch=keep_first)
        table, results = engine.iou_table(score, val_set.class_names[1:])
        logger.info("validation at iteration %d:\n%s", model.iter, table)
        iou = results["mIoU"] / 100  # the reference stores mIoU as a fraction
        if writer is not None:
            writer.add_scalar("val/mIoU", results["mIoU"], model.iter)
            for cls, value in results["per_class_iou"].items():
                writer.add_scalar(f"val_iou/{cls}", value, model.iter)
            writer.add_images("val/input", first["img"].clamp(0, 1), model.iter)
            writer.add_images("val/prediction", engine.colorize(val_set.decode_segmap, first["pred"]), model.iter)
            writer.add_images("val/ground_truth", engine.colorize(val_set.decode_segmap, first["label"]), model.iter)
    engine.barrier()
    return iou


def checkpoint_after_validation(model: CustomModel, datasets, opt: argparse.Namespace, iou: Optional[float],
                                inputs: dict, logger: logging.Logger, last: bool = False) -> None:
    """Write the checkpoints of a validation (main process) once the schedules have stepped, with
    every process's own state (gathered from all of them)."""
    processes = gather_process_states(process_state(datasets, process_nets(model)))
    if iou is not None:
        save_checkpoints(model, datasets, opt, iou, inputs, logger, last=last, processes=processes)
        logger.info("Best iou until now is %.4f", model.best_iou)
    engine.barrier()


def log_pseudo_labels(writer: Optional["SummaryWriter"], target: dict, decode_segmap, step: int) -> None:
    """Show the target images of a batch and the pseudo labels they are trained on."""
    if writer is None:
        return
    writer.add_images("train/target", target["img"][:4].clamp(0, 1), step)
    if "lp" in target:
        writer.add_images("train/pseudo_label", engine.colorize(decode_segmap, target["lp"][:4]), step)
    elif "lpsoft" in target:
        writer.add_images("train/soft_pseudo_label", engine.colorize(decode_segmap, target["lpsoft"][:4].argmax(1)), step)


def repair_best(opt: argparse.Namespace, checkpoint: dict, logger: logging.Logger) -> None:
    """Make the best file the one the current checkpoint names (a kill between the two writes)."""
    record = checkpoint["resume"].get("best")
    path = engine.model_file(opt, "best")
    if record is None or record["iter"] != checkpoint["iter"]:
        return  # the best model is older than the current one and was written before it
    best = load_checkpoint(path, what="best checkpoint") if os.path.isfile(path) else None
    if best is not None and best.get("iter") == record["iter"]:
        return
    atomic_save({k: v for k, v in checkpoint.items() if k != "resume"}, path)
    logger.info("repaired %s from the current checkpoint (iteration %d)", path, record["iter"] - 1)


def repair_last(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """A finished run without its last checkpoint (a kill after the final current write, or a run of
    an earlier version): write it from the current checkpoint, which holds the final model."""
    path, current = engine.model_file(opt, "last"), engine.model_file(opt, "current")
    remove_stale_temp_files(path)
    if not os.path.isfile(current):
        return
    checkpoint = load_checkpoint(current, what="current checkpoint")
    last = load_checkpoint(path, what="last checkpoint") if os.path.isfile(path) else None
    if last is not None and last.get("iter") == checkpoint.get("iter"):
        return
    atomic_save({k: v for k, v in checkpoint.items() if k != "resume"}, path)
    logger.info("wrote %s from the current checkpoint (iteration %d)", path, checkpoint.get("iter", 0) - 1)


def resume(model: CustomModel, datasets, opt: argparse.Namespace, inputs: dict, logger: logging.Logger) -> None:
    """Continue an interrupted run from the current checkpoint in the log dir, if there is one:
    model, optimisers, schedules, prototypes, data position and random state (restored last)."""
    path = engine.model_file(opt, "current")
    if not engine.unwritable(opt.logdir):  # a read-only log dir holds a finished run at most
        for target in (path, engine.model_file(opt, "best")):
            remove_stale_temp_files(target)  # left by a kill during a write
    if opt.restart or not os.path.isfile(path):
        return
    checkpoint = load_checkpoint(path, what="current checkpoint",
                                 hint="delete it or pass --restart to start over")
    state = checkpoint.get("resume") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "rng" not in state:
        raise OptionError(f"{path} holds no resume state of this version (written by the reference code or an "
                          "older version?): move it away or pass --restart to start over")
    manifest.check_training_inputs(state.get("inputs"), inputs, opt.logdir)
    model.load_training_state(state)
    model.best_record = state.get("best")
    if engine.is_main_process() and not engine.unwritable(opt.logdir):
        repair_best(opt, checkpoint, logger)
    own = own_process_state(state, logger)
    try:
        load_process_state(own, datasets, process_nets(model))
        set_rng_state(own["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: its per-process state does not load ({err})") from None
    logger.info("resumed from %s at iteration %d (best mIoU %.4f)", path, model.iter, model.best_iou)


def own_process_state(state: dict, logger: logging.Logger) -> dict:
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


def train(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Run one training stage to its end, validating and checkpointing along the way."""
    engine.seed_everything(opt.seed)
    device = get_device(opt.device)
    inputs = manifest.training_inputs(opt, engine.prototype_file(opt, opt.tgt_dataset)
                                      if opt.stage == "stage1" else None)
    datasets = create_dataset(opt, logger)
    model = CustomModel(opt, logger)
    if opt.stage == "stage1":
        load_prototypes(opt, model, logger)
    resume(model, datasets, opt, inputs, logger)

    loader = datasets.target_train_loader
    total = opt.epochs * len(loader)
    if opt.max_iters > 0:
        total = min(total, opt.max_iters)
    if model.iter >= total:
        logger.info("training already finished (%d / %d iterations): nothing to do", model.iter, total)
        if engine.is_main_process() and not engine.unwritable(opt.logdir):
            repair_last(opt, logger)
        return
    guards.check_schedule(opt, total)  # refuses iterations past --train_iters (learning rate 0)
    engine.check_logdir_writable(opt)  # a read-only log dir was let through for a finished run only
    try:
        run_iterations(model, datasets, opt, total, inputs, logger, device)
    except KeyboardInterrupt as err:
        raise engine.Interrupted(engine.interrupted_message(f"at iteration {model.iter}"),
                                 status=engine.interrupt_status(err)) from None
    logger.info("finished %s after %d iterations; best mIoU %.2f%%", opt.stage, model.iter, model.best_iou * 100)


def log_losses(model: CustomModel, opt: argparse.Namespace, losses: Dict[str, float], epoch: int,
               time_meter: averageMeter, logger: logging.Logger, writer: Optional["SummaryWriter"]) -> None:
    """The reference's progress line, and the losses and learning rates for tensorboard."""
    i = model.iter
    text = "  ".join(f"{k}: {v:.4f}" for k, v in losses.items())
    logger.info("Epochs [%d/%d] Iter [%d/%d]  %s Time/Image: %.4f", epoch + 1, opt.epochs, i + 1,
                opt.train_iters, text, time_meter.avg / opt.bs)
    time_meter.reset()
    if writer is not None:
        for k, v in {**losses, **learning_rates(model)}.items():
            writer.add_scalar(k if "/" in k else f"train/{k}", v, i)


def train_mode(model: CustomModel, opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Train mode for the iteration, with --freeze_bn (BN in eval mode) or --freeze_bn_stats applied."""
    model.train(logger=logger)
    if opt.freeze_bn:
        model.freeze_bn_apply()
    if getattr(opt, "freeze_bn_stats", False):  # [added] running statistics only; the affine parameters still train
        for net in model.nets + model.nets_DP:
            freeze_bn_statistics(net)


def run_iterations(model: CustomModel, datasets, opt: argparse.Namespace, total: int, inputs: dict,
                   logger: logging.Logger, device: torch.device) -> None:
    """Iterations model.iter+1 .. total; an epoch resumed mid-way starts at its next unseen batch."""
    loader = datasets.target_train_loader
    writer = SummaryWriter(opt.logdir) if (SummaryWriter is not None and engine.is_main_process()) else None
    decode_segmap = datasets.target_valid_loader.dataset.decode_segmap
    time_meter = averageMeter()
    validated_at = -1
    progress = tqdm(total=total, initial=model.iter, desc=opt.stage, disable=not engine.is_main_process())
    try:
        while model.iter < total:
            epoch = model.iter // len(loader)
            datasets.set_epoch(epoch, skip_batches=model.iter - epoch * len(loader))
            for target in loader:
                source = datasets.source_train_loader.next()
                model.iter += 1
                i = model.iter
                start = time.time()
                train_mode(model, opt, logger)
                model.optimizer_zerograd()
                losses = model.stage_step(source, target)  # models/steps.py: STAGE_STEPS
                guards.check_step(model, opt, losses)  # NaN / inf weights: stop before any checkpoint is written
                time_meter.update(time.time() - start)
                progress.update(1)

                if (i + 1) % opt.print_interval == 0:  # the reference's off-by-one, kept
                    log_losses(model, opt, losses, epoch, time_meter, logger, writer)
                    if writer is not None:
                        log_pseudo_labels(writer, target, decode_segmap, i)

                iou = None
                if (i + 1) % opt.val_interval == 0:
                    iou = validation(model, datasets, opt, logger, writer, device)
                    validated_at = model.iter
                model.scheduler_step()
                if validated_at == model.iter:
                    checkpoint_after_validation(model, datasets, opt, iou, inputs, logger,
                                                last=model.iter >= total)
                if model.iter >= total:
                    break
        if validated_at != model.iter:  # evaluate and checkpoint the final model as well
            iou = validation(model, datasets, opt, logger, writer, device)
            checkpoint_after_validation(model, datasets, opt, iou, inputs, logger, last=True)
    finally:  # closed before any message: the bar must not be the last line on the console
        progress.close()
    if writer is not None:
        writer.close()


def main(argv=None) -> None:
    """Command-line entry point."""
    engine.run(train, description=__doc__.splitlines()[0], argv=argv, entry="train", lock=True)


if __name__ == "__main__":
    main()
