"""Train DeepLabv2 with ProDA, one stage per run.

    python -m proda.train --config configs/gta2city_stage1.py [--flag value ...]
    torchrun --nproc_per_node=4 -m proda.train --config configs/gta2city_stage1.py
    python -m proda.launch --nproc_per_node=4 -m proda.train ...   # torchrun, ending in one line

Stages: warm_up (source CE + adversarial alignment), src_only (source CE only), stage1
(prototype-rectified soft pseudo labels + prototype consistency), stage2 / stage3
(self-distillation from the previous stage). Every --val_interval iterations the model is
evaluated on the target val split; the current and best checkpoints are written to the log
dir in the reference format (proda/checkpoint.py), the current one with everything needed to resume exactly (random
state, data position, the inputs of the run). "best" is selected on that evaluation set, as the
reference selects it; the final model is also kept as the last checkpoint (_last_model.pkl).
Re-running the same command after an interruption (Ctrl-C, SIGTERM, a kill) resumes from it bit
for bit, under torchrun too (each process's own state is saved); a finished run exits at once; a
run whose inputs changed, or a second run into a log dir in use, is refused
(see docs/reliability.md).
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Dict, Optional

import torch
from tqdm import tqdm

from dacommon.device import get_device
from dacommon.distributed import barrier, is_main
from proda import guards, manifest
from proda.checkpoint import CheckpointSet, load_prototypes
from proda.data import create_dataset
from proda.evaluation import colorize, evaluate, iou_table
from proda.metrics import averageMeter
from proda.models.accumulation import freeze_bn_statistics
from proda.models.adaptation_modelv2 import CustomModel
from proda.paths import prototype_file
from proda.runner import check_logdir_writable, run, seed_everything
from proda.signals import Interrupted, interrupt_status, interrupted_message

try:  # tensorboard is a declared dependency; keep training possible without it
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None


def uses_prototypes(opt: argparse.Namespace) -> bool:
    """Stage 1 starts from calc_prototype's file when a component reads the prototypes (denoising,
    structure learning, moving prototypes); the self-training ablation rows use none of them."""
    return opt.stage == "stage1" and (opt.proto_rectify or opt.moving_prototype or opt.proto_consistW > 0)


def train(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Run one training stage to its end, validating and checkpointing along the way."""
    seed_everything(opt.seed)
    device = get_device(opt.device)
    inputs = manifest.training_inputs(opt, prototype_file(opt, opt.tgt_dataset)
                                      if uses_prototypes(opt) else None)
    datasets = create_dataset(opt, logger)
    model = CustomModel(opt, logger)
    if uses_prototypes(opt):
        load_prototypes(opt, model, logger)
    checkpoints = CheckpointSet(opt, inputs, logger)
    checkpoints.resume(model, datasets)

    loader = datasets.target_train_loader
    total = opt.epochs * len(loader)
    if opt.max_iters > 0:
        total = min(total, opt.max_iters)
    if model.iter >= total:
        logger.info("training already finished (%d / %d iterations): nothing to do", model.iter, total)
        checkpoints.finish()  # writes the last checkpoint if a kill came before it
        return
    guards.check_schedule(opt, total)  # refuses iterations past --train_iters (learning rate 0)
    check_logdir_writable(opt)  # a read-only log dir was let through for a finished run only
    try:
        run_iterations(model, datasets, checkpoints, opt, total, logger, device)
    except KeyboardInterrupt as err:
        raise Interrupted(interrupted_message(f"at iteration {model.iter}"),
                                 status=interrupt_status(err)) from None
    logger.info("finished %s after %d iterations; best mIoU %.2f%%", opt.stage, model.iter, model.best_iou * 100)


def run_iterations(model: CustomModel, datasets, checkpoints: CheckpointSet, opt: argparse.Namespace, total: int,
                   logger: logging.Logger, device: torch.device) -> None:
    """Iterations model.iter+1 .. total; an epoch resumed mid-way starts at its next unseen batch."""
    loader = datasets.target_train_loader
    writer = SummaryWriter(opt.logdir) if (SummaryWriter is not None and is_main()) else None
    decode_segmap = datasets.target_valid_loader.dataset.decode_segmap
    time_meter = averageMeter()
    validated_at = -1
    progress = tqdm(total=total, initial=model.iter, desc=opt.stage, disable=not is_main())
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
                    checkpoints.save(model, datasets, iou, last=model.iter >= total)
                if model.iter >= total:
                    break
        if validated_at != model.iter:  # evaluate and checkpoint the final model as well
            iou = validation(model, datasets, opt, logger, writer, device)
            checkpoints.save(model, datasets, iou, last=True)
    finally:  # closed before any message: the bar must not be the last line on the console
        progress.close()
    if writer is not None:
        writer.close()


def train_mode(model: CustomModel, opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Train mode for the iteration, with --freeze_bn (BN in eval mode) or --freeze_bn_stats applied."""
    model.train(logger=logger)
    if opt.freeze_bn:
        model.freeze_bn_apply()
    if opt.freeze_bn_stats:  # [added] running statistics only; the affine parameters still train
        for net in model.nets + model.nets_DP:
            freeze_bn_statistics(net)


def validation(model: CustomModel, datasets, opt: argparse.Namespace, logger: logging.Logger,
               writer: Optional["SummaryWriter"], device: torch.device) -> Optional[float]:
    """Evaluate on the target val split (main process) and log it; returns the mIoU as a
    fraction on the main process, None on the others."""
    for name, lr in learning_rates(model).items():
        logger.info("learning rate is %g for %s net", lr, name.split("/", 1)[1])
    iou = None
    if is_main():
        model.eval(logger=logger)
        val_set = datasets.target_valid_loader.dataset
        first = {}

        def keep_first(batch: dict, pred: torch.Tensor) -> None:
            if not first:
                first.update(img=batch["img"][:4], label=batch["label"][:4], pred=pred[:4].cpu())

        net = model.BaseNet  # the unwrapped network: DDP's forward would wait for the other ranks
        score = evaluate(net, datasets.target_valid_loader, opt.n_class, device, on_batch=keep_first)
        table, results = iou_table(score, val_set.class_names[1:])
        logger.info("validation at iteration %d:\n%s", model.iter, table)
        iou = results["mIoU"] / 100  # the reference stores mIoU as a fraction
        if writer is not None:
            writer.add_scalar("val/mIoU", results["mIoU"], model.iter)
            for cls, value in results["per_class_iou"].items():
                writer.add_scalar(f"val_iou/{cls}", value, model.iter)
            writer.add_images("val/input", first["img"].clamp(0, 1), model.iter)
            writer.add_images("val/prediction", colorize(val_set.decode_segmap, first["pred"]), model.iter)
            writer.add_images("val/ground_truth", colorize(val_set.decode_segmap, first["label"]), model.iter)
    barrier()
    return iou


def learning_rates(model: CustomModel) -> Dict[str, float]:
    """Current base learning rate of the segmentation network and, in warm-up, the discriminator."""
    rates = {"lr/ResNet101": model.BaseOpti.param_groups[0]["lr"]}
    if hasattr(model, "optimizer_D"):
        rates["lr/FCDiscriminator"] = model.optimizer_D.param_groups[0]["lr"]
    return rates


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


def log_pseudo_labels(writer: Optional["SummaryWriter"], target: dict, decode_segmap, step: int) -> None:
    """Show the target images of a batch and the pseudo labels they are trained on."""
    if writer is None:
        return
    writer.add_images("train/target", target["img"][:4].clamp(0, 1), step)
    if "lp" in target:
        writer.add_images("train/pseudo_label", colorize(decode_segmap, target["lp"][:4]), step)
    elif "lpsoft" in target:
        writer.add_images("train/soft_pseudo_label", colorize(decode_segmap, target["lpsoft"][:4].argmax(1)), step)


def main(argv=None) -> None:
    """Command-line entry point."""
    run(train, description=__doc__.splitlines()[0], argv=argv, entry="train", lock=True)


if __name__ == "__main__":
    main()
