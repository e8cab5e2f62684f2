"""Loading checkpoints without running code from them.

A pickle can name any Python callable, so `torch.load(weights_only=False)` on a crafted file
runs arbitrary code. Every checkpoint is therefore read with weights_only=True (tensors,
containers, plain numbers and the globals a caller allows); only an explicit `trust` from the
user (tent's MODEL.TRUST_CHECKPOINT, ProDA's --trust_checkpoint) unlocks the full unpickler.
Each package words its own errors; what a refusal is and how torch is told are decided here.
"""
from __future__ import annotations

import os
import pickle
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

FORCE_SAFE, FORCE_UNSAFE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"

# a torch file is a zip (torch.save) or a pickle of protocol 2+ (legacy torch.save, a raw pickle)
TORCH_FILE_STARTS = (b"PK\x03\x04", b"\x80")

PathLike = Union[str, Path]


def torch_load(path: PathLike, trust: bool, map_location: Any = "cpu", allowed: Sequence[Any] = ()) -> Any:
    """torch.load of `path`: weights-only (plus the `allowed` globals) unless `trust`."""
    with torch.serialization.safe_globals(list(allowed)):
        return torch.load(path, map_location=map_location, weights_only=not trust)


@contextmanager
def forced_weights_only(trust: bool) -> Iterator[None]:
    """Make every torch.load inside (third-party code) weights-only unless trusted, through torch's
    own switch, the TORCH_FORCE_WEIGHTS_ONLY_LOAD environment variable; restored afterwards."""
    saved = {name: os.environ.get(name) for name in (FORCE_SAFE, FORCE_UNSAFE)}
    os.environ.pop(FORCE_SAFE if trust else FORCE_UNSAFE, None)  # torch refuses both at once
    os.environ[FORCE_UNSAFE if trust else FORCE_SAFE] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


def numpy_safe_globals() -> List[Any]:
    """Exactly what the released ProDA checkpoints pickle besides tensors: 'best_iou' is the
    NumPy float64 that runningScore returns (a scalar, its dtype and the dtype's class),
    under the NumPy 2 and NumPy 1 module names."""
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: List[Any] = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    float64_dtype = getattr(getattr(np, "dtypes", None), "Float64DType", None)
    if float64_dtype is not None:
        allowed.append(float64_dtype)
    return allowed
