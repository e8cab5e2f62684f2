"""From the command line to a started run: read `--cfg FILE KEY VALUE ...` once, then start each run.

`config_from_args` merges the file and the overrides into the config and checks them (a bad key
or value: one line and exit status 2, as the reference's load_cfg_fom_args); `derived` is that
config with a few more KEY VALUE pairs (tent.seeds: one run per source model, tent.select: one per
candidate); `start_run` claims a run's output stem, opens its log and seeds the generators.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from yacs.config import CfgNode

from . import conf, distributed
from .errors import ConfigError
from .preflight import check_folders

logger = logging.getLogger(__name__)


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
        conf.assert_and_infer_cfg(c)
    return args.cfg_file, c


def merged(cfg_file: str, opts: Sequence[str]) -> CfgNode:
    """The global config reset to its defaults, then the file and the KEY VALUE overrides merged (unchecked)."""
    conf.reset_cfg()
    conf.merge_from_file(cfg_file)
    conf.merge_from_list(opts)
    return conf.cfg


def derived(c: CfgNode, pairs: Iterable[Tuple[str, Any]]) -> CfgNode:
    """A copy of `c` with more KEY value pairs merged, as if given last on the command line, and checked."""
    child = c.clone()
    child.defrost()
    conf.merge_pairs(pairs, "the command-line overrides", node=child)
    conf.assert_and_infer_cfg(child)
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
    c.LOG_DEST = conf.claim_output_stem(c.SAVE_DIR, stem) + ".txt" if main_process else stem + ".txt"
    c.freeze()
    conf.setup_logging(os.path.join(c.SAVE_DIR, c.LOG_DEST) if main_process else None)

    np.random.seed(c.RNG_SEED)
    torch.manual_seed(c.RNG_SEED)
    random.seed(c.RNG_SEED)
    torch.backends.cudnn.benchmark = c.CUDNN.BENCHMARK

    version = [torch.__version__, torch.version.cuda, torch.backends.cudnn.version()]
    logger.info("PyTorch Version: torch={}, cuda={}, cudnn={}".format(*version))
    logger.info(c)
    return c
