"""Print the offline demo's tables from its test results (scripts/proda_demo.sh calls it).

    python scripts/proda_demo_table.py --seed=S1 [--seed=S2 ...] LABEL BEST.json LAST.json ... -- [...] --

One group of (label, best results file, last results file) rows per seed, each group ended by
"--". One seed: its table. Several: each seed's table, then mean +- sample std over the seeds.
"""
from __future__ import annotations

import json
import statistics
import sys
from typing import Dict, List, Sequence, Tuple

Row = Tuple[str, float, float, float]  # label, best mIoU, last mIoU, s / image (test of the best model)


def read_groups(args: Sequence[str]) -> Tuple[List[str], List[List[Row]]]:
    """The seeds and, per seed, its rows read from the results files."""
    seeds = [a.split("=", 1)[1] for a in args if a.startswith("--seed=")]
    groups, current = [], []
    for arg in [a for a in args if not a.startswith("--seed=")]:
        if arg == "--":
            groups.append(current)
            current = []
        else:
            current.append(arg)
    rows = []
    for group in groups:
        results = []
        for label, best, last in zip(group[::3], group[1::3], group[2::3]):
            runs = [json.load(open(path)) for path in (best, last)]
            results.append((label, runs[0]["mIoU"], runs[1]["mIoU"], runs[0]["seconds_per_image"]))
        rows.append(results)
    return seeds, rows


def seed_table(seed: str, rows: List[Row]) -> str:
    """One seed's table."""
    lines = [f"seed {seed}:", "| row | target mIoU (%), best model | last model | s / image (test, best) |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {label} | {best:.1f} | {last:.1f} | {sec:.3f} |" for label, best, last, sec in rows]
    return "\n".join(lines)


def mean_std(values: List[float]) -> str:
    """'mean ± sample std' of one column."""
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def summary_table(seeds: List[str], groups: List[List[Row]]) -> str:
    """Mean ± sample std over the seeds, with each seed's best-model mIoU."""
    lines = [f"mean ± std over seeds {', '.join(seeds)} (n = {len(seeds)}):",
             "| row | best model | last model | per seed (best) | s / image (test) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    by_label: Dict[str, List[Row]] = {}
    for rows in groups:
        for row in rows:
            by_label.setdefault(row[0], []).append(row)
    for label, rows in by_label.items():
        best, last, sec = ([r[i] for r in rows] for i in (1, 2, 3))
        lines.append(f"| {label} | {mean_std(best)} | {mean_std(last)} | "
                     f"{' / '.join(f'{v:.1f}' for v in best)} | {statistics.mean(sec):.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
    """Print the tables."""
    seeds, groups = read_groups(argv)
    for seed, rows in zip(seeds, groups):
        print(seed_table(seed, rows) + "\n")
    if len(groups) > 1:
        print(summary_table(seeds, groups))


if __name__ == "__main__":
    main(sys.argv[1:])
