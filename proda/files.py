"""Files written whole or not at all, and the errors of options and files; torch-free, so that the
shell helpers that check outputs (scripts/proda_lib.sh, proda.manifest) start in a fraction of a
second. proda.utils re-exports every name.
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from typing import Any, BinaryIO, Callable, Iterator, List


class OptionError(ValueError):
    """Options that contradict each other or the files on disk."""


class CheckpointError(RuntimeError):
    """A checkpoint or prototype file that is missing, corrupt or of the wrong shape."""


TEMP_PREFIX = ".tmp_"  # atomic_write's temporary files: .tmp_<target name>.<random>


def stale_temp_files(path: str) -> List[str]:
    """Temporary files a killed atomic_write of `path` left behind (same folder, same target name)."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f"{TEMP_PREFIX}{os.path.basename(path)}."
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.startswith(prefix)]


def remove_stale_temp_files(path: str) -> None:
    """Delete what a killed write of `path` left (a temp file per kill: GBs at full scale)."""
    for tmp in stale_temp_files(path):
        try:
            os.remove(tmp)
        except FileNotFoundError:  # removed by someone else meanwhile
            pass


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Call write(file) on a temporary file in the same folder, then rename it over `path`.

    An interrupted run therefore never leaves a half-written file behind; the temporary file
    gets the permissions open() would give (mkstemp's are 0600), and temporary files of the
    same target left by a killed earlier write are removed first.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.path.basename(path)}.", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


_HOLD = {"depth": 0, "held": False}  # nesting of interrupts_deferred, and whether a SIGINT came


def _hold_sigint(signum: int, frame: Any) -> None:
    """SIGINT handler while writes are held: remember it."""
    _HOLD["held"] = True


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) while files are written and raise it once they are all written.

    A KeyboardInterrupt inside torch.save's zip writer becomes a RuntimeError (and a traceback),
    and the files of one save (current, best, last checkpoints) belong together. Nested scopes
    share the outermost one; outside the main thread signals cannot be handled, so nothing is held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _HOLD["depth"] == 0
    if outermost:
        _HOLD["held"] = False
    previous = signal.signal(signal.SIGINT, _hold_sigint) if outermost else None
    _HOLD["depth"] += 1
    try:
        yield
    finally:
        _HOLD["depth"] -= 1
        if outermost:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if outermost and _HOLD["held"]:
        _HOLD["held"] = False
        raise KeyboardInterrupt
