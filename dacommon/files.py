"""Files written whole or not at all, and whether a folder can be written; torch-free, so that the
shell helpers that check outputs (scripts/proda_lib.sh, proda.manifest) start in a fraction of a
second.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, List, NamedTuple, Optional, Union

PathLike = Union[str, Path]

TEMP_PREFIX = ".tmp_"  # atomic_write's temporary files: .tmp_<target name>.<random>

# the errors of a disk (full, read-only, refused) that atomic_write reports in one line naming the file
_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


def size_text(n: int) -> str:
    """A byte count for people: 532 B, 12.3 kB, 4.1 MB, ..."""
    value, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def free_space(path: PathLike) -> int:
    """Bytes free to this user on the file system that holds `path` (or its nearest existing parent)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


# ----------------------------------------------------------------------------- atomic writes

def stale_temp_files(path: PathLike) -> List[str]:
    """Temporary files a killed atomic_write of `path` left behind (same folder, same target name)."""
    folder = os.path.dirname(os.path.abspath(path))
    prefix = f"{TEMP_PREFIX}{os.path.basename(path)}."
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if n.startswith(prefix)]


def remove_stale_temp_files(path: PathLike) -> None:
    """Delete what a killed write of `path` left (a temp file per kill: GBs at full scale)."""
    for tmp in stale_temp_files(path):
        try:
            os.remove(tmp)
        except FileNotFoundError:  # removed by someone else meanwhile
            pass


class _WriteErrors:
    """A file object that remembers the first OSError its writes raise.

    torch.save's zip writer turns the OSError of a full disk into "RuntimeError: [enforce fail
    at inline_container.cc] unexpected pos"; remembering the OSError lets atomic_write report
    the real cause.
    """

    def __init__(self, f: BinaryIO) -> None:
        self.f, self.error = f, None

    def write(self, data: Any) -> int:
        """f.write, the OSError it raises remembered."""
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str) -> Any:
        """Everything else (flush, tell, seek, ...) of the wrapped file."""
        return getattr(self.f, name)


def write_error(path: PathLike, err: OSError, written: int) -> OSError:
    """One-line OSError for a failed write of `path`: a full disk says how much space is free and
    about how much the file needs (the file it replaces, or at least what was written before)."""
    folder = os.path.dirname(os.path.abspath(path))
    if err.errno == errno.ENOSPC:
        try:
            free = size_text(free_space(folder))
        except OSError:
            free = "unknown"
        previous = os.path.getsize(path) if os.path.isfile(path) else 0
        need = f"about {size_text(previous)}" if previous >= written else f"more than {size_text(written)}"
        return OSError(err.errno, f"no space left on the device to write {path}: it needs {need}, "
                                  f"{free} free in {folder}; the files already there are intact")
    if err.errno == errno.EROFS:
        return OSError(err.errno, f"cannot write {path}: {folder} is on a read-only file system")
    return OSError(err.errno, f"cannot write {path}: {err.strerror or err}")


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any], shared: bool = False) -> None:
    """Call write(file) on a temporary file in the same folder, then rename it over `path`.

    An interrupted run therefore never leaves a half-written file behind; the temporary file is
    created by open() (exclusively, with the permissions open() gives), and temporary files of
    the same target left by a killed earlier write are removed first. An OS error (a full disk,
    a read-only folder) leaves no temporary file and becomes one OSError naming `path`.

    `shared`: other processes may write the same file at the same time (tent's data caches and
    source models): their temporary files are left alone, and an OS error is raised as the OS
    reported it, for the caller to word.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp, f = None, None
    try:
        os.makedirs(folder, exist_ok=True)
        if not shared:
            remove_stale_temp_files(path)
        tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.path.basename(path)}.{secrets.token_hex(6)}")
        with open(tmp, "xb") as raw:
            f = _WriteErrors(raw)
            write(f)
        os.replace(tmp, path)
    except BaseException as err:
        written = _size(tmp)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        cause = f.error if f is not None and f.error is not None else err
        if isinstance(cause, OSError) and cause.errno in _DISK_ERRORS:
            raise (cause if shared else write_error(path, cause, written)) from None
        raise


def _size(path: Optional[str]) -> int:
    """Size of a file, 0 when it is absent."""
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


_HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and the preemption signal of clusters
_HOLD = {"depth": 0, "held": None}  # nesting of interrupts_deferred, and the first signal that came


def _hold_signal(signum: int, frame: Any) -> None:
    """Handler while writes are held: remember the (first) signal."""
    _HOLD["held"] = _HOLD["held"] or signum


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) and SIGTERM while files are written and deliver the signal once they
    are all written.

    A KeyboardInterrupt inside torch.save's zip writer becomes a RuntimeError (and a traceback),
    and the files of one save (current, best, last checkpoints) belong together. The held signal
    is raised again once the previous handlers are back, so it does what it would have done
    (KeyboardInterrupt, proda.signals' SIGTERM handler, or the default action). Nested scopes
    share the outermost one; outside the main thread signals cannot be handled, so nothing is held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = _HOLD["depth"] == 0
    previous = {}
    if outermost:
        _HOLD["held"] = None
        previous = {sig: signal.signal(sig, _hold_signal) for sig in _HELD_SIGNALS}
    _HOLD["depth"] += 1
    try:
        yield
    finally:
        _HOLD["depth"] -= 1
        if outermost:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if outermost and _HOLD["held"]:
        held, _HOLD["held"] = _HOLD["held"], None
        signal.raise_signal(held)


# ----------------------------------------------------------------------------- writability

class Blocker(NamedTuple):
    """What stops files being created: `where` is a file (`is_file`) or a folder that refuses them."""

    where: str
    is_file: bool
    reason: str  # the OS's reason a folder refuses new files ("" for a file)


def write_blocker(path: PathLike, folder: bool = True) -> Optional[Blocker]:
    """What stops files being created at `path` (or in the folders to create for it), or None.

    `where` is the nearest existing path on the way (as given: relative stays relative).
    `folder` False: `path` is a file to create or replace, so an existing file there is fine and
    its folder is the one tested. Two tests, both must pass: a file created there (the only
    honest one: read-only mounts, root's rights) and os.access.
    """
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not folder and existing.is_file():
        existing = path.parent
    if not existing.is_dir():
        return Blocker(str(existing), True, "")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return Blocker(str(existing), False, e.strerror or str(e))
    if not os.access(existing, os.W_OK | os.X_OK):
        return Blocker(str(existing), False, os.strerror(errno.EACCES))
    return None
