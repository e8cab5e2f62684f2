"""Train DeepLabv2 with ProDA, one stage per run.

    python -m proda.train --config configs/gta2city_stage1.py [--flag value ...]
    torchrun --nproc_per_node=4 -m proda.train --config configs/gta2city_stage1.py

Stages: warm_up (source CE + adversarial alignment), src_only (source CE only), stage1
(prototype-rectified soft pseudo labels + prototype consistency), stage2 / stage3
(self-distillation from the previous stage). Every --val_interval iterations the model is
evaluated on the target val split; the current and best checkpoints are written to the log
dir in the reference format, the current one with everything needed to resume. Re-running the
same command after an interruption resumes from it; a finished run exits at once.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Dict, Optional

import torch
from tqdm import tqdm

from proda import engine
from proda.data import create_dataset
from proda.metrics import averageMeter
from proda.models.adaptation_modelv2 import CustomModel
from proda.utils import OptionError, atomic_save, get_device, load_checkpoint

try:  # tensorboard is a declared dependency; keep training possible without it
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # pragma: no cover
    SummaryWriter = None


def load_prototypes(opt: argparse.Namespace, model: CustomModel, logger: logging.Logger) -> None:
    """Stage 1 starts from the target prototypes that calc_prototype.py wrote beside --resume_path."""
    path = engine.prototype_file(opt, opt.tgt_dataset)
    hint = f"run: python -m proda.calc_prototype --resume_path {opt.resume_path} (same --n_class)"
    try:  # the setter checks the shape and moves the prototypes to the model's device
        model.objective_vectors = load_checkpoint(path, what="prototype file", hint=hint)
    except ValueError as err:
        raise OptionError(f"prototype file {path} does not fit this model: {err} (wrong --n_class?)") from None
    logger.info("loaded prototypes from %s", path)


def train_step(model: CustomModel, opt: argparse.Namespace, source: dict, target: dict,
               device: torch.device) -> Dict[str, float]:
    """One optimisation step of the chosen stage; returns its losses by name."""
    images = source["img"].to(device)
    labels = source["label"].to(device)
    target_image = target["img"].to(device)
    if opt.stage == "warm_up":
        loss_src, loss_g, loss_d = model.step_adv(images, labels, target_image,
                                                  source["img_strong"].to(device), source["params"])
        return {"loss_GTA": loss_src, "loss_G": loss_g, "loss_D": loss_d}
    if opt.stage == "src_only":
        return {"loss_GTA": model.step_source(images, labels)}
    target_lp = target["lp"].to(device) if "lp" in target else None
    if opt.stage == "stage1":
        target_lpsoft = target["lpsoft"].to(device) if "lpsoft" in target else None
        loss, loss_cts, loss_consist = model.step(
            images, labels, target_image, target["img_strong"].to(device), target["params"],
            target_lp, target_lpsoft, target["img_full"].to(device), target["weak_params"])
        return {"loss": loss, "loss_CTS": loss_cts, "loss_consist": loss_consist}
    loss_src, loss = model.step_distillation(images, labels, target_image, target["img_strong"].to(device),
                                             target["params"], target_lp)
    return {"loss_GTA": loss_src, "loss": loss}


def learning_rates(model: CustomModel) -> Dict[str, float]:
    """Current base learning rate of the segmentation network and, in warm-up, the discriminator."""
    rates = {"lr/ResNet101": model.BaseOpti.param_groups[0]["lr"]}
    if hasattr(model, "optimizer_D"):
        rates["lr/FCDiscriminator"] = model.optimizer_D.param_groups[0]["lr"]
    return rates


def save_checkpoints(model: CustomModel, opt: argparse.Namespace, iou: float, logger: logging.Logger) -> None:
    """Write the current checkpoint (with resume state) and, when mIoU did not drop, the best one."""
    is_best = iou >= model.best_iou
    if is_best:
        model.best_iou = iou
    # as the reference: 'iter' is the next iteration and both files' 'best_iou' is this mIoU
    checkpoint = model.reference_checkpoint(iters=model.iter + 1, best_iou=iou)
    atomic_save({**checkpoint, "resume": model.training_state()}, engine.model_file(opt, "current"))
    if is_best:
        atomic_save(checkpoint, engine.model_file(opt, "best"))
        logger.info("new best model: mIoU %.4f at iteration %d", iou, model.iter)


def validation(model: CustomModel, datasets, opt: argparse.Namespace, logger: logging.Logger,
               writer: Optional["SummaryWriter"], device: torch.device) -> None:
    """Evaluate on the target val split (main process), log it, and write the checkpoints."""
    for name, lr in learning_rates(model).items():
        logger.info("learning rate is %g for %s net", lr, name.split("/", 1)[1])
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
        save_checkpoints(model, opt, iou, logger)
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


def resume(model: CustomModel, opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Continue an interrupted run from the current checkpoint in the log dir, if there is one."""
    path = engine.model_file(opt, "current")
    if opt.restart or not os.path.isfile(path):
        return
    checkpoint = load_checkpoint(path, what="current checkpoint",
                                 hint="delete it or pass --restart to start over")
    if "resume" not in checkpoint:
        raise OptionError(f"{path} holds no resume state (written by the reference code?): "
                                 "move it away or pass --restart to start over")
    model.load_training_state(checkpoint["resume"])
    logger.info("resumed from %s at iteration %d (best mIoU %.4f)", path, model.iter, model.best_iou)


def train(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Run one training stage to its end, validating and checkpointing along the way."""
    engine.seed_everything(opt.seed)
    device = get_device(opt.device)
    datasets = create_dataset(opt, logger)
    model = CustomModel(opt, logger)
    if opt.stage == "stage1":
        load_prototypes(opt, model, logger)
    resume(model, opt, logger)

    loader = datasets.target_train_loader
    total = opt.epochs * len(loader)
    if opt.max_iters > 0:
        total = min(total, opt.max_iters)
    if model.iter >= total:
        logger.info("training already finished (%d / %d iterations): nothing to do", model.iter, total)
        return

    writer = SummaryWriter(opt.logdir) if (SummaryWriter is not None and engine.is_main_process()) else None
    decode_segmap = datasets.target_valid_loader.dataset.decode_segmap
    time_meter = averageMeter()
    validated_at = -1
    progress = tqdm(total=total, initial=model.iter, desc=opt.stage, disable=not engine.is_main_process())
    while model.iter < total:
        epoch = model.iter // len(loader)
        datasets.set_epoch(epoch)  # DistributedSampler: a new shuffle per epoch
        for target in loader:
            source = datasets.source_train_loader.next()
            model.iter += 1
            i = model.iter
            start = time.time()
            model.train(logger=logger)
            if opt.freeze_bn:
                model.freeze_bn_apply()
            model.optimizer_zerograd()
            losses = train_step(model, opt, source, target, device)
            time_meter.update(time.time() - start)
            progress.update(1)

            if (i + 1) % opt.print_interval == 0:  # the reference's off-by-one, kept
                text = "  ".join(f"{k}: {v:.4f}" for k, v in losses.items())
                logger.info("Epochs [%d/%d] Iter [%d/%d]  %s Time/Image: %.4f", epoch + 1, opt.epochs, i + 1,
                            opt.train_iters, text, time_meter.avg / opt.bs)
                time_meter.reset()
                if writer is not None:
                    for k, v in {**losses, **learning_rates(model)}.items():
                        writer.add_scalar(k if "/" in k else f"train/{k}", v, i)
                    log_pseudo_labels(writer, target, decode_segmap, i)

            if (i + 1) % opt.val_interval == 0:
                validation(model, datasets, opt, logger, writer, device)
                validated_at = model.iter
            model.scheduler_step()
            if model.iter >= total:
                break
    progress.close()
    if validated_at != model.iter:  # evaluate and checkpoint the final model as well
        validation(model, datasets, opt, logger, writer, device)
    if writer is not None:
        writer.close()
    logger.info("finished %s after %d iterations; best mIoU %.2f%%", opt.stage, model.iter, model.best_iou * 100)


def main(argv=None) -> None:
    """Command-line entry point."""
    engine.run(train, description=__doc__.splitlines()[0], argv=argv)


if __name__ == "__main__":
    main()
