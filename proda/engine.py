"""The names ProDA's entry points imported from here before the split by concept: runner
(start-up, errors), signals (Ctrl-C, SIGTERM), evaluation (IoU table), paths (file names),
dacommon.distributed. Import them from there; this module only re-exports them.
"""
from dacommon.distributed import barrier, is_main as is_main_process  # noqa: F401
from proda.evaluation import SYNTHIA_13_OF_16, colorize, evaluate, iou_table, predict  # noqa: F401
from proda.files import unwritable  # noqa: F401
from proda.paths import model_file, prototype_file  # noqa: F401
from proda.runner import (INFERENCE_OPTIONS, QuietExit, check_logdir_writable, check_outputs,  # noqa: F401
                          lock_logdir, one_line, peer_failure, report, run, seed_everything, user_errors)
from proda.signals import (INTERRUPTED_STATUS, TERMINATED_STATUS, Interrupted, Terminated,  # noqa: F401
                           _raise_terminated, interrupt_status, interrupted_message, stop_signal)
from proda.utils import CheckpointError, OptionError  # noqa: F401
