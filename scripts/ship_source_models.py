"""Train the offline benchmarks' source models and write them to tent/weights/ with their manifest.

    python scripts/ship_source_models.py [--data-dir ./data] [--machine "words naming the machine"]

Six models, each trained by the benchmark's own training function (tent.models.train_checkpoint,
one CPU thread) with conf.py's MNISTC defaults: MNIST (the MNIST-C split, cfgs/mnist/*.yaml and
cfgs/digits/mnist2digits.yaml) and sklearn's digits (cfgs/digits/digits2mnist.yaml), training
seeds 0, 1, 2 (MNISTC.SEEDS). Each file is a plain state_dict of tensors (torch.save), loadable
weights-only; tent/weights/manifest.json records each file's sha256, training settings and clean
test accuracy, and the command, machine, torch version and date that made them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone without installing

from tent import digits, mnistc, models  # noqa: E402

SEEDS = (0, 1, 2)  # the configs' MNISTC.SEEDS
COMMAND = "python scripts/ship_source_models.py"


def shipped_train_cfgs() -> List[Dict[str, Any]]:
    """The training settings of every shipped model: conf.py's defaults, per source domain and seed."""
    mnist = dict(models.DEFAULT_TRAIN_CFG)
    digits_cfg = dict(mnist, source="digits", num_train=digits.NUM_TRAIN)
    return [dict(base, train_seed=s) for base in (mnist, digits_cfg) for s in SEEDS]


def file_name(train_cfg: Dict[str, Any]) -> str:
    """tent/weights/ file name of one shipped model."""
    return f"{models.MNIST_ARCH}_{train_cfg['source']}_seed{train_cfg['train_seed']}.pt"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def ship(data_dir: str, machine: str) -> Dict[str, Any]:
    """Train every shipped model, write its weights and return the manifest."""
    entries = []
    for train_cfg in shipped_train_cfgs():
        checkpoint = models.train_checkpoint(data_dir, train_cfg, torch.device("cpu"))
        path = models.WEIGHTS_DIR / file_name(train_cfg)
        state_dict = {k: v.contiguous() for k, v in checkpoint["state_dict"].items()}
        mnistc.atomic_write(path, lambda f: torch.save(state_dict, f))
        entries.append(dict(file=path.name, sha256=models.sha256_of(path), train_cfg=train_cfg,
                            clean_acc=checkpoint["clean_acc"]))
        print(f"{path.name}: clean test accuracy {100 * checkpoint['clean_acc']:.2f} %", flush=True)
    return dict(made_by=dict(command=COMMAND, machine=machine, cpu=cpu_name(), torch=torch.__version__,
                             threads=1, date=datetime.date.today().isoformat()),
                models=entries)


def main(argv: List[str] | None = None) -> None:
    """Parse the options, ship the models, write the manifest atomically."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="./data", help="DATA_DIR of the MNIST split cache")
    parser.add_argument("--machine", default=f"{platform.machine()} {cpu_name()}, CPU only",
                        help="words naming the machine, recorded in the manifest")
    args = parser.parse_args(argv)
    manifest = ship(args.data_dir, args.machine)
    text = json.dumps(manifest, indent=1) + "\n"
    mnistc.atomic_write(models.MANIFEST_FILE, lambda f: f.write(text.encode()))
    print(f"wrote {models.MANIFEST_FILE}")


if __name__ == "__main__":
    main()
