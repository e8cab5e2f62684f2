"""The value rules of tent.conf's keys, checked before any data or model is touched.

yacs guarantees the types (tent/conf_merge.py); the RULES table checks the values, one row per key
with a restricted range: KEY -> (check(value, cfg) -> bool, the allowed values in words or a
function of cfg giving them). A bad value raises ConfigError with one line naming the key.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import torch
from yacs.config import CfgNode

from . import bounds, mnistc, protocols
from .conf import DEPRECATED_KEYS, PROTOCOL_SETTINGS, ROBUSTBENCH_CORRUPTIONS, VALIDATION_CORRUPTIONS, cfg
from .conf_merge import default_of
from .digit_shifts import SHIFTS as SVHN_SHIFTS
from .digits import SHIFTS as DIGIT_SHIFTS, TYPES as DIGIT_SHIFT_TYPES
from .errors import ConfigError
from .norm import _check_batch_norms
from .pycls_resnet import ARCH as PYCLS_ARCH
from .resnet26 import ARCH as RESNET26_ARCH, SOURCE_OF as RESNET26_SOURCE_OF
from .tent import norm_layer_types
from .visda import DATASET as VISDA

ADAPTATIONS = ("source", "norm", "tent")
OPTIMIZERS = ("Adam", "SGD")
DATASETS = ("cifar10", "cifar100", "imagenet", "mnist", "digits2mnist", "mnist2digits") + SVHN_SHIFTS + (VISDA,)
OFFLINE_DATASETS = ("mnist",) + DIGIT_SHIFTS  # built here from packaged digits, no download
# datasets whose clean test set a CORRUPTION.TYPE entry 'none' loads (mariodoebler's forgetting protocol)
CLEAN_TEST_SETS = ("cifar10", "cifar100", "mnist") + SVHN_SHIFTS  # svhn2*: SVHN's test set; mnist2svhn: MNIST's
SEED_LIMIT = 2 ** 32  # numpy's seeds are 32-bit


def value_of(key: str, c: CfgNode = cfg) -> Any:
    """The value of a dotted key in `c`."""
    value: Any = c
    for part in key.split("."):
        value = value[part]
    return value


def resolved(key: str, c: CfgNode) -> Any:
    """The value of `key`, or the value a deprecated key set to its old value stands for."""
    for old, new in DEPRECATED_KEYS.items():
        if new.new_key == key and value_of(old, c) == new.old_value:
            return new.new_value
    return value_of(key, c)


def effective_setting(c: CfgNode) -> str:
    """The SETTING the run follows (MODEL.CONTINUAL True reads SETTING continual)."""
    return resolved("SETTING", c)


def corruption_names(dataset: str) -> Tuple[str, ...]:
    """Corruption types a dataset provides (CIFAR-10-C / CIFAR-100-C / ImageNet-C ship the 4 held-out ones too)."""
    if dataset in DIGIT_SHIFTS + SVHN_SHIFTS + (VISDA,):  # one clean target set (each module names it 'clean')
        return DIGIT_SHIFT_TYPES
    return ROBUSTBENCH_CORRUPTIONS + VALIDATION_CORRUPTIONS


def methods(c: CfgNode = cfg) -> List[str]:
    """The adaptation methods to run: MODEL.ADAPTATIONS, or else [MODEL.ADAPTATION]."""
    return list(c.MODEL.ADAPTATIONS) or [c.MODEL.ADAPTATION]


def _norm_layers_ok(names: List[str], c: CfgNode) -> bool:
    """Known layer names, and only batch norms when norm (which re-estimates statistics) runs."""
    try:
        layers = norm_layer_types(names)
        if "norm" in methods(c):
            _check_batch_norms(layers)
    except (ValueError, TypeError):
        return False
    return True


def _never_resets(c: CfgNode) -> bool:
    """The stream never resets the model, so no copy of its state is needed."""
    setting = effective_setting(c)
    if not protocols.peer_allows(setting, c.PROTOCOL.PEER):
        return True  # the PROTOCOL.PEER rule reports it
    pieces = protocols.plan(setting, c.CORRUPTION.TYPE, c.CORRUPTION.SEVERITY, c.PROTOCOL.PEER)
    return c.MODEL.RESET_AFTER_NUM_UPDATES == 0 and not any(p.reset for p in pieces)


def _clean_ok(name: str, c: CfgNode) -> bool:
    """'none' (mariodoebler: the clean test set between corruptions, to measure forgetting) where it can be loaded."""
    return (name == "none" and c.CORRUPTION.DATASET in CLEAN_TEST_SETS
            and "mixed_domains" not in effective_setting(c))


def _imagenet_limit(c: CfgNode) -> int:
    """Most ImageNet-C images a piece can hold: robustbench's list, or all under mariodoebler's loader."""
    return 50000 if protocols.peer_of(effective_setting(c), c.PROTOCOL.PEER) == "mariodoebler" else 5000


def _peer_ok(peer: str, c: CfgNode) -> bool:
    """PROTOCOL.PEER is auto or a peer whose code has a loop for the SETTING."""
    return peer in ("auto", *protocols.PEERS) and protocols.peer_allows(effective_setting(c), peer)


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


def _alias_of(old: str) -> Rule:
    """A deprecated key: its default, or its old value while the new key is left at its default or agrees."""
    new = DEPRECATED_KEYS[old]
    return ((lambda v, c: v != new.old_value or value_of(new.new_key, c) in (default_of(new.new_key), new.new_value)),
            f"{default_of(old)!r} with a {new.new_key} other than {new.new_value} "
            f"(it is an alias of {new.new_key} {new.new_value})")


ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")  # robustbench's zoo has corruption models for these
OWN_MODELS: Dict[str, Tuple[str, ...]] = {  # the project's source models and the datasets each serves
    "MnistCNN": OFFLINE_DATASETS, RESNET26_ARCH: tuple(RESNET26_SOURCE_OF), PYCLS_ARCH: ("imagenet", VISDA)}


def arch_allowed(arch: str, dataset: str) -> bool:
    """The project's own models on their datasets; any other name on robustbench's (its zoo then decides).
    An unknown dataset passes: CORRUPTION.DATASET's rule names it."""
    if dataset not in DATASETS:
        return True
    return dataset in OWN_MODELS[arch] if arch in OWN_MODELS else dataset in ROBUSTBENCH_DATASETS


def arch_choices(dataset: str) -> str:
    """What MODEL.ARCH may be for `dataset`, in words."""
    own = [arch for arch, datasets in OWN_MODELS.items() if dataset in datasets]
    return " or ".join(own + (["a robustbench model name"] if dataset in ROBUSTBENCH_DATASETS else []))

RULES: Dict[str, Rule] = {
    "MODEL.ADAPTATION": _one_of(ADAPTATIONS),
    "MODEL.ADAPTATIONS": (lambda v, c: all(m in ADAPTATIONS for m in v), f"a list of methods from {ADAPTATIONS}"),
    "MODEL.ARCH": (lambda v, c: arch_allowed(v, c.CORRUPTION.DATASET),
                   lambda c: f"{arch_choices(c.CORRUPTION.DATASET)} for CORRUPTION.DATASET {c.CORRUPTION.DATASET}"),
    "MODEL.COPY_STATE": (lambda v, c: v or (_never_resets(c) and not c.MODEL.EPISODIC),
                         "True unless the setting never resets (no reset_each_shift, no "
                         "MODEL.RESET_AFTER_NUM_UPDATES) and MODEL.EPISODIC is False"),
    **{old: _alias_of(old) for old in DEPRECATED_KEYS},
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


def _infer_deprecated(c: CfgNode) -> None:
    """Set each new key from the deprecated key that stands for its value (the rules accepted both)."""
    for old, new in DEPRECATED_KEYS.items():
        if value_of(old, c) == new.old_value and value_of(new.new_key, c) != new.new_value:
            c.merge_from_list([new.new_key, new.new_value])


def assert_and_infer_cfg(c: CfgNode = cfg) -> None:
    """Checks config values invariants (raises ConfigError naming the key and its allowed values)."""
    for key in bounds.LIMITS:  # ceilings first: a huge value never reaches a rule's check
        bounds.check_value(key, value_of(key, c), default_of(key), "the config")
    for key, (check, allowed) in RULES.items():
        value = value_of(key, c)
        if not check(value, c):
            allowed = allowed if isinstance(allowed, str) else allowed(c)
            raise ConfigError(f"config key {key} must be {allowed}, got {value!r}")
    # deprecated keys are resolved here, after the last merge, so that a later override of either
    # key counts as it always did
    _infer_deprecated(c)
