"""The command-line loader: `--cfg FILE KEY VALUE ...` -> the checked, frozen tent.conf cfg.

A config file or override with an unknown key, a wrong type, a value outside its range or a folder
the run cannot write stops `load_cfg_fom_args` with one line naming the key and exit status 2,
before any data or model is touched. It then claims the run's log file, sets up logging and seeds
the random generators, as the reference does.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import sys
from datetime import datetime
from typing import List, Optional, Sequence

import numpy as np
import torch
from yacs.config import CfgNode

from . import distributed, report
from .conf import cfg
from .conf_checks import assert_and_infer_cfg
from .conf_merge import merge_from_file, merge_from_list, reset_cfg
from .errors import ConfigError
from .preflight import check_folders

logger = logging.getLogger(__name__)


def remove_log_handlers() -> None:
    """Close and remove the logging handlers an earlier setup_logging call installed."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_tent", False)]:
        root.removeHandler(handler)
        handler.close()


def setup_logging(log_file: Optional[str]) -> None:
    """Log INFO to the console and, if given, to a file; replaces handlers from earlier calls."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    remove_log_handlers()
    handlers: List[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers.append(report.LogFile(log_file))  # a full disk ends the run in one line
    formatter = logging.Formatter("[%(asctime)s] [%(filename)s: %(lineno)4d]: %(message)s",
                                  datefmt="%y/%m/%d %H:%M:%S")
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._tent = True  # marks the handlers this function owns
        root.addHandler(handler)


def claim_output_stem(save_dir: str, stem: str) -> str:
    """`stem`, or `stem`_2, _3, ...: the first whose log <stem>.txt this process creates (exclusively)."""
    for i in itertools.count(1):
        name = stem if i == 1 else f"{stem}_{i}"
        try:
            os.close(os.open(os.path.join(save_dir, name + ".txt"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return name
    raise AssertionError("unreachable")


def load_cfg_fom_args(description: str = "Config options.",
                      argv: Optional[Sequence[str]] = None) -> CfgNode:
    """Load config from command line args and set any specified options.

    `argv` defaults to sys.argv[1:]. A bad config exits with status 2 and one line naming the key.
    """
    current_time = datetime.now().strftime("%y%m%d_%H%M%S")
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", dest="cfg_file", type=str, required=True,
                        help="Config file location")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                        help="See tent/conf.py for all options")
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        parser.print_help()
        sys.exit(1)
    args = parser.parse_args(argv)

    reset_cfg()
    try:
        merge_from_file(args.cfg_file)
        merge_from_list(args.opts or [])
        assert_and_infer_cfg()
        check_folders(cfg)
    except ConfigError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)

    # <config name>_<time>.txt as in the reference, claimed by an exclusive create so that two
    # runs started in the same second into one SAVE_DIR never share a log or outputs
    name = os.path.basename(args.cfg_file)
    stem = f"{name[:-len('.yaml')] if name.endswith('.yaml') else os.path.splitext(name)[0]}_{current_time}"
    os.makedirs(cfg.SAVE_DIR, exist_ok=True)
    # under torchrun only rank 0 claims; the others learn its stem from it (cifar10c.share_run_stem)
    main_process = distributed.rank() == 0
    cfg.LOG_TIME = current_time
    cfg.LOG_DEST = claim_output_stem(cfg.SAVE_DIR, stem) + ".txt" if main_process else stem + ".txt"
    cfg.freeze()
    setup_logging(os.path.join(cfg.SAVE_DIR, cfg.LOG_DEST) if main_process else None)

    np.random.seed(cfg.RNG_SEED)
    torch.manual_seed(cfg.RNG_SEED)
    random.seed(cfg.RNG_SEED)
    torch.backends.cudnn.benchmark = cfg.CUDNN.BENCHMARK

    version = [torch.__version__, torch.version.cuda, torch.backends.cudnn.version()]
    logger.info("PyTorch Version: torch={}, cuda={}, cudnn={}".format(*version))
    logger.info(cfg)
    return cfg


# the reference spells it "fom"; both names work
load_cfg_from_args = load_cfg_fom_args
