"""Small helpers shared by every ProDA module: logging, devices, flips, checkpoint files."""
from __future__ import annotations

import datetime
import logging
import os
import tempfile
from typing import Any, BinaryIO, Callable, Optional

import torch

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
    handlers = [logging.FileHandler(os.path.join(logdir, f"run_{stamp}.log"))]
    if console:
        handlers.append(logging.StreamHandler())
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def get_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else the CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fliplr(img: torch.Tensor) -> torch.Tensor:
    """Flip an N x C x H x W tensor horizontally, on whatever device it lives."""
    return img.flip(3)


class OptionError(ValueError):
    """Options that contradict each other or the files on disk."""


class CheckpointError(RuntimeError):
    """A checkpoint or prototype file that is missing, corrupt or of the wrong shape."""


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Call write(file) on a temporary file in the same folder, then rename it over `path`.

    An interrupted run therefore never leaves a half-written file behind.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj: Any, path: str) -> None:
    """torch.save written atomically (see atomic_write): checkpoints are never half-written."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str, what: str = "checkpoint", hint: Optional[str] = None,
                    map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True where the file allows it, and one clear error otherwise.

    `what` names the file in the error message and `hint` says how to create or obtain it.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as safe_err:  # older files may pickle numpy scalars or other objects
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception:
            raise CheckpointError(f"{what} {path} is corrupt or not a torch file: {safe_err}") from None
