"""What the ProDA entry points share: start-up, distributed set-up, evaluation, file names.

Written once here so that train.py, calc_prototype.py, generate_pseudo_label.py and test.py
stay short (the reference repeats `get_logger` and the validation loop in each script).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import signal
import sys
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from proda.distributed import in_process_group
from proda.files import FolderLock
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
TERMINATED_STATUS = 143  # ... and by SIGTERM (128 + 15): how clusters preempt a job


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; the message says where and how to go on."""

    def __init__(self, message: str = "", status: int = INTERRUPTED_STATUS) -> None:
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM (preemption, `kill`, torchrun stopping its workers), raised like Ctrl-C."""

    status = TERMINATED_STATUS


_SIGNALLED = {"signum": None}  # the stop signal this process got, if any


def _raise_terminated(signum: int, frame: Any) -> None:
    """SIGTERM handler: end the run as Ctrl-C does (checkpoint writes hold it: files.interrupts_deferred)."""
    _SIGNALLED["signum"] = signum
    raise Terminated()


def _note_sigint(signum: int, frame: Any) -> None:
    """SIGINT handler: Python's KeyboardInterrupt, remembered."""
    _SIGNALLED["signum"] = signum
    raise KeyboardInterrupt()


def stop_signal() -> Optional[int]:
    """SIGINT or SIGTERM when this process was told to stop, else None."""
    return _SIGNALLED["signum"]


def interrupt_status(err: BaseException) -> int:
    """Exit status of a run ended by `err` (a KeyboardInterrupt): 143 for SIGTERM, else 130."""
    return getattr(err, "status", TERMINATED_STATUS if stop_signal() == signal.SIGTERM else INTERRUPTED_STATUS)


def interrupted_message(where: str = "") -> str:
    """The one line of a stopped run: which signal, where, and how to go on."""
    what = "terminated (SIGTERM)" if stop_signal() == signal.SIGTERM else "interrupted"
    return f"{what} {where}; rerun the same command to resume" if where else \
        f"{what}; rerun the same command to continue"


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


def check_outputs(opt: argparse.Namespace, outputs: Sequence[str], allow_readonly_logdir: bool = False) -> None:
    """Refuse, before any work, output paths (--logdir and the entry's own) that cannot be written.

    `allow_readonly_logdir`: an existing read-only --logdir is left to the entry (a finished
    training run there is reported as finished; anything else is refused by check_logdir_writable).
    """
    for key in ("logdir", *outputs):
        path = getattr(opt, key)
        why = unwritable(path) if path else None
        if why and key == "logdir" and allow_readonly_logdir and os.path.isdir(path):
            continue
        if why:
            raise OptionError(f"--{key} {path} {why}")


def check_logdir_writable(opt: argparse.Namespace) -> None:
    """The refusal check_outputs left to the entry: --logdir must be writable for work to start."""
    why = unwritable(opt.logdir)
    if why:
        raise OptionError(f"--logdir {opt.logdir} {why}")


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


def peer_failure(err: BaseException) -> bool:
    """True for the error a collective raises when another process of the run died or stopped."""
    if not in_process_group() or not isinstance(err, RuntimeError):
        return False
    backend_error = getattr(dist, "DistBackendError", ())
    text = str(err)
    return (bool(backend_error) and isinstance(err, backend_error)) or any(
        key in text for key in ("Connection closed by peer", "Connection reset by peer", "gloo", "NCCL",
                                "Broken pipe", "Socket Timeout"))


def lock_logdir(opt: argparse.Namespace) -> Optional[FolderLock]:
    """One training run per log dir: rank 0 takes the lock, every process learns whether it could.

    A second run would delete the first one's in-flight temporary checkpoint files and
    overwrite its checkpoints; it is refused in one line naming the run that holds the folder.
    The other ranks exit with the same status and leave the line to rank 0.
    """
    lock, problem = None, None
    if is_main_process():
        lock = FolderLock(opt.logdir)
        try:
            os.makedirs(opt.logdir, exist_ok=True)
            lock.acquire()
        except (OptionError, OSError) as err:  # told to every process: none may wait at the broadcast
            lock, problem = None, one_line(err)
    if in_process_group():
        shared = [problem]
        dist.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem:
        raise OptionError(problem) if is_main_process() else QuietExit(2)
    return lock


class QuietExit(Exception):
    """A non-main process ends with this status; the main process reports why."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _thread_errors(args: threading.ExceptHookArgs) -> None:
    """Background threads' OS errors (tensorboard's event writer on a full or read-only disk) are
    not printed: the main thread meets the same error at its next write and reports it in one line."""
    if issubclass(args.exc_type, OSError):
        return
    threading.__excepthook__(args)


def run(main: Callable[[argparse.Namespace, logging.Logger], None], description: str,
        argv: Optional[Sequence[str]] = None, entry: Optional[str] = None,
        overrides: Optional[Mapping[str, Any]] = None, outputs: Sequence[str] = (),
        lock: bool = False) -> None:
    """Parse and resolve the options (frozen), set up distributed mode and logging, run `main`,
    report user errors in one line.

    `entry` names the entry point (its --help groups), `overrides` are option values it forces
    (INFERENCE_OPTIONS), `outputs` the options (besides --logdir) whose paths it writes; they
    are checked before any work. `lock`: one run per --logdir (lock_logdir). A user error exits
    1 (2 for contradicting options), Ctrl-C 130, SIGTERM 143 (both after the checkpoint set being
    written is complete); under torchrun, a process whose peer died exits 1 with one line.
    """
    opt = parse_opt(argv, description=description, entry=entry, overrides=overrides)
    logger, folder_lock = None, None
    set_trust_checkpoint(opt.trust_checkpoint)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread_hook = threading.excepthook
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGTERM, _raise_terminated)
        signal.signal(signal.SIGINT, _note_sigint)
    threading.excepthook = _thread_errors
    log_errors, logging.raiseExceptions = logging.raiseExceptions, False  # no "--- Logging error ---" traceback
    _SIGNALLED["signum"] = None
    try:
        check_outputs(opt, outputs, allow_readonly_logdir=lock)
        init_distributed(opt)
        if lock and not unwritable(opt.logdir):
            folder_lock = lock_logdir(opt)
        logger = get_logger(opt.logdir, console=is_main_process())
        if not is_main_process():
            logger.setLevel(logging.WARNING)
        logger.info("RUNDIR: %s", opt.logdir)
        logger.info("options: %s", vars(opt))
        main(opt, logger)
    except KeyboardInterrupt as err:
        if is_main_process():  # under torchrun every process gets the signal: one line is enough
            report(logger, str(err) if isinstance(err, Interrupted) else
                   interrupted_message(), prefix="")
        sys.exit(interrupt_status(err))
    except QuietExit as err:
        sys.exit(err.status)
    except user_errors() as err:
        report(logger, f"error: {one_line(err)}")
        sys.exit(2 if isinstance(err, OptionError) else 1)
    except Exception as err:  # noqa: BLE001 - only the two cases below; anything else is a bug
        if stop_signal() is not None:  # a collective broken by a peer that stopped on the same signal
            sys.exit(interrupt_status(err))
        if peer_failure(err):
            report(logger, f"error: another process of this torchrun run failed ({one_line(err)}); "
                           "rerun the same command to resume from the last checkpoint")
            sys.exit(1)
        raise
    finally:
        set_trust_checkpoint(False)
        threading.excepthook = thread_hook
        logging.raiseExceptions = log_errors
        if main_thread:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if folder_lock is not None:
            folder_lock.release()
        if in_process_group():
            with contextlib.suppress(Exception):  # a dead peer must not turn the exit into a traceback
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
