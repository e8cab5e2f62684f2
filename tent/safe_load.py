"""Loading checkpoints without running code from them.

A pickle can name any Python callable, so `torch.load(weights_only=False)` on a crafted file
runs arbitrary code. Every checkpoint tent reads (MnistCNN.pt, robustbench's model zoo files,
torchvision's ImageNet weights in the torch hub cache) is therefore loaded with
weights_only=True: tensors, containers and plain numbers only. A file that needs more is
refused with one line naming it and the config key MODEL.TRUST_CHECKPOINT, the only route to an
unrestricted load.

robustbench and torchvision call torch.load themselves (torchvision's hub loader even passes
weights_only=False); `third_party_loads` makes those calls weights-only through torch's own
switch, the TORCH_FORCE_WEIGHTS_ONLY_LOAD environment variable, for the duration of the call.
"""
from __future__ import annotations

import os
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import torch

from .errors import CorruptFileError, TentError, UnsafeCheckpointError

TRUST_KEY = "MODEL.TRUST_CHECKPOINT"
FORCE_SAFE, FORCE_UNSAFE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
PICKLE_PROTO = 0x80  # first byte of a pickle (protocol 2+): torch's legacy format or a raw pickle

PathLike = Union[str, Path]


def load_checkpoint(path: PathLike, trust: bool = False, map_location: Any = "cpu") -> Any:
    """torch.load of `path`, weights-only unless trusted; one-line errors naming the file."""
    with checkpoint_errors(path, trust):
        return torch.load(path, map_location=map_location, weights_only=not trust)


@contextmanager
def third_party_loads(path: PathLike, trust: bool = False) -> Iterator[None]:
    """Make every torch.load inside (robustbench, torchvision) weights-only unless trusted."""
    saved = {name: os.environ.get(name) for name in (FORCE_SAFE, FORCE_UNSAFE)}
    os.environ.pop(FORCE_SAFE if trust else FORCE_UNSAFE, None)  # torch refuses both at once
    os.environ[FORCE_UNSAFE if trust else FORCE_SAFE] = "1"
    try:
        with checkpoint_errors(path, trust):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def checkpoint_errors(path: PathLike, trust: bool) -> Iterator[None]:
    """Turn torch.load's failures on `path` into one-line errors: unsafe (refused) or corrupt."""
    try:
        yield
    except TentError:
        raise
    except OSError as e:
        if e.filename:
            raise  # PermissionError & co name their file: the entry point reports them in one line
        raise CorruptFileError(_corrupt_message(path, e)) from None  # torch's reader on a cut zip
    except pickle.UnpicklingError as e:
        if not trust and _needs_code(Path(path), str(e)):
            raise UnsafeCheckpointError(_unsafe_message(path, str(e))) from None
        raise CorruptFileError(_corrupt_message(path, e)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError) as e:
        raise CorruptFileError(_corrupt_message(path, e)) from None


def _needs_code(path: Path, message: str) -> bool:
    """Whether a weights-only refusal means 'needs a global' rather than 'not a pickle at all'."""
    if "GLOBAL" in message:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(1) == bytes([PICKLE_PROTO])  # a pickle using opcodes torch refuses
    except OSError:
        return False


def _unsafe_message(path: PathLike, message: str) -> str:
    """One line: the file, what it asks to run, and the key that allows it."""
    named = re.search(r"GLOBAL ([\w.]+)", message)
    what = f"it names {named.group(1)}" if named else "it is a pickle beyond tensors and containers"
    return (f"checkpoint {path} can only be loaded by running code stored in it ({what}); refused. "
            f"Set {TRUST_KEY} True only if you trust where the file came from")


def _corrupt_message(path: PathLike, error: BaseException) -> str:
    """One line: the file, torch's reason (first sentence), and how to recover."""
    reason = " ".join(str(error).split()).split(". ")[0] or type(error).__name__
    return (f"checkpoint {path} cannot be read ({reason}): it is corrupt or an incomplete "
            f"download; delete it and download it again")
