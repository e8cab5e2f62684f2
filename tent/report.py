"""Result reporting: the reference README's Markdown table, CSV / JSON files and bar charts.

`results[method][severity][corruption]` holds the error as a fraction (0.186 = 18.6 %).
Every evaluation protocol (tent/protocols.py) reports through the same table: a stream's pieces
(`PieceResult`) are pooled per corruption x severity; for settings that never reset, a per-batch
error curve shows how the error drifts along the stream (continual collapse).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

Results = Dict[str, Dict[int, Dict[str, float]]]

# column titles of the reference README's table
SHORT_NAMES = {
    "gaussian_noise": "gauss_noise", "elastic_transform": "elastic_trans", "jpeg_compression": "jpeg",
}


def short_name(corruption: str) -> str:
    """The reference README's column title for a corruption."""
    return SHORT_NAMES.get(corruption, corruption)


def severities(results: Results) -> List[int]:
    """Severities present in the results, in the order they were run."""
    seen: List[int] = []
    for per_method in results.values():
        seen += [s for s in per_method if s not in seen]
    return seen


def mean_error(errors: Dict[str, float]) -> float:
    """Mean error over the corruptions of one severity."""
    return float(np.mean(list(errors.values())))


def severity_columns(results: Results, severity: int) -> Tuple[List[str], List[str]]:
    """The methods that ran at `severity` and its corruptions, both in run order."""
    methods = [m for m in results if severity in results[m]]
    return methods, list(results[methods[0]][severity])


def error_row(errors: Dict[str, float], corruptions: List[str]) -> List[float]:
    """Errors in %: the mean over the corruptions, then each corruption."""
    return [100 * mean_error(errors)] + [100 * errors[c] for c in corruptions]


def markdown_table(results: Results, severity: int) -> str:
    """One severity as the reference README's table: a row per method, mean + one column per corruption."""
    methods, corruptions = severity_columns(results, severity)
    header = ["", "mean"] + [short_name(c) for c in corruptions]
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for m in methods:
        cells = [m] + [f"{e:.1f}" for e in error_row(results[m][severity], corruptions)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(results: Results, path: Path) -> None:
    """One row per method x severity: mean and each corruption, errors in %."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        for severity in severities(results):
            methods, corruptions = severity_columns(results, severity)
            writer.writerow(["method", "severity", "mean"] + corruptions)
            for m in methods:
                writer.writerow([m, severity] + [f"{e:.2f}" for e in error_row(results[m][severity], corruptions)])


def write_json(results: Results, path: Path, meta: Dict[str, object]) -> None:
    """Errors in % with their means, plus the run's metadata (dataset, model, config file...)."""
    payload = {
        **meta,
        "error_percent": {
            m: {str(s): {"mean": 100 * mean_error(errs), **{c: 100 * e for c, e in errs.items()}}
                for s, errs in per_sev.items()}
            for m, per_sev in results.items()},
    }
    path.write_text(json.dumps(payload, indent=2))


def finish_error_plot(fig, ax, title: str, path: Path) -> None:
    """The error plots' common end: a 0-100 % axis, title and legend, written as a PNG and closed."""
    import matplotlib.pyplot as plt
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_errors(errors_by_severity: Dict[int, Dict[str, float]], title: str, path: Path) -> None:
    """Bar chart of error per corruption for one method, one bar colour per severity."""
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    sevs = list(errors_by_severity)
    corruptions = list(errors_by_severity[sevs[0]])
    x = np.arange(len(corruptions) + 1)  # + the mean
    width = 0.8 / len(sevs)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(x) + 2), 4))
    for i, s in enumerate(sevs):
        values = error_row(errors_by_severity[s], corruptions)
        ax.bar(x + (i - (len(sevs) - 1) / 2) * width, values, width, label=f"severity {s}")
    ax.set_xticks(x, ["mean"] + [short_name(c) for c in corruptions], rotation=60, ha="right")
    ax.set_ylabel("error (%)")
    finish_error_plot(fig, ax, title, path)


@dataclass
class PieceResult:
    """What one method got right on one piece of the stream (tent/protocols.Piece)."""
    name: str                     # the corruption, or "mixed"
    severity: int
    corruptions: List[str]        # the corruptions in the piece
    correct: List[int]            # per corruption: correct predictions
    total: List[int]              # per corruption: samples
    batch_errors: List[float] = field(default_factory=list)  # per batch, fraction wrong

    @property
    def error(self) -> float:
        """Error over the whole piece."""
        return 1. - sum(self.correct) / max(1, sum(self.total))


def pooled_errors(pieces: Sequence[PieceResult]) -> Dict[int, Dict[str, float]]:
    """errors[severity][corruption], pooled over every visit (gradual visits a severity twice)."""
    counts: Dict[int, Dict[str, List[int]]] = {}
    for p in pieces:
        for c, right, n in zip(p.corruptions, p.correct, p.total):
            pair = counts.setdefault(p.severity, {}).setdefault(c, [0, 0])
            pair[0] += right
            pair[1] += n
    return {s: {c: 1. - right / max(1, n) for c, (right, n) in per.items()} for s, per in counts.items()}


def stream_mean(pieces: Sequence[PieceResult]) -> float:
    """Mean of the pieces' errors: the "mean error" of CoTTA's and mariodoebler's logs."""
    return float(np.mean([p.error for p in pieces]))


def write_stream_json(streams: Dict[str, List[PieceResult]], path: Path, meta: Dict[str, object]) -> None:
    """Every piece of every method in stream order, with its per-batch errors."""
    payload = {**meta, "stream_mean_error_percent": {m: 100 * stream_mean(p) for m, p in streams.items()},
               "pieces": {m: [asdict(piece) for piece in pieces] for m, pieces in streams.items()}}
    path.write_text(json.dumps(payload, indent=1))


def plot_curves(streams: Dict[str, List[PieceResult]], title: str, path: Path, smooth: int = 5) -> None:
    """Per-batch error along the stream for each method (moving mean), a line at each new piece."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    for method, pieces in streams.items():
        errors = np.array([e for p in pieces for e in p.batch_errors])
        k = max(1, min(smooth, len(errors)))
        ax.plot(np.convolve(100 * errors, np.ones(k) / k, mode="valid"), label=method, lw=1)
    first = next(iter(streams.values()))
    bounds = np.cumsum([len(p.batch_errors) for p in first])[:-1]
    for b in bounds:
        ax.axvline(b, color="grey", lw=0.3)
    ax.set_xlabel("batch (grey lines: next corruption / severity)")
    ax.set_ylabel(f"error (%), moving mean of {smooth}")
    finish_error_plot(fig, ax, title, path)

# ---- several source models (MNISTC.SEEDS, tent/seeds.py): mean ± standard deviation ----
SeedResults = Dict[int, Results]  # training seed -> results


def seed_matrix(per_seed: SeedResults, method: str, severity: int) -> Tuple[List[str], np.ndarray]:
    """The corruptions and an array [seed, mean + corruptions] of errors in % for one method x severity."""
    first = next(iter(per_seed.values()))
    corruptions = list(first[method][severity])
    return corruptions, np.array([error_row(r[method][severity], corruptions) for r in per_seed.values()])


def mean_std(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation (ddof 1; 0 for a single seed) over the seeds axis."""
    std = rows.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(rows.shape[1])
    return rows.mean(axis=0), std


def mean_std_table(per_seed: SeedResults, severity: int) -> str:
    """markdown_table's layout with "mean ± std" over the seeds' source models in every cell."""
    first = next(iter(per_seed.values()))
    methods, corruptions = severity_columns(first, severity)
    header = ["", "mean"] + [short_name(c) for c in corruptions]
    lines = ["| " + " | ".join(header) + " |",
             "| --- | " + " | ".join("---:" for _ in header[1:]) + " |"]
    for m in methods:
        mean, std = mean_std(seed_matrix(per_seed, m, severity)[1])
        lines.append("| " + " | ".join([m] + [f"{a:.1f} ± {s:.1f}" for a, s in zip(mean, std)]) + " |")
    return "\n".join(lines)
