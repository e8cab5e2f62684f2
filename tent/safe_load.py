"""Loading checkpoints without running code from them.

A pickle can name any Python callable, so `torch.load(weights_only=False)` on a crafted file
runs arbitrary code. Every checkpoint tent reads (MnistCNN.pt, robustbench's model zoo files,
torchvision's ImageNet weights in the torch hub cache) is therefore loaded with
weights_only=True: tensors, containers and plain numbers only. A file that needs more is
refused with one line naming it and the config key MODEL.TRUST_CHECKPOINT, the only route to an
unrestricted load.

robustbench and torchvision call torch.load themselves (torchvision's hub loader even passes
weights_only=False); `third_party_loads` makes those calls weights-only through torch's own
switch (dacommon.checkpoints.forced_weights_only) for the duration of the call. What a refusal
is, and the load itself, live in dacommon.checkpoints; tent words the errors here.
"""
from __future__ import annotations

import pickle
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

from dacommon.checkpoints import forced_weights_only, torch_load, weights_only_refusal

from .errors import CorruptFileError, TentError, UnsafeCheckpointError

TRUST_KEY = "MODEL.TRUST_CHECKPOINT"

PathLike = Union[str, Path]


def load_checkpoint(path: PathLike, trust: bool = False, map_location: Any = "cpu") -> Any:
    """torch.load of `path`, weights-only unless trusted; one-line errors naming the file."""
    with checkpoint_errors(path, trust):
        return torch_load(path, trust, map_location)


@contextmanager
def third_party_loads(path: PathLike, trust: bool = False) -> Iterator[None]:
    """Make every torch.load inside (robustbench, torchvision) weights-only unless trusted."""
    with forced_weights_only(trust), checkpoint_errors(path, trust):
        yield


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


def _unsafe_message(path: PathLike, what: str) -> str:
    """One line: the file, what it asks to run, and the key that allows it."""
    return (f"checkpoint {path} can only be loaded by running code stored in it ({what}); refused. "
            f"Set {TRUST_KEY} True only if you trust where the file came from")


def _corrupt_message(path: PathLike, error: BaseException) -> str:
    """One line: the file, torch's reason (first sentence), and how to recover."""
    reason = " ".join(str(error).split()).split(". ")[0] or type(error).__name__
    return (f"checkpoint {path} cannot be read ({reason}): it is corrupt or an incomplete "
            f"download; delete it and download it again")
