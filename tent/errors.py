"""User errors: problems a user can fix, reported as one line on stderr with an exit status.

Every error a run can meet because of its input (a bad config value, a missing, corrupt or
unsafe file, an unwritable folder, an OSError such as PermissionError) ends in `exit_status`:
one line naming the key or the file, and a non-zero exit status, never a traceback. Anything
else is a bug in this project and keeps its traceback.
"""
from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Callable, Optional, Union

from dacommon.errors import INTERRUPTED, one_line
from dacommon.files import free_space, size_text

logger = logging.getLogger(__name__)


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


class OutputError(TentError):
    """An output file that could not be written (a full disk, a read-only folder), named in the line."""


def write_failed(path: Union[str, Path], needed: Optional[int], error: OSError) -> OutputError:
    """One line for a failed write of `path`: the OS reason and, for a full disk, the space it needed."""
    text = f"cannot write {path}: {error.strerror or error}"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        wanted = "" if needed is None else f"it needs {size_text(needed)}; "
        text += f" ({wanted}{size_text(free_space(path))} free there)"
    return OutputError(text)


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
