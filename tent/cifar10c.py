"""Corruption benchmark: source, norm and tent on CIFAR-10-C / CIFAR-100-C / ImageNet-C / MNIST-C.

    python cifar10c.py --cfg cfgs/tent.yaml [KEY VALUE ...]

As the reference: robustbench's `load_model` and corruption loaders (chosen by
CORRUPTION.DATASET), model and optimizer reset before every corruption x severity, and the
error of every corruption logged as `error % [<corruption><severity>]: <error>`. Beyond it:
automatic device, a progress bar per corruption, several methods per run (MODEL.ADAPTATIONS),
the evaluation protocols of later work (SETTING, tent/protocols.py; MODEL.CONTINUAL True is
SETTING continual), periodic resets (MODEL.RESET_AFTER_NUM_UPDATES), single-sample adaptation
on a sliding window (tent/window.py), several processes under torchrun (tent/evaluation.py),
one run per source model (MNISTC.SEEDS, tent/seeds.py), and at the end a Markdown table in the
reference README's format, CSV / JSON files, tensorboard scalars, a bar chart per method and,
for streams that are not reset, an error curve.

The command line is read once (tent/launch.py); `tent.evaluation.run(cfg)` is one run
(methods: tent/methods.py, the stream loop: tent/stream.py, outputs: tent/report.py).
"""
from __future__ import annotations

import sys
import warnings
from typing import Optional, Sequence

from dacommon import distributed

from . import errors, launch, seeds
from .evaluation import run
from .methods import setup_norm, setup_optimizer, setup_source, setup_tent  # noqa: F401  (the reference's names)
from .report import Results

DESCRIPTION = "CIFAR-10-C evaluation."


def evaluate(description: str, argv: Optional[Sequence[str]] = None) -> Results:
    """Load the config from the command line, then adapt and evaluate every method on the stream of its SETTING.

    One run (the first of MNISTC.SEEDS), as the reference's `evaluate`; `main` runs every seed.
    """
    cfg_file, c = launch.config_from_args(description, argv)
    return run(launch.start_run(c, cfg_file))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0, or a user error's: see tent/errors.py)."""
    # robustbench's imports warn about deprecations outside this project's control
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.interface.* is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="(The parameter 'pretrained'|Arguments other than a weight enum)",
                            category=UserWarning)
    try:
        # one run per MNISTC.SEEDS entry (tent/seeds.py), then the mean +- std table
        return errors.exit_status(lambda: seeds.run_seeds(*launch.config_from_args(DESCRIPTION, argv), run))
    finally:
        distributed.close()


if __name__ == '__main__':
    sys.exit(main())
