"""Files written whole or not at all, and the errors of options and files; torch-free, so that the
shell helpers that check outputs (scripts/proda_lib.sh, proda.manifest) start in a fraction of a
second. proda.utils re-exports every name.
"""
from __future__ import annotations

import contextlib
import errno
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


def write_error(path: str, err: OSError, written: int) -> OSError:
    """One-line OSError for a failed write of `path`: a full disk says how much space is free and
    about how much the file needs (the file it replaces, or at least what was written before)."""
    folder = os.path.dirname(os.path.abspath(path))
    if err.errno == errno.ENOSPC:
        # tent's size and free-space helpers, imported only on this failure path: files.py stays torch-free
        from tent.errors import free_space, size_text
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


def atomic_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Call write(file) on a temporary file in the same folder, then rename it over `path`.

    An interrupted run therefore never leaves a half-written file behind; the temporary file
    gets the permissions open() would give (mkstemp's are 0600), and temporary files of the
    same target left by a killed earlier write are removed first. An OS error (a full disk, a
    read-only folder) leaves no temporary file and becomes one OSError naming `path`.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp, f = None, None
    try:
        os.makedirs(folder, exist_ok=True)
        remove_stale_temp_files(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.path.basename(path)}.", dir=folder)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as raw:
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
            raise write_error(path, cause, written) from None
        raise


_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG}


def _size(path: str | None) -> int:
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
    (KeyboardInterrupt, engine's SIGTERM handler, or the default action). Nested scopes share the
    outermost one; outside the main thread signals cannot be handled, so nothing is held.
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


# ----------------------------------------------------------------------------- one run per folder

LOCK_NAME = ".lock"  # in a training log dir: the file a running training holds a flock on


class FolderLock:
    """An advisory lock on a folder (fcntl.flock on FOLDER/.lock) whose holder can be named.

    The kernel releases it when the holding process ends, however it ends, so the lock file of
    a killed run never blocks the next one. The file itself stays empty and unchanged (an
    existing folder's files are never modified by a run that is then refused); the holder is
    found in the kernel's lock table (/proc/locks on Linux) and named by pid, host and command.
    """

    def __init__(self, folder: str, what: str = "--logdir") -> None:
        self.folder, self.what, self.fd = folder, what, None
        self.path = os.path.join(folder, LOCK_NAME)

    def acquire(self) -> None:
        """Take the lock or raise OptionError naming the process that holds it."""
        import fcntl  # POSIX only; imported here so the module still loads elsewhere
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(fd)
            os.close(fd)
            raise OptionError(f"{self.what} {self.folder} is in use by another run ({holder}); wait for it to "
                              f"end or use another {self.what}") from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        """Let the next run in (closing the file releases the lock)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_holder(fd: int) -> str:
    """'pid P on host H: COMMAND' of the process holding a flock on the open file `fd`, as far as
    this machine can tell (a holder on another host of a network file system is not listed)."""
    import shlex
    import socket
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks") as table:
            rows = [line.split() for line in table]
    except OSError:
        return "a process this system cannot name"
    for row in rows:
        if "->" not in row and len(row) >= 6 and row[1] == "FLOCK" and row[5] == key:
            pid = row[4]
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    command = shlex.join(a.decode(errors="replace") for a in f.read().split(b"\0") if a)
            except OSError:
                command = "command not readable"
            return f"pid {pid} on host {socket.gethostname()}: {command}"
    return "a process on another host or in another container"
