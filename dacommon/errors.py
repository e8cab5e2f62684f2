"""Errors shown to users: one line each, never a traceback (torch-free)."""
from __future__ import annotations

INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)
TERMINATED = 143  # ... and by SIGTERM (128 + 15): how clusters preempt a job


def one_line(error: BaseException, errno_text: bool = False) -> str:
    """The error's message on one line.

    A DataLoader worker's re-raised error keeps only the worker's original message. An OSError
    reads 'file: reason' (`errno_text`: Python's own '[Errno N] reason: file', which ProDA's
    documented messages use).
    """
    if isinstance(error, OSError) and error.strerror and not errno_text:
        where = f"{error.filename}: " if error.filename else ""
        text = f"{where}{error.strerror}"
    else:
        text = str(error).strip() or type(error).__name__
    if "Original Traceback" in text:  # "Caught X in DataLoader worker ..." + the worker's traceback
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())
