"""Result reporting: the reference README's Markdown table, CSV / JSON files, bar charts and tensorboard.

`save_results` writes everything a run reports (`<SAVE_DIR>/<run stem>_results.csv` and `.json`,
`_stream.json`, a bar chart per method, the error curve, tensorboard scalars).

`results[method][severity][corruption]` holds the error as a fraction (0.186 = 18.6 %).
Every evaluation protocol (tent/protocols.py) reports through the same table: a stream's pieces
(`PieceResult`) are pooled per corruption x severity; for settings that never reset, a per-batch
error curve shows how the error drifts along the stream (continual collapse).

Every output is rendered in memory first and then written whole or not at all (`write_outputs`:
a temporary file renamed over the target, tent.mnistc.atomic_write); a run whose files do not
fit on the disk ends in one line naming the file and the space it needs, and leaves no partial
file. The log is the one file written as the run goes (`LogFile`); a failed write to it ends the
run the same way.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from dacommon.files import free_space, size_text

from . import errors, protocols
from .mnistc import atomic_write

Results = Dict[str, Dict[int, Dict[str, float]]]

logger = logging.getLogger(__name__)

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


def csv_bytes(results: Results) -> bytes:
    """One row per method x severity: mean and each corruption, errors in %."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    for severity in severities(results):
        methods, corruptions = severity_columns(results, severity)
        writer.writerow(["method", "severity", "mean"] + corruptions)
        for m in methods:
            writer.writerow([m, severity] + [f"{e:.2f}" for e in error_row(results[m][severity], corruptions)])
    return text.getvalue().encode()


def json_bytes(payload: Any, indent: int = 2) -> bytes:
    """A JSON file's content."""
    return json.dumps(payload, indent=indent).encode()


def results_payload(results: Results, meta: Dict[str, object]) -> Dict[str, object]:
    """Errors in % with their means, plus the run's metadata (dataset, model, config file...)."""
    return {
        **meta,
        "error_percent": {
            m: {str(s): {"mean": 100 * mean_error(errs), **{c: 100 * e for c, e in errs.items()}}
                for s, errs in per_sev.items()}
            for m, per_sev in results.items()},
    }


def write_file(path: Path, data: bytes) -> None:
    """Write `data` whole or not at all; a failure is one line naming the file (and the space it needs)."""
    try:
        atomic_write(Path(path), lambda f: f.write(data))
    except OSError as e:  # f.write's own error does not name the file
        raise errors.write_failed(path, len(data), e) from None


def write_outputs(outputs: Dict[Path, bytes]) -> None:
    """Write a run's files, refused up front when the disk cannot hold them all, each one atomically."""
    if not outputs:
        return
    needed = sum(len(data) for data in outputs.values())
    folder = next(iter(outputs)).parent
    free = free_space(folder)
    if free < needed:  # nothing written rather than half of the outputs
        raise errors.OutputError(f"cannot write the results to {folder}: they need {size_text(needed)}, "
                                 f"{size_text(free)} free")
    for path, data in outputs.items():
        write_file(path, data)


class LogFile(logging.Handler):
    """The run's log file: one unbuffered append per record, so a full disk fails at the record
    that does not fit (no buffer left to fail again at exit); that failure ends the run in one line."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path, self.failed = path, False
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def emit(self, record: logging.LogRecord) -> None:
        """Append the record; an OSError becomes OutputError (raised once, later records are dropped)."""
        if self.failed:
            return
        data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            self.failed = True
            if os.fstat(self.fd).st_size == 0:  # nothing of the run in it: leave no empty log behind
                os.unlink(self.path)
            raise errors.write_failed(self.path, len(data), e) from None

    def close(self) -> None:
        """Close the file once."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        super().close()


def finish_error_plot(fig, ax, title: str) -> bytes:
    """The error plots' common end: a 0-100 % axis, title and legend; returns the PNG and closes it."""
    import matplotlib.pyplot as plt
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    return png.getvalue()


def plot_errors(errors_by_severity: Dict[int, Dict[str, float]], title: str) -> bytes:
    """Bar chart (PNG) of error per corruption for one method, one bar colour per severity."""
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
    return finish_error_plot(fig, ax, title)


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


def stream_payload(streams: Dict[str, List[PieceResult]], meta: Dict[str, object]) -> Dict[str, object]:
    """Every piece of every method in stream order, with its per-batch errors."""
    return {**meta, "stream_mean_error_percent": {m: 100 * stream_mean(p) for m, p in streams.items()},
            "pieces": {m: [asdict(piece) for piece in pieces] for m, pieces in streams.items()}}


def plot_curves(streams: Dict[str, List[PieceResult]], title: str, smooth: int = 5) -> bytes:
    """Per-batch error (PNG) along the stream for each method (moving mean), a line at each new piece."""
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
    return finish_error_plot(fig, ax, title)

# ---- a run's outputs: the tables in the log, CSV / JSON files, plots and tensorboard scalars ----

def run_stem(c: Any) -> str:
    """File-name stem of the outputs of the run of config `c`, e.g. tent_250101_120000."""
    return os.path.splitext(c.LOG_DEST)[0]


def run_meta(c: Any, methods: List[str], setting: str) -> Dict[str, object]:
    """The settings every JSON file of a run carries."""
    return dict(dataset=c.CORRUPTION.DATASET, arch=c.MODEL.ARCH, methods=methods, setting=setting,
                continual=setting != "reset_each_shift", episodic=c.MODEL.EPISODIC,
                reset_after_num_updates=c.MODEL.RESET_AFTER_NUM_UPDATES,
                order=protocols.corruption_order(c.CORRUPTION.TYPE, c.CORRUPTION.ORDER_SEED),
                order_seed=c.CORRUPTION.ORDER_SEED, delta_dirichlet=c.TEST.DELTA_DIRICHLET,
                batch_size=c.TEST.BATCH_SIZE, num_ex=c.CORRUPTION.NUM_EX,
                optimizer=c.OPTIM.METHOD, lr=c.OPTIM.LR, log=c.LOG_DEST)


def save_results(c: Any, results: Results, streams: Dict[str, List[PieceResult]], setting: str) -> None:
    """Log the Markdown table per severity; write CSV, JSON, bar charts, tensorboard, and the stream."""
    save_dir, stem = Path(c.SAVE_DIR), run_stem(c)
    dataset, arch = c.CORRUPTION.DATASET, c.MODEL.ARCH
    for severity in severities(results):
        logger.info("error (%%) on %s corruptions, severity %d, model %s, setting %s:\n%s",
                    dataset, severity, arch, setting, markdown_table(results, severity))
    for method, pieces in streams.items():
        logger.info("mean error over the stream's %d pieces, %s: %.2f%%", len(pieces), method,
                    100 * stream_mean(pieces))
    meta = run_meta(c, list(results), setting)
    outputs = {  # rendered first, then written whole or not at all (write_outputs)
        save_dir / f"{stem}_results.csv": csv_bytes(results),
        save_dir / f"{stem}_results.json": json_bytes(results_payload(results, meta)),
        save_dir / f"{stem}_stream.json": json_bytes(stream_payload(streams, meta), indent=1)}
    for method, per_severity in results.items():
        outputs[save_dir / f"{stem}_{method}.png"] = plot_errors(
            per_severity, f"{method}: {dataset} corruptions, {arch}, {setting}")
    if setting not in protocols.RESET_SETTINGS or c.MODEL.RESET_AFTER_NUM_UPDATES:
        outputs[save_dir / f"{stem}_curve.png"] = plot_curves(
            streams, f"{dataset}, {arch}, {setting}: error along the stream")
    write_outputs(outputs)
    write_tensorboard(results, streams, Path(c.SAVE_DIR) / "tensorboard" / run_stem(c))
    logger.info("results: %s", ", ".join(str(path) for path in outputs))


def write_tensorboard(results: Results, streams: Dict[str, List[PieceResult]], log_dir: Path) -> None:
    """Scalars per method: error per corruption and severity, the mean, and the per-batch error."""
    try:
        write_scalars(results, streams, log_dir)
    except OSError as e:  # tensorboard's writer names no file
        raise errors.write_failed(log_dir, None, e) from None


def write_scalars(results: Results, streams: Dict[str, List[PieceResult]], log_dir: Path) -> None:
    """The scalars of write_tensorboard, through tensorboard's event writer."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    for method, per_severity in results.items():
        for severity, errs in per_severity.items():
            for i, err in enumerate(errs.values()):
                writer.add_scalar(f"error_{method}/severity_{severity}", 100 * err, i)
            writer.add_scalar(f"error_{method}/mean", 100 * mean_error(errs), severity)
        batch_errors = [e for p in streams[method] for e in p.batch_errors]
        for step, err in enumerate(batch_errors):
            writer.add_scalar(f"error_{method}/batch", 100 * err, step)
    writer.close()


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
