"""Ctrl-C and SIGTERM during a ProDA run: both end it like Ctrl-C (after the checkpoint set being
written is complete: dacommon.files.interrupts_deferred), and the signal is remembered so that
the run's last line and exit status say which one came (130 for SIGINT, 143 for SIGTERM).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator, Optional

from dacommon.errors import INTERRUPTED as INTERRUPTED_STATUS
from dacommon.errors import TERMINATED as TERMINATED_STATUS

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: Optional[int] = None  # the stop signal this process got during the run, if any


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; the message says where and how to go on."""

    def __init__(self, message: str = "", status: int = INTERRUPTED_STATUS) -> None:
        super().__init__(message)
        self.status = status


class Terminated(KeyboardInterrupt):
    """SIGTERM (preemption, `kill`, torchrun stopping its workers), raised like Ctrl-C."""

    status = TERMINATED_STATUS


def _raise_terminated(signum: int, frame: Any) -> None:
    """The handler of both stop signals: remember the signal, raise Terminated (SIGTERM) or
    KeyboardInterrupt (SIGINT, as Python's own handler does)."""
    global _received
    _received = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM are handled and remembered (stop_signal); the handlers that were
    there come back afterwards. Outside the main thread signals cannot be handled: nothing changes."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_signal() -> Optional[int]:
    """SIGINT or SIGTERM when this process was told to stop, else None."""
    return _received


def interrupt_status(err: BaseException) -> int:
    """Exit status of a run ended by `err` (a KeyboardInterrupt): 143 for SIGTERM, else 130."""
    return getattr(err, "status", TERMINATED_STATUS if stop_signal() == signal.SIGTERM else INTERRUPTED_STATUS)


def interrupted_message(where: str = "") -> str:
    """The one line of a stopped run: which signal, where, and how to go on."""
    what = "terminated (SIGTERM)" if stop_signal() == signal.SIGTERM else "interrupted"
    return f"{what} {where}; rerun the same command to resume" if where else \
        f"{what}; rerun the same command to continue"
