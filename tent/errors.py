"""User errors: problems a user can fix, reported as one line on stderr with an exit status.

Every error a run can meet because of its input (a bad config value, a missing, corrupt or
unsafe file, an unwritable folder, an OSError such as PermissionError) ends in `exit_status`:
one line naming the key or the file, and a non-zero exit status, never a traceback. Anything
else is a bug in this project and keeps its traceback.
"""
from __future__ import annotations

import logging
from typing import Callable

logger = logging.getLogger(__name__)

INTERRUPTED = 130  # the shell's status for SIGINT


class TentError(Exception):
    """A user error described in one line; `exit_status` is the process exit status it ends in."""

    exit_status = 1


class ConfigError(TentError, ValueError):
    """A config problem, described in one line that names the offending key."""

    exit_status = 2


class MissingResourceError(TentError, RuntimeError):
    """A data file or checkpoint is missing and could not be downloaded (one-sentence message)."""


class CorruptFileError(TentError, ValueError):
    """A data file or checkpoint exists but cannot be read (truncated, wrong format)."""


class UnsafeCheckpointError(TentError):
    """A checkpoint that can only be loaded by running code from it, refused without trust."""

    exit_status = 2


def one_line(error: BaseException) -> str:
    """The error's message on one line (file names and OS reasons for OSErrors)."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        text = f"{where}{error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def exit_status(command: Callable[[], object]) -> int:
    """Run `command`; a user error is logged as one line and turned into its exit status."""
    try:
        command()
    except TentError as e:
        logger.error("error: %s", one_line(e))
        return e.exit_status
    except OSError as e:  # PermissionError, disk full, a file where a folder should be, ...
        logger.error("error: %s", one_line(e))
        return 1
    except KeyboardInterrupt:
        logger.error("interrupted")
        return INTERRUPTED
    return 0
