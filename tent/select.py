"""Choose a tent hyperparameter on the 4 held-out corruptions, as the tent maintainers advise (DequanWang/tent#4).

    python -m tent.select --cfg cfgs/tent.yaml OPTIM.LR "[1e-4, 3e-4, 1e-3, 3e-3]"

The one override whose value is a list (for a key that is not a list) is the sweep. Each value
runs tent (evaluation.run, every other key from the config and overrides) on speckle_noise,
gaussian_blur, spatter and saturate only, never on the 15 test corruptions; the command prints a
table of the errors and writes the value with the lowest mean error as a config snippet
(`--out`, default SAVE_DIR/selected_<KEY>.yaml, SAVE_DIR of the config and overrides) to merge
into later runs. Everything that can be checked is checked before the first candidate runs: the
swept key (not one that select sets itself), every candidate's config, and that `--out` can be
written; `--out` may come anywhere on the command line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from yacs.config import CfgNode

from dacommon import distributed
from dacommon.errors import INTERRUPTED, one_line

from . import conf_merge, errors, launch, report
from .conf import ConfigError, VALIDATION_CORRUPTIONS
from .evaluation import run
from .preflight import check_folders, unwritable_reason

# keys every candidate run sets itself (tent on the held-out corruptions, its own folder)
FIXED_KEYS = ("MODEL.ADAPTATION", "MODEL.ADAPTATIONS", "CORRUPTION.TYPE", "SAVE_DIR")
OPTIONS = ("--cfg", "--out")  # select's own options, accepted before or after the overrides


def split_sweep(opts: Sequence[str]) -> Tuple[str, List[Any], List[str]]:
    """(key, candidate values, the other overrides) from KEY VALUE pairs with one list-valued scalar key."""
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; {opts[-1]} has no value")
    sweeps, rest = [], []
    for key, value in zip(opts[0::2], opts[1::2]):
        default = default_of(key)
        parsed = yaml.safe_load(value) if isinstance(value, str) else value
        if not isinstance(default, list) and isinstance(parsed, list):
            # typed as the key's default (YAML reads 1e-4 as a string)
            sweeps.append((key, [conf_merge.prepare_value(key, v, "the candidates") for v in parsed]))
        else:
            rest += [key, value]
    if len(sweeps) != 1 or not sweeps[0][1]:
        raise ConfigError("give exactly one key with a non-empty list of candidates, "
                          "e.g. OPTIM.LR \"[1e-4, 1e-3]\"")
    if sweeps[0][0] in FIXED_KEYS:
        raise ConfigError(f"{sweeps[0][0]} cannot be swept: every candidate runs tent on the held-out "
                          f"corruptions into its own folder (tent.select sets {', '.join(FIXED_KEYS)})")
    ignored = [k for k in rest[0::2] if k in FIXED_KEYS and k != "SAVE_DIR"]  # SAVE_DIR: where select writes
    if ignored:
        raise ConfigError(f"{ignored[0]} is set by tent.select itself (tent on the held-out corruptions "
                          f"{', '.join(VALIDATION_CORRUPTIONS)}); leave it out")
    return sweeps[0][0], sweeps[0][1], rest


def default_of(key: str) -> Any:
    """The default value of a config key (ConfigError naming it if unknown)."""
    default = conf_merge.default_of(key)
    if default is conf_merge.MISSING:
        raise ConfigError(f"unknown config key {key} in the command-line overrides")
    return default


def candidate_overrides(key: str, value: Any, save_dir: Path) -> List[Tuple[str, Any]]:
    """The overrides of one candidate's run: tent alone, on the held-out corruptions, in its own folder."""
    return [(key, value), ("MODEL.ADAPTATIONS", ["tent"]), ("CORRUPTION.TYPE", list(VALIDATION_CORRUPTIONS)),
            ("SAVE_DIR", str(save_dir / f"{key}_{value}"))]


def evaluate_candidate(cfg_file: str, candidate: CfgNode) -> Dict[str, float]:
    """Tent's error on each held-out corruption (mean over the config's severities) for one candidate's config."""
    with launch.config_errors():  # checked before the sweep; a folder gone since ends as a run's would
        started = launch.start_run(candidate, cfg_file)
    results = run(started)
    if not results:  # a process of torchrun other than rank 0: rank 0 holds the results
        return {}
    per_severity = results["tent"]
    return {c: sum(errs[c] for errs in per_severity.values()) / len(per_severity) for c in VALIDATION_CORRUPTIONS}


def candidate_configs(base: CfgNode, key: str, values: Sequence[Any], save_dir: Path) -> Dict[Any, CfgNode]:
    """Every candidate's config, checked as a run checks it (ConfigError naming the key) before any runs."""
    configs = {}
    for value in values:
        configs[value] = launch.derived(base, candidate_overrides(key, value, save_dir))
        check_folders(configs[value])
    return configs


def output_path(out: Optional[str], key: str, save_dir: str) -> Path:
    """Where the snippet goes (--out, else SAVE_DIR/selected_<KEY>.yaml), checked writable before the sweep."""
    path = Path(out) if out else Path(save_dir) / f"selected_{key}.yaml"
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give the snippet's file name, e.g. {path / f'selected_{key}.yaml'}")
    reason = unwritable_reason(path.parent)
    if reason:
        raise ConfigError(f"--out {path} cannot be written: {reason}")
    return path


def table(key: str, rows: Dict[Any, Dict[str, float]], chosen: Any) -> str:
    """Markdown table: one row per candidate, mean and per-corruption error (%); the choice marked."""
    lines = [f"| {key} | mean | " + " | ".join(VALIDATION_CORRUPTIONS) + " |",
             "| --- | ---: | " + " | ".join("---:" for _ in VALIDATION_CORRUPTIONS) + " |"]
    for value, by_corruption in rows.items():
        cells = [f"{100 * report.mean_error(by_corruption):.1f}"] + [f"{100 * by_corruption[c]:.1f}" for c in VALIDATION_CORRUPTIONS]
        mark = " (chosen)" if value == chosen else ""
        lines.append(f"| {value}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_snippet(path: Path, key: str, value: Any, cfg_file: str) -> None:
    """The chosen value as a nested YAML config snippet, written atomically."""
    tree: Dict[str, Any] = {}
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    text = (f"# {key} chosen by tent.select on the held-out corruptions {', '.join(VALIDATION_CORRUPTIONS)}\n"
            f"# (base config {cfg_file})\n" + yaml.safe_dump(tree, default_flow_style=False))
    report.write_file(path, text.encode())


def select(cfg_file: str, opts: Sequence[str], out: Optional[str] = None) -> Tuple[Any, Dict[Any, Dict[str, float]]]:
    """Run every candidate; returns the chosen value and each candidate's held-out errors."""
    key, values, rest = split_sweep(opts)
    base = launch.merged(cfg_file, rest).clone()
    path = output_path(out, key, base.SAVE_DIR)
    candidates = candidate_configs(base, key, values, Path(base.SAVE_DIR) / "select")
    rows = {v: evaluate_candidate(cfg_file, c) for v, c in candidates.items()}
    if not distributed.is_main():
        return None, {}
    chosen = min(rows, key=lambda v: report.mean_error(rows[v]))
    print(table(key, rows, chosen))
    write_snippet(path, key, chosen, cfg_file)
    print(f"chosen {key} {chosen}: written to {path}")
    return chosen, rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (2: bad arguments or config, 1: missing data)."""
    parser = argparse.ArgumentParser(description="Choose a tent hyperparameter on the 4 held-out corruptions.")
    parser.add_argument("--cfg", required=True, help="config file")
    parser.add_argument("--out", default=None, help="snippet to write (default SAVE_DIR/selected_<KEY>.yaml)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides; one KEY with a list")
    args = parser.parse_args(options_first(sys.argv[1:] if argv is None else list(argv)))
    try:
        select(args.cfg, args.opts, args.out)
    except (errors.TentError, OSError) as e:  # printed, not logged: the candidates' runs replaced the log handlers
        print(f"error: {one_line(e)}", file=sys.stderr)
        return getattr(e, "exit_status", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    finally:
        distributed.close()
    return 0


def options_first(argv: Sequence[str]) -> List[str]:
    """select's options moved before the overrides: argparse's REMAINDER takes all that follows a KEY."""
    options: List[str] = []
    rest: List[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in OPTIONS and i + 1 < len(argv):
            options += argv[i:i + 2]
            i += 2
            continue
        (options if argv[i].startswith(tuple(o + "=" for o in OPTIONS)) else rest).append(argv[i])
        i += 1
    return options + rest


if __name__ == "__main__":
    sys.exit(main())
