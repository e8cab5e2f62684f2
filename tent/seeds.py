"""Error bars for the offline benchmarks: one evaluation per source model (MNISTC.SEEDS), then mean ± std.

    python cifar10c.py --cfg cfgs/mnist/compare.yaml            # MNISTC.SEEDS [0, 1, 2] in the file

Each training seed gives its own source model (cached in its own checkpoint, tent/models.py); the
split and the corrupted data are the same for all. `run_seeds` runs the loaded config once per
seed, with `MNISTC.SEEDS [s]` and `SAVE_DIR <SAVE_DIR>/seed<s>` merged last (so each run keeps its
own log, CSV, JSON and plots), then logs the mean ± sample standard deviation table per severity
and writes `<SAVE_DIR>/<run>_seeds.json` with every seed's errors. With a single seed it is
exactly one run, in SAVE_DIR itself.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from yacs.config import CfgNode

from dacommon import distributed

from . import launch, report

logger = logging.getLogger(__name__)

Run = Callable[[CfgNode], report.Results]


def seed_overrides(c: CfgNode, seed: int) -> List[Tuple[str, object]]:
    """The overrides of one seed's run: its own source model and its own output folder."""
    return [("MNISTC.SEEDS", [seed]), ("SAVE_DIR", str(Path(c.SAVE_DIR) / f"seed{seed}"))]


def run_seeds(cfg_file: str, c: CfgNode, run: Run) -> report.SeedResults:
    """`run` once per MNISTC.SEEDS entry of the loaded config `c`; with several, log the mean ± std tables and save the JSON."""
    if len(c.MNISTC.SEEDS) <= 1:
        return {c.MNISTC.SEEDS[0]: run(launch.start_run(c, cfg_file))}
    per_seed: report.SeedResults = {}
    stems: Dict[int, str] = {}
    for seed in c.MNISTC.SEEDS:
        logger.info("source model %d of %d: MNISTC.SEEDS [%d]", len(per_seed) + 1, len(c.MNISTC.SEEDS), seed)
        with launch.config_errors():
            seed_cfg = launch.derived(c, seed_overrides(c, seed))
        per_seed[seed] = run(launch.start_run(seed_cfg, cfg_file))
        stems[seed] = str(Path(seed_cfg.SAVE_DIR) / Path(seed_cfg.LOG_DEST).stem)
    if distributed.is_main():  # under torchrun the other processes hold no results (rank 0 gathered them)
        save_summary(per_seed, stems, c)
    return per_seed


def summary(per_seed: report.SeedResults, stems: Dict[int, str], c: CfgNode) -> Dict[str, object]:
    """The JSON payload: settings, each seed's errors in %, and their mean and std per cell."""
    first = next(iter(per_seed.values()))
    stats: Dict[str, Dict[str, Dict[str, Dict[str, float]]]] = {}
    for method, per_sev in first.items():
        for severity in per_sev:
            corruptions, rows = report.seed_matrix(per_seed, method, severity)
            mean, std = report.mean_std(rows)
            names = ["mean"] + corruptions
            stats.setdefault(method, {})[str(severity)] = {
                n: {"mean": float(a), "std": float(s)} for n, a, s in zip(names, mean, std)}
    return {
        "dataset": c.CORRUPTION.DATASET, "arch": c.MODEL.ARCH, "params": c.MNISTC.PARAMS,
        "seeds": list(per_seed), "std": "sample standard deviation over the seeds (ddof 1)",
        "optimizer": c.OPTIM.METHOD, "lr": c.OPTIM.LR, "batch_size": c.TEST.BATCH_SIZE,
        "num_ex": c.CORRUPTION.NUM_EX, "per_seed_runs": {str(s): stem for s, stem in stems.items()},
        "error_percent": stats,
        "error_percent_per_seed": {
            str(s): {m: {str(sev): {"mean": 100 * report.mean_error(errs), **{k: 100 * e for k, e in errs.items()}}
                         for sev, errs in per_sev.items()} for m, per_sev in r.items()}
            for s, r in per_seed.items()},
    }


def save_summary(per_seed: report.SeedResults, stems: Dict[int, str], c: CfgNode) -> Path:
    """Log the mean ± std table of every severity; write <SAVE_DIR>/<first run>_seeds.json."""
    first = next(iter(per_seed.values()))
    seeds = ", ".join(str(s) for s in per_seed)
    for severity in report.severities(first):
        logger.info("error (%%) on %s corruptions, severity %d, model %s, mean ± std over %d source models "
                    "(seeds %s):\n%s", c.CORRUPTION.DATASET, severity, c.MODEL.ARCH, len(per_seed), seeds,
                    report.mean_std_table(per_seed, severity))
    path = Path(c.SAVE_DIR) / f"{Path(next(iter(stems.values()))).name}_seeds.json"
    report.write_file(path, report.json_bytes(summary(per_seed, stems, c)))
    logger.info("mean ± std over the seeds: %s", path)
    return path
