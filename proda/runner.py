"""How every ProDA entry point runs: options, pre-flight checks of its outputs, distributed set-up,
logging, one run per log dir, and user errors, Ctrl-C and SIGTERM ended in one line.

Written once here so that train.py, calc_prototype.py, generate_pseudo_label.py and test.py
stay short (the reference repeats `get_logger` and the start-up in each script).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import sys
import threading
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from dacommon import distributed
from dacommon.device import get_device
from dacommon.errors import one_line
from proda.files import CheckpointError, FolderLock, OptionError, unwritable
from proda.options import parse_opt
from proda.signals import Interrupted, interrupt_status, interrupted_message, stop_signal, stop_signals
from proda.utils import get_logger, set_trust_checkpoint

# What the scripts that only run a trained model force (prototypes, pseudo labels, test):
# unaugmented, unshuffled images in order (the reference forces noaug and noshuffle), the
# model of --resume_path always loaded, and no saved pseudo labels read.
INFERENCE_OPTIONS = {"noaug": True, "noshuffle": True, "no_resume": False, "used_save_pseudo": False}


def user_errors() -> Tuple[type, ...]:
    """Exceptions that describe a user-fixable problem and are shown as one line.

    OSError covers PermissionError, a full disk and the like: the user's to fix, not a bug.
    """
    from proda.data import DatasetError  # local import: keeps `--help` fast
    return (CheckpointError, DatasetError, OptionError, OSError)


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


def peer_failure(err: BaseException) -> bool:
    """True for the error a collective raises when another process of the run died or stopped."""
    if not distributed.in_process_group() or not isinstance(err, RuntimeError):
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
    if distributed.is_main():
        lock = FolderLock(opt.logdir)
        try:
            os.makedirs(opt.logdir, exist_ok=True)
            lock.acquire()
        except (OptionError, OSError) as err:  # told to every process: none may wait at the broadcast
            lock, problem = None, one_line(err, errno_text=True)
    problem = distributed.broadcast(problem)
    if problem:
        raise OptionError(problem) if distributed.is_main() else QuietExit(2)
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
    thread_hook = threading.excepthook
    threading.excepthook = _thread_errors
    log_errors, logging.raiseExceptions = logging.raiseExceptions, False  # no "--- Logging error ---" traceback
    try:
        with stop_signals():
            try:
                check_outputs(opt, outputs, allow_readonly_logdir=lock)
                distributed.init(get_device(opt.device))
                if lock and not unwritable(opt.logdir):
                    folder_lock = lock_logdir(opt)
                logger = get_logger(opt.logdir, console=distributed.is_main())
                if not distributed.is_main():
                    logger.setLevel(logging.WARNING)
                logger.info("RUNDIR: %s", opt.logdir)
                logger.info("options: %s", vars(opt))
                main(opt, logger)
            except KeyboardInterrupt as err:
                if distributed.is_main():  # under torchrun every process gets the signal: one line is enough
                    report(logger, str(err) if isinstance(err, Interrupted) else interrupted_message(), prefix="")
                sys.exit(interrupt_status(err))
            except QuietExit as err:
                sys.exit(err.status)
            except user_errors() as err:
                report(logger, f"error: {one_line(err, errno_text=True)}")
                sys.exit(2 if isinstance(err, OptionError) else 1)
            except Exception as err:  # noqa: BLE001 - only the two cases below; anything else is a bug
                if stop_signal() is not None:  # a collective broken by a peer that stopped on the same signal
                    sys.exit(interrupt_status(err))
                if peer_failure(err):
                    why = one_line(err, errno_text=True)
                    report(logger, f"error: another process of this torchrun run failed ({why}); "
                                   "rerun the same command to resume from the last checkpoint")
                    sys.exit(1)
                raise
    finally:
        set_trust_checkpoint(False)
        threading.excepthook = thread_hook
        logging.raiseExceptions = log_errors
        if folder_lock is not None:
            folder_lock.release()
        if distributed.in_process_group():
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
