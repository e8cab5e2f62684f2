"""torchrun for ProDA's entry points, ending in the project's one line instead of torchrun's report.

    python -m proda.launch --standalone --nproc_per_node=4 -m proda.train --config configs/gta2city_stage1.py

Takes exactly torchrun's arguments and starts the processes the same way (it calls torchrun's
own `run`). Differences, all at the ends of a run:

* The options of a ProDA entry are checked once, before any process starts, with the world
  size the run will have (`--bs 3` on 2 processes): one line, exit 2, nothing spawned.
* torchrun's own log lines and its `ChildFailedError` / `SignalException` tracebacks are not
  printed. A process that failed has said why in one line (the main process for errors every
  process meets); the launcher adds nothing and exits with that process's status.
* A process killed by a signal (OOM killer, `kill -9`) cannot say anything: the launcher's line
  names its rank, pid and signal, and exits 128 + the signal number.
* SIGTERM or Ctrl-C to the launcher reaches every process, which finishes the checkpoint set it
  is writing and stops with one line; the launcher exits 143 (SIGTERM) or 130 (SIGINT).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Dict, Optional, Sequence, Tuple

# ProDA entry modules whose options can be checked before spawning: (entry, forces inference options)
ENTRIES: Dict[str, Tuple[str, bool]] = {"proda.train": ("train", False), "proda.test": ("test", True),
                                        "proda.calc_prototype": ("calc_prototype", True),
                                        "proda.generate_pseudo_label": ("generate_pseudo_label", True)}
PROG = "proda.launch"


def world_size(nnodes: str, nproc_per_node: str) -> Optional[int]:
    """Processes the run will have, when torchrun's arguments fix it (else None)."""
    low, _, high = nnodes.partition(":")
    if high and high != low:  # an elastic range of nodes: the size is known only at rendezvous
        return None
    try:
        return int(low) * int(nproc_per_node)
    except ValueError:  # --nproc_per_node gpu / auto / cpu
        return None


def check_entry_options(module: str, entry_args: Sequence[str], world: Optional[int]) -> None:
    """Parse a ProDA entry's options as each of its processes will (exits 2 with one line if they fail)."""
    if module not in ENTRIES or not world:
        return
    from proda.runner import INFERENCE_OPTIONS  # local: --help of the launcher stays light
    from proda.options import parse_opt
    entry, inference = ENTRIES[module]
    saved = {k: os.environ.get(k) for k in ("WORLD_SIZE", "LOCAL_RANK", "RANK")}
    os.environ.update(WORLD_SIZE=str(world), LOCAL_RANK="0", RANK="0")
    program, sys.argv[0] = sys.argv[0], f"{module.split('.')[-1]}.py"  # the name its processes print
    try:
        parse_opt(list(entry_args), description=module, entry=entry,
                  overrides=INFERENCE_OPTIONS if inference else None)
    finally:
        sys.argv[0] = program
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def failure_line(rank: int, pid: int, exitcode: int) -> Optional[str]:
    """The launcher's line for a process that died by a signal (others reported for themselves)."""
    if exitcode >= 0:
        return None
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return (f"{PROG}: the process of rank {rank} (pid {pid}) was killed by {name}; the other processes were "
            "stopped; rerun the same command to resume from the last checkpoint")


def exit_status(exitcode: int) -> int:
    """A process's exit code as a shell status (128 + signal for a signal)."""
    return 128 - exitcode if exitcode < 0 else exitcode


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command-line entry point: torchrun's arguments."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = torchrun.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.module:
        check_entry_options(args.training_script, args.training_script_args,
                            world_size(args.nnodes, str(args.nproc_per_node)))
    for name in list(logging.root.manager.loggerDict):  # torchrun's warnings: they would follow the processes' line
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun.run(args)
    except SignalException as err:  # the processes got the signal and said so; the launcher stops too
        sys.exit(128 + int(err.sigval))
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        line = failure_line(rank, failure.pid, failure.exitcode)
        if line:
            print(line, file=sys.stderr, flush=True)
        sys.exit(exit_status(failure.exitcode))


if __name__ == "__main__":
    main()
