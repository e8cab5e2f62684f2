"""Seed-averaged streams: mean ± std over runs that differ only in RNG_SEED (mariodoebler averages seeds 1-5).

    for s in 1 2 3 4 5; do
        python cifar10c.py --cfg cfgs/protocols/cifar10_continual.yaml RNG_SEED $s SAVE_DIR runs/rng$s
    done
    python -m tent.average runs/rng*/*_stream.json

Under PROTOCOL.PEER mariodoebler, RNG_SEED reshuffles (and, with NUM_EX, resamples) every piece of
the stream, so each seed is another stream of the same setting. Reads each run's `*_stream.json`
and prints the per-severity table with "mean ± std" in every cell, and each method's mean error
over the stream's pieces (the number mariodoebler logs) as mean ± std over the runs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import report


def load_run(path: Path) -> Tuple[report.Results, Dict[str, float]]:
    """One run's pooled errors per corruption x severity and its stream means (%), from its stream JSON."""
    payload = json.loads(path.read_text())
    pieces = {m: [report.PieceResult(**p) for p in ps] for m, ps in payload["pieces"].items()}
    return {m: report.pooled_errors(ps) for m, ps in pieces.items()}, payload["stream_mean_error_percent"]


def summary(paths: Sequence[Path]) -> str:
    """The mean ± std tables per severity and the stream means over the runs, as Markdown."""
    runs = [load_run(p) for p in paths]
    per_run: report.SeedResults = {i: results for i, (results, _) in enumerate(runs)}
    lines: List[str] = []
    for severity in report.severities(per_run[0]):
        lines += [f"error (%), severity {severity}, mean ± std over {len(runs)} runs:",
                  report.mean_std_table(per_run, severity), ""]
    for method in runs[0][1]:
        mean, std = report.mean_std(np.array([[r[1][method]] for r in runs]))
        lines.append(f"mean error over the stream's pieces, {method}: {mean[0]:.2f} ± {std[0]:.2f} %")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the summary of the given stream JSON files; one line and status 1 if one cannot be read."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="+", type=Path, help="*_stream.json files of runs with different RNG_SEED")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.streams if not p.is_file()]
    if missing:  # a shell glob that matched nothing arrives as the pattern itself
        print(f"error: no stream file {missing[0]} (the *_stream.json that each run writes into its SAVE_DIR; "
              f"run cifar10c.py once per RNG_SEED first)", file=sys.stderr)
        return 1
    try:
        print(summary(args.streams))
    except (OSError, ValueError, KeyError, TypeError) as e:
        runs = "run" if len(args.streams) == 1 else "runs"
        print(f"error: cannot average {len(args.streams)} {runs}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
