"""Run several `python -m proda.test` command lines in one process: the offline demo's test rows.

    python -m proda.demo.test_rows ARGS... [::: ARGS...]...

Each group of arguments between `:::` separators is one proda.test command line; the groups
run one after another in this process, so torch, the data code, torch's optimiser machinery
(tent) and matplotlib (the stream plots) load once instead of once per row. Every run seeds
and builds its own network, loader and adaptation state (proda.test does), so each results
file equals the one of the same command run on its own (tests/proda/test_proda_demo_speedups.py
compares them bit for bit). The first failing run stops the rest with its exit status.
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

SEPARATOR = ":::"


def split_runs(argv: Sequence[str]) -> List[List[str]]:
    """The command lines between the separators."""
    runs: List[List[str]] = [[]]
    for arg in argv:
        if arg == SEPARATOR:
            runs.append([])
        else:
            runs[-1].append(arg)
    return runs


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line: proda.test's arguments, one run per group."""
    runs = split_runs(sys.argv[1:] if argv is None else argv)
    if any(not run for run in runs):
        sys.exit(f"test_rows: error: an empty command line (two '{SEPARATOR}' in a row, or one at an end)")
    from proda import test as proda_test  # after the check: a usage error costs no torch import
    for run in runs:
        proda_test.main(run)


if __name__ == "__main__":
    main()
