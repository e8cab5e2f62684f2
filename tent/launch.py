"""From the command line to a started run: read `--cfg FILE KEY VALUE ...` once, then start each run.

`config_from_args` merges the file and the overrides into the config and checks them (a bad key
or value: one line and exit status 2, as the reference's load_cfg_fom_args); `derived` is that
config with a few more KEY VALUE pairs (tent.seeds: one run per source model, tent.select: one per
candidate); `start_run` claims a run's output stem, opens its log and seeds the generators.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import sys
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from dacommon import distributed

from . import report
from .conf import cfg
from .conf_checks import assert_and_infer_cfg
from .conf_merge import merge_from_file, merge_from_list, merge_pairs, reset_cfg
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


@contextmanager
def config_errors() -> Iterator[None]:
    """A ConfigError inside ends the program as argparse's own errors do: `<prog>: error: <line>`, status 2."""
    try:
        yield
    except ConfigError as e:
        print(f"{argparse.ArgumentParser().prog}: error: {e}", file=sys.stderr)
        sys.exit(2)


def config_from_args(description: str, argv: Optional[Sequence[str]] = None) -> Tuple[str, CfgNode]:
    """(the config file, the global config with it and the overrides merged and checked); argv: sys.argv[1:]."""
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
    with config_errors():
        c = merged(args.cfg_file, args.opts or [])
        assert_and_infer_cfg(c)
    return args.cfg_file, c


def merged(cfg_file: str, opts: Sequence[str]) -> CfgNode:
    """The global config reset to its defaults, then the file and the KEY VALUE overrides merged (unchecked)."""
    reset_cfg()
    merge_from_file(cfg_file)
    merge_from_list(opts)
    return cfg


def derived(c: CfgNode, pairs: Iterable[Tuple[str, Any]]) -> CfgNode:
    """A copy of `c` with more KEY value pairs merged, as if given last on the command line, and checked."""
    child = c.clone()
    child.defrost()
    merge_pairs(pairs, "the command-line overrides", node=child)
    assert_and_infer_cfg(child)
    return child


def start_run(c: CfgNode, cfg_file: str) -> CfgNode:
    """Check the folders, claim the output stem <config name>_<time>, open the log, seed; `c` frozen."""
    current_time = datetime.now().strftime("%y%m%d_%H%M%S")
    with config_errors():
        check_folders(c)
    # <config name>_<time>.txt as in the reference, claimed by an exclusive create so that two
    # runs started in the same second into one SAVE_DIR never share a log or outputs
    name = os.path.basename(cfg_file)
    stem = f"{name[:-len('.yaml')] if name.endswith('.yaml') else os.path.splitext(name)[0]}_{current_time}"
    os.makedirs(c.SAVE_DIR, exist_ok=True)
    # under torchrun only rank 0 claims; the others learn its stem from it (evaluation.share_run_stem)
    main_process = distributed.rank() == 0
    c.LOG_TIME = current_time
    c.LOG_DEST = claim_output_stem(c.SAVE_DIR, stem) + ".txt" if main_process else stem + ".txt"
    c.freeze()
    setup_logging(os.path.join(c.SAVE_DIR, c.LOG_DEST) if main_process else None)

    np.random.seed(c.RNG_SEED)
    torch.manual_seed(c.RNG_SEED)
    random.seed(c.RNG_SEED)
    torch.backends.cudnn.benchmark = c.CUDNN.BENCHMARK

    version = [torch.__version__, torch.version.cuda, torch.backends.cudnn.version()]
    logger.info("PyTorch Version: torch={}, cuda={}, cudnn={}".format(*version))
    logger.info(c)
    return c


def load_cfg_fom_args(description: str = "Config options.", argv: Optional[Sequence[str]] = None) -> CfgNode:
    """The reference's loader: read the command line (argv: sys.argv[1:]) and start the run; returns tent.conf.cfg."""
    cfg_file, c = config_from_args(description, argv)
    return start_run(c, cfg_file)


# the reference spells it "fom"; both names work
load_cfg_from_args = load_cfg_fom_args
