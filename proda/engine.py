"""What the ProDA entry points share: start-up, distributed set-up, evaluation, file names.

Written once here so that train.py, calc_prototype.py, generate_pseudo_label.py and test.py
stay short (the reference repeats `get_logger` and the validation loop in each script).
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from proda.distributed import in_process_group
from proda.metrics import runningScore
from proda.options import parse_opt
from proda.utils import CheckpointError, OptionError, get_device, get_logger, set_trust_checkpoint

# What the scripts that only run a trained model force (prototypes, pseudo labels, test):
# unaugmented, unshuffled images in order (the reference forces noaug and noshuffle), the
# model of --resume_path always loaded, and no saved pseudo labels read.
INFERENCE_OPTIONS = {"noaug": True, "noshuffle": True, "no_resume": False, "used_save_pseudo": False}

# SYNTHIA papers report mIoU over 13 classes: the 16-class set without wall, fence and pole.
SYNTHIA_13_OF_16 = [0, 1, 2, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]


INTERRUPTED_STATUS = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says where and how to go on."""


def user_errors() -> Tuple[type, ...]:
    """Exceptions that describe a user-fixable problem and are shown as one line.

    OSError covers PermissionError, a full disk and the like: the user's to fix, not a bug.
    """
    from proda.data import DatasetError  # local import: keeps `--help` fast
    return (CheckpointError, DatasetError, OptionError, OSError)


def one_line(err: BaseException) -> str:
    """An error as one line; a DataLoader worker's re-raised error keeps only its original message."""
    text = str(err).strip() or type(err).__name__
    if "Original Traceback" in text:  # "Caught X in DataLoader worker ..." + the worker's traceback
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def unwritable(path: str) -> Optional[str]:
    """Why `path` (a folder or file to create) cannot be written, or None."""
    path = os.path.abspath(path)
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if os.path.exists(path) and probe == path and os.path.isdir(path):
        return None if os.access(path, os.W_OK) else "is not writable"
    if probe != path and not os.path.isdir(probe):
        return f"cannot be created: {probe} is a file"
    target = probe if probe != path else os.path.dirname(path)
    return None if os.access(target, os.W_OK | os.X_OK) else f"cannot be written: {target} is not writable"


def check_outputs(opt: argparse.Namespace, outputs: Sequence[str]) -> None:
    """Refuse, before any work, output paths (--logdir and the entry's own) that cannot be written."""
    for key in ("logdir", *outputs):
        path = getattr(opt, key)
        why = unwritable(path) if path else None
        if why:
            raise OptionError(f"--{key} {path} {why}")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices), as the reference scripts do."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_distributed(opt: argparse.Namespace) -> Tuple[int, int]:
    """Join the torchrun process group when launched by torchrun; returns (rank, world size).

    Each process drives one GPU (cuda:LOCAL_RANK); its batch and device were resolved with the
    options (options.process_share), so nothing here changes them.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    use_cuda = torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(get_device(opt.device))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), world


def is_main_process() -> bool:
    """True on the process that logs and writes files (rank 0, or the only process)."""
    return not in_process_group() or dist.get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op without a process group)."""
    if in_process_group():
        dist.barrier()


def run(main: Callable[[argparse.Namespace, logging.Logger], None], description: str,
        argv: Optional[Sequence[str]] = None, entry: Optional[str] = None,
        overrides: Optional[Mapping[str, Any]] = None, outputs: Sequence[str] = ()) -> None:
    """Parse and resolve the options (frozen), set up distributed mode and logging, run `main`,
    report user errors in one line.

    `entry` names the entry point (its --help groups), `overrides` are option values it forces
    (INFERENCE_OPTIONS), `outputs` the options (besides --logdir) whose paths it writes; they
    are checked before any work. A user error exits 1 (2 for contradicting options), Ctrl-C 130.
    """
    opt = parse_opt(argv, description=description, entry=entry, overrides=overrides)
    logger = None
    set_trust_checkpoint(opt.trust_checkpoint)
    try:
        check_outputs(opt, outputs)
        init_distributed(opt)
        logger = get_logger(opt.logdir, console=is_main_process())
        if not is_main_process():
            logger.setLevel(logging.WARNING)
        logger.info("RUNDIR: %s", opt.logdir)
        logger.info("options: %s", vars(opt))
        main(opt, logger)
    except KeyboardInterrupt as err:
        report(logger, str(err) if isinstance(err, Interrupted) else
               "interrupted; rerun the same command to continue", prefix="")
        sys.exit(INTERRUPTED_STATUS)
    except user_errors() as err:
        report(logger, f"error: {one_line(err)}")
        sys.exit(2 if isinstance(err, OptionError) else 1)
    finally:
        set_trust_checkpoint(False)
        if in_process_group():
            dist.destroy_process_group()


def report(logger: Optional[logging.Logger], message: str, prefix: Optional[str] = None) -> None:
    """One line on stderr (and in the run log when there is one)."""
    if logger is not None:
        for handler in logger.handlers:  # the log file gets it; the console gets exactly one line below
            if isinstance(handler, logging.FileHandler):
                handler.emit(logging.LogRecord(logger.name, logging.ERROR, "", 0, message, None, None))
    name = os.path.basename(sys.argv[0]) if prefix is None else prefix
    print(f"{name}: {message}" if name else message, file=sys.stderr, flush=True)


def model_file(opt: argparse.Namespace, kind: str) -> str:
    """Checkpoint path in the log dir, named as the reference names it (kind: current | best | last [added])."""
    return os.path.join(opt.logdir, f"from_{opt.src_dataset}_to_{opt.tgt_dataset}_on_{opt.model_name}_{kind}_model.pkl")


def prototype_file(opt: argparse.Namespace, dataset: str) -> str:
    """Prototype file beside --resume_path, named as the reference names it."""
    return os.path.join(os.path.dirname(opt.resume_path), f"prototypes_on_{dataset}_from_{opt.model_name}")


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Logits of `net` upsampled to the input size (bilinear, align_corners=True as the reference)."""
    out = net(images)["out"]
    return F.interpolate(out, size=images.shape[2:], mode="bilinear", align_corners=True)


@torch.no_grad()
def evaluate(net: nn.Module, loader: Iterable, n_class: int, device: torch.device,
             on_batch: Optional[Callable[[dict, torch.Tensor], None]] = None,
             desc: str = "val") -> runningScore:
    """Confusion matrix of `net` (already in eval mode) over `loader`; on_batch sees each prediction."""
    score = runningScore(n_class)
    for batch in tqdm(loader, desc=desc, leave=False, disable=not is_main_process()):
        images = batch["img"].to(device)
        pred = predict(net, images).argmax(1)
        score.update(batch["label"].numpy(), pred.cpu().numpy())
        if on_batch is not None:
            on_batch(batch, pred)
    return score


def iou_table(score: runningScore, class_names: List[str]) -> Tuple[str, Dict[str, float]]:
    """Markdown table of per-class IoU (%) with mIoU, and the numbers as a dict."""
    metrics, class_iou = score.get_scores()
    rows = ["| class | IoU (%) |", "| --- | ---: |"]
    per_class = {}
    for idx, name in enumerate(class_names):
        iou = float(class_iou[idx]) * 100
        per_class[name] = iou
        rows.append(f"| {name} | {iou:.2f} |")
    miou = float(metrics["Mean IoU : \t"]) * 100
    rows.append(f"| **mIoU** | **{miou:.2f}** |")
    results = {"mIoU": miou, "per_class_iou": per_class,
               "overall_acc": float(metrics["Overall Acc: \t"]) * 100,
               "mean_acc": float(metrics["Mean Acc : \t"]) * 100}
    if len(class_names) == 16:
        ious = np.array([float(class_iou[i]) for i in SYNTHIA_13_OF_16])
        results["mIoU13"] = float(np.nanmean(ious)) * 100
        rows.append(f"| **mIoU (13 classes)** | **{results['mIoU13']:.2f}** |")
    return "\n".join(rows), results


def colorize(decode_segmap: Callable[[np.ndarray], np.ndarray], labels: torch.Tensor) -> torch.Tensor:
    """N x H x W label maps -> N x 3 x H x W colour images in [0, 1] via the dataset's palette."""
    rgbs = [torch.from_numpy(decode_segmap(lbl.cpu().numpy())).permute(2, 0, 1) for lbl in labels]
    return torch.stack(rgbs).float()
