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
from typing import Any, Iterator, Optional, Union

import torch

from .errors import CorruptFileError, TentError, UnsafeCheckpointError

TRUST_KEY = "MODEL.TRUST_CHECKPOINT"
FORCE_SAFE, FORCE_UNSAFE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"

# a torch file is a zip (torch.save) or a pickle of protocol 2+ (legacy torch.save, a raw pickle)
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")

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
        what = None if trust else weights_only_refusal(e, path)
        if what:
            raise UnsafeCheckpointError(_unsafe_message(path, what)) from None
        raise CorruptFileError(_corrupt_message(path, e)) from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError) as e:
        raise CorruptFileError(_corrupt_message(path, e)) from None


def weights_only_refusal(error: BaseException, path: PathLike) -> Optional[str]:
    """What a weights-only torch.load refused in `path` (None: `error` is no such refusal).

    torch raises pickle.UnpicklingError for every refusal of its weights-only unpickler -- a global
    outside its allow-list, one from a module it blocks (os, posix, sys...), an opcode it does not
    run -- and other types for damaged zips (RuntimeError, EOFError). A file that is no pickle at
    all (an HTML error page) also ends in UnpicklingError, so the file must start as torch files
    do: a zip or a pickle. The type and the bytes are the test; torch's wording (which changes
    between releases and recommends weights_only=False) only supplies the global's name.
    """
    if not isinstance(error, pickle.UnpicklingError):
        return None
    try:
        with open(path, "rb") as f:
            if not f.read(4).startswith(TORCH_FILE_STARTS):
                return None
    except OSError:
        return None
    named = re.search(r"GLOBAL ([\w.]+)", str(error))
    return f"it names {named.group(1)}" if named else "it is a pickle beyond tensors and containers"


def _unsafe_message(path: PathLike, what: str) -> str:
    """One line: the file, what it asks to run, and the key that allows it."""
    return (f"checkpoint {path} can only be loaded by running code stored in it ({what}); refused. "
            f"Set {TRUST_KEY} True only if you trust where the file came from")


def _corrupt_message(path: PathLike, error: BaseException) -> str:
    """One line: the file, torch's reason (first sentence), and how to recover."""
    reason = " ".join(str(error).split()).split(". ")[0] or type(error).__name__
    return (f"checkpoint {path} cannot be read ({reason}): it is corrupt or an incomplete "
            f"download; delete it and download it again")
