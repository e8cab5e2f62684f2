"""Small helpers shared by every ProDA module: logging, flips, checkpoint files."""
from __future__ import annotations

import datetime
import logging
import os
import pickle
from typing import Any, List, Optional

import torch

from dacommon.checkpoints import numpy_safe_globals, torch_load, weights_only_refusal
from dacommon.files import atomic_write, interrupts_deferred
from proda.files import CheckpointError

LOGGER_NAME = "ptsemseg"  # the reference's logger name
IGNORE_INDEX = 250  # ProDA's "no label" value in every label map, loss and pseudo label


def get_logger(logdir: str, console: bool = True) -> logging.Logger:
    """Logger writing to logdir/run_<timestamp>.log and, optionally, the console."""
    os.makedirs(logdir, exist_ok=True)
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):  # a second call (tests, chained stages) must not duplicate lines
        logger.removeHandler(handler)
        handler.close()
    stamp = datetime.datetime.now().strftime("%Y_%m_%d_%H_%M_%S")
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    handlers: List[logging.Handler] = []
    try:
        handlers.append(logging.FileHandler(os.path.join(logdir, f"run_{stamp}.log")))
    except OSError:  # a read-only log dir (a finished run looked at again): the console only
        pass
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def fliplr(img: torch.Tensor) -> torch.Tensor:
    """Flip an N x C x H x W tensor horizontally, on whatever device it lives."""
    return img.flip(3)


def atomic_save(obj: Any, path: str) -> None:
    """torch.save written atomically (see atomic_write), Ctrl-C held until it is complete."""
    with interrupts_deferred():
        atomic_write(path, lambda f: torch.save(obj, f))


TRUST_FLAG = "--trust_checkpoint"
_trust_checkpoints = False  # the run's --trust_checkpoint (proda.runner.run sets it): load_checkpoint's default


def set_trust_checkpoint(trust: bool) -> None:
    """Allow (True) or refuse (False, the default) files that only a full unpickler can read."""
    global _trust_checkpoints
    _trust_checkpoints = bool(trust)


def load_checkpoint(path: str, what: str = "checkpoint", hint: Optional[str] = None,
                    map_location: Any = "cpu", trust: Optional[bool] = None) -> Any:
    """torch.load(weights_only=True) with an allow-list for NumPy scalars; never runs code unless
    trusted (`trust`; None: the run's --trust_checkpoint). Any failure is one CheckpointError line
    naming the file.

    `what` names the file in the error message and `hint` says how to create or obtain it.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        return torch_load(path, False, map_location, allowed=numpy_safe_globals())
    except Exception as err:  # noqa: BLE001 - every failure becomes one line
        refused = weights_only_refusal(err, path)  # the exception type and the file's bytes, not torch's wording
        if refused is None:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if isinstance(err, pickle.UnpicklingError):  # torch's text would advise weights_only=False
                reason = "it starts neither as a zip nor as a pickle"
            raise CheckpointError(f"{what} {path} is corrupt or not a torch file: {reason}") from None
    if not (_trust_checkpoints if trust is None else trust):
        raise CheckpointError(f"{what} {path} pickles objects that could run code when loaded ({refused}); "
                              f"refused (pass {TRUST_FLAG} only if you trust this file)")
    try:
        return torch_load(path, True, map_location)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{what} {path} could not be loaded even with {TRUST_FLAG}: "
                              f"{type(err).__name__}") from None
