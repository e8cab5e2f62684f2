"""The errors of options and files, and one run per folder; torch-free, so that the shell helpers
that check outputs (scripts/proda_lib.sh, proda.manifest) start in a fraction of a second.
Files are written whole by dacommon.files.
"""
from __future__ import annotations

import os
from typing import Optional

from dacommon.files import write_blocker


class OptionError(ValueError):
    """Options that contradict each other or the files on disk."""


class CheckpointError(RuntimeError):
    """A checkpoint or prototype file that is missing, corrupt or of the wrong shape."""


def unwritable(path: str) -> Optional[str]:
    """Why `path` (a folder or file to create) cannot be written, or None."""
    path = os.path.abspath(path)
    blocker = write_blocker(path, folder=False)
    if blocker and blocker.is_file:
        return f"cannot be created: {blocker.where} is a file"
    if blocker and blocker.where == path:
        return "is not writable"
    return blocker and f"cannot be written: {blocker.where} is not writable"


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
