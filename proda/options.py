"""Command-line options of every ProDA entry point, declared once, and the `--config FILE` mechanism.

All entry points (train, calc_prototype, generate_pseudo_label, test) accept one option set:
the reference `parser_train.py` flags with the reference defaults, the entry-specific flags
of the reference scripts (`--soft`, `--flip`, `--save_path`, `--source`), and a few
additions marked [added] in their help and listed in docs/fidelity.md.

Each option is one `Option` in `OPTIONS`: flag name, type, default, help, group, allowed
values, whether it is a path under --root, and which outputs it feeds (the records a rerun
compares, proda/manifest.py). The parser, the range checks, `PATH_OPTIONS` and the manifest's
option lists are derived from that table. Each entry point's --help lists the shared groups
and its own (ENTRY_GROUPS), while a shared config file or command line may still set the others.

`parse_opt` resolves the options once -- the entry point's overrides, paths under --root,
under torchrun each process's batch and device -- and returns them frozen (`Options`).

Precedence: built-in defaults < config file (and its `_base_` files) < command-line flags.
An unknown option name or a wrongly typed value in a config file stops with one line
naming the option (exit status 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from proda.config import Config, ConfigError

STAGES = ("warm_up", "src_only", "stage1", "stage2", "stage3")
SEED_LIMIT = 2 ** 32  # NumPy's seed must be below it (np.random.seed raises ValueError)


def _pair(text: str) -> List[int]:
    """Parse 'W,H' into [W, H]."""
    try:
        w, h = (int(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'W,H' (two integers), got {text!r}") from None
    return [w, h]


def _layers(text: str) -> List[int]:
    """Parse '3,4,23,3' into four block counts."""
    try:
        blocks = [int(v) for v in str(text).split(",")]
    except ValueError:
        blocks = []
    if len(blocks) != 4 or min(blocks) < 1:
        raise argparse.ArgumentTypeError(f"expected four positive block counts like '3,4,23,3', got {text!r}")
    return blocks


# ----------------------------------------------------------------------------- allowed values
# A check takes an option's value and returns what the value must be ("must be >= 1"), or None.

Check = Callable[[Any], Optional[str]]


def at_least(low: float, text: str = "") -> Check:
    """Values >= low (NaN is out of range too)."""
    return lambda value: None if value >= low else f"must be {text or f'>= {low}'}"


def below(limit: int, text: str) -> Check:
    """Values < limit."""
    return lambda value: None if value < limit else f"must be < {text}"


def within(low: float, high: float) -> Check:
    """Values in [low, high]."""
    return lambda value: None if low <= value <= high else f"must be in [{low}, {high}]"


def sizes_at_least(low: int) -> Check:
    """W,H pairs whose sizes are both >= low (None: the dataset's own size)."""
    return lambda size: None if size is None or min(size) >= low else f"both sizes must be >= {low}"


# ----------------------------------------------------------------------------- the --help groups
# The option groups, by key; every entry point accepts every option (a config or a script's
# EXTRA_ARGS is shared between the steps of a stage), but its --help lists only the groups it uses.
SHARED_GROUPS = ("paths", "model", "data", "runtime")
ENTRY_GROUPS = {
    "train": SHARED_GROUPS + ("training", "training data", "losses", "hardware", "logging"),
    "generate_pseudo_label": SHARED_GROUPS + ("pseudo labels",),
    "calc_prototype": SHARED_GROUPS + ("prototypes",),
    "test": SHARED_GROUPS + ("test", "tta"),
}
GROUP_TITLES = {
    "paths": "paths", "model": "model", "data": "data", "runtime": "runtime",
    "training": "training: stage, schedule, prototypes (train.py)",
    "training data": "training data: augmentation and saved pseudo labels (train.py)",
    "losses": "losses (train.py)",
    "hardware": "hardware [added] (train.py; docs/proda.md)",
    "logging": "logging (train.py)",
    "pseudo labels": "pseudo labels to write (generate_pseudo_label.py)",
    "prototypes": "prototypes to compute (calc_prototype.py)",
    "test": "test outputs (test.py)",
    "tta": "test-time adaptation [added] (test.py; tent, Wang et al. ICLR 2021; see docs/proda.md)",
}


# ----------------------------------------------------------------------------- the declarations
# The outputs an option's value feeds: it is recorded beside them, and a rerun with another
# value refuses to reuse them (proda/manifest.py). Paths to inputs feed nothing by value:
# the content they point to is recorded instead (checkpoint and pseudo-label hashes).
LABELS, PROTOTYPES, TRAINING = "pseudo labels", "prototypes", "training"
EVERY_OUTPUT = (LABELS, PROTOTYPES, TRAINING)  # the target data and the network
NOT_LABELS = (PROTOTYPES, TRAINING)            # the source data, the batch and the seed
NO_OUTPUT = ()                                 # where outputs go, how fast, and paths to recorded inputs


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its flag (--name), type (None: an on/off flag), default, help, choices, the
    checks of its values, whether it is a path under --root, the outputs it feeds, its group."""

    name: str
    type: Optional[Callable[[str], Any]] = None
    default: Any = False
    help: Optional[str] = None
    choices: Optional[Sequence[Any]] = None
    checks: Tuple[Check, ...] = ()
    path: bool = False
    feeds: Tuple[str, ...] = (TRAINING,)
    group: str = ""


def group(key: str, *options: Option) -> Tuple[Option, ...]:
    """The options of one --help group."""
    return tuple(dataclasses.replace(option, group=key) for option in options)


def flag(name: str, help: Optional[str] = None, feeds: Tuple[str, ...] = (TRAINING,)) -> Option:
    """An on/off option (off by default)."""
    return Option(name, help=help, feeds=feeds)


def ratio(name: str, default: float, help: Optional[str] = None) -> Option:
    """A float in [0, 1]."""
    return Option(name, float, default, help, checks=(within(0, 1),))


def weight(name: str, default: float, help: Optional[str] = None) -> Option:
    """A loss weight or learning rate: a float >= 0."""
    return Option(name, float, default, help, checks=(at_least(0),))


def count(name: str, default: int, low: int, help: Optional[str] = None, feeds: Tuple[str, ...] = (TRAINING,)) -> Option:
    """An integer >= low."""
    return Option(name, int, default, help, checks=(at_least(low),), feeds=feeds)


def path_option(name: str, default: str, help: Optional[str] = None, feeds: Tuple[str, ...] = NO_OUTPUT) -> Option:
    """A path, prefixed with --root when relative."""
    return Option(name, str, default, help, path=True, feeds=feeds)


def string(name: str, default: str, help: Optional[str] = None, choices: Optional[Sequence[str]] = None,
         feeds: Tuple[str, ...] = (TRAINING,)) -> Option:
    """A string option."""
    return Option(name, str, default, help, choices=choices, feeds=feeds)


def size(name: str, default: Optional[List[int]], help: str, feeds: Tuple[str, ...]) -> Option:
    """A 'W,H' image size."""
    return Option(name, _pair, default, help, checks=(sizes_at_least(1),), feeds=feeds)


OPTIONS: Tuple[Option, ...] = (
    string("config", None, "Python config file of option assignments (see configs/); flags given on the command line override it",
           feeds=NO_OUTPUT),
    *group(
        "paths",
        string("root", "", "prefix for the relative data, checkpoint and pseudo-label paths below (reference: "
                           "'/mnt/blob' plus 'Code/ProDA'; here: empty = relative to the working directory)",
               feeds=NO_OUTPUT),
        string("name", "gta2city", "experiment name: logs go to logs/<name>, pseudo labels to <save_path>/<name>", feeds=NO_OUTPUT),
        string("logdir", "", "[added] log and checkpoint directory (default: logs/<name>)", feeds=NO_OUTPUT),
        path_option("resume_path", "pretrained/warmup/from_gta5_to_cityscapes_on_deeplab101_best_model_warmup.pkl",
             "checkpoint to start from (warm-up / previous stage); its folder also holds the prototype file"),
        path_option("src_rootpath", "Dataset/GTA5", feeds=NOT_LABELS),
        path_option("tgt_rootpath", "Dataset/cityscapes", feeds=EVERY_OUTPUT),
        path_option("simclr_path", "pretrained/simclr/r101_1x_sk0.pth",
             "[added] SimCLR ResNet-101 checkpoint for --student_init simclr (reference: fixed path)"),
        path_option("imagenet_path", "",
             "[added] local torchvision ResNet-101 ImageNet weights (default: torch hub cache, resnet101-5d3b4d8f.pth)"),
    ),
    *group(
        "model",
        string("model_name", "deeplabv2", choices=["deeplabv2"], feeds=EVERY_OUTPUT),
        string("bn", "sync_bn", "sync_bn: torch SyncBatchNorm when training on several GPUs (plain BatchNorm2d otherwise)",
               choices=["sync_bn", "bn"]),
        string("student_init", "stage1", "backbone initialisation before --resume_path is loaded ('random' [added]: no pretrained weights)",
               choices=["stage1", "imagenet", "simclr", "random"]),
        flag("allow_partial_init", "[added] accept an --imagenet_path / --simclr_path file that initialises only part "
                                   "of the backbone (default: refuse it; the reference silently trains from the rest)",
             feeds=NO_OUTPUT),
        flag("bn_clr", "if true, add a bn layer for the output of simclr model", feeds=EVERY_OUTPUT),
        Option("backbone_layers", _layers, [3, 4, 23, 3],
               "[added] bottleneck blocks per ResNet stage; 3,4,23,3 is ResNet-101 (smaller for tests and the CPU demo)",
               feeds=EVERY_OUTPUT),
        flag("trim_aspp", "[added] ASPP's dilated 3x3 convs skip the kernel taps that fall outside a feature map "
                          "smaller than their dilation (they read zero padding only): same function, rounding "
                          "differs (~1e-7); speeds up tiny images (the CPU demo), never triggers at the reference sizes"),
    ),
    *group(
        "data",
        string("src_dataset", "gta5", choices=["gta5", "synthia", "cityscapes"], feeds=NOT_LABELS),
        string("tgt_dataset", "cityscapes", choices=["cityscapes"], feeds=EVERY_OUTPUT),
        Option("n_class", int, 19, choices=[19, 16, 13], feeds=EVERY_OUTPUT),
        count("bs", 4, 1, "total batch size (split across torchrun processes, as the reference's DataParallel split it across GPUs)",
              feeds=NOT_LABELS),
        count("num_workers", 6, 0, "DataLoader worker processes (unset: the reference's 6, or the CPUs this "
                                   "process may use when fewer)", feeds=NO_OUTPUT),
        flag("no_droplast"),
        size("src_img_size", None, "[added] W,H the source images are resized to first (default: the reference's, "
                                   "GTA5 1914,1052 / SYNTHIA 1280,760)", feeds=NOT_LABELS),
        size("tgt_img_size", None, "[added] W,H the target images are resized to first (default: the reference's 2048,1024)",
             feeds=EVERY_OUTPUT),
    ),
    *group(
        "runtime",
        Option("seed", int, 1337, "random seed", checks=(at_least(0), below(SEED_LIMIT, f"2**32 ({SEED_LIMIT})")),
               feeds=NOT_LABELS),
        string("device", "auto", "[added] auto (CUDA when present) | cpu | cuda | cuda:N", feeds=NO_OUTPUT),
        flag("restart", "[added] start over: ignore an interrupted or finished run's checkpoint in the log dir "
                        "(train), or relabel / recompute outputs made from other inputs (pseudo labels, prototypes)",
             feeds=NO_OUTPUT),
        flag("trust_checkpoint", "[added] also load checkpoint files that pickle arbitrary Python objects; such a file can "
                                 "run any code on this machine when loaded, so use it only for files from a source you trust",
             feeds=NO_OUTPUT),
    ),
    *group(
        "training",
        string("stage", "stage1", "warm_up (adversarial) | src_only (source only) | stage1 (denoising + structure) "
                                  "| stage2/stage3 (distillation)", choices=STAGES),
        weight("lr", 0.0001),
        count("epochs", 84, 0, "epochs over the target loader", feeds=NO_OUTPUT),
        count("train_iters", 90000, 1, "length of the poly learning-rate schedule"),
        count("max_iters", 0, 0, "[added] stop after this many iterations (0: run all --epochs, as the reference)",
              feeds=NO_OUTPUT),
        flag("no_resume", "do not load --resume_path into the student"),
        flag("finetune", "separate 1x / 10x learning rates for backbone / head"),
        flag("unique_lr_params", "[added] give SGD each backbone parameter once in the 1x group (the corrected form; the "
                                 "reference's get_1x_lr_params yields most of them 3-4 times, so with --finetune or "
                                 "warm_up SGD updates them 3-4 times per step)"),
        flag("freeze_bn"),
        flag("ema", "use ema model"),
        flag("ema_bn", "add extra bn for ema model"),
        flag("moving_prototype"),
        ratio("proto_momentum", 0.0001),
        flag("proto_rectify"),
        Option("proto_temperature", float, 1.0, checks=(at_least(1e-12, "> 0"),)),
        ratio("train_thred", 0, "stage 1: rectified pseudo labels below this probability are ignored"),
    ),
    *group(
        "training data",
        count("resize", 2200, 1, "resize long size"),
        size("rcrop", [896, 512], "random crop size W,H", feeds=(TRAINING,)),
        ratio("hflip", 0.5, "random flip probability"),
        flag("noshuffle", "do not use shuffle"),
        flag("noaug", "do not use data augmentation"),
        flag("used_save_pseudo", "if True used saved pseudo label"),
        path_option("path_LP", "Pseudo/pretrain_warmup/LP0.95", "folder of hard pseudo labels (stage 2/3)"),
        path_option("path_soft", "Pseudo/pretrain_warmup_soft/LP0.0", "folder of soft pseudo labels (stage 1)"),
        Option("threshold", float, -1, "stage 2/3: pseudo labels with confidence <= threshold are ignored",
               checks=(within(-1, 1),)),
    ),
    *group(
        "losses",
        string("gan", "LS", choices=["Vanilla", "LS"]),
        weight("adv", 0.01, "loss weight of adv loss, only use when stage=warm_up"),
        weight("S_pseudo_src", 0.0, "loss weight of pseudo label for strong augmentation of source"),
        flag("rce", "if true, use symmetry cross entropy loss"),
        weight("rce_alpha", 0.1, "loss weight for symmetry cross entropy loss"),
        weight("rce_beta", 1.0, "loss weight for symmetry cross entropy loss"),
        weight("regular_w", 0, "loss weight for regular term"),
        string("regular_type", "MRKLD", choices=["MRENT", "MRKLD"]),
        weight("proto_consistW", 1.0, "loss weight for proto_consist"),
        weight("distillation", 0, "kl loss weight"),
        flag("kd_log_softmax", "[added] pass a log-softmax student to the distillation KL (the corrected form; "
                               "the reference passes a softmax, microsoft/ProDA issues 20 and 43)"),
        weight("S_pseudo", 0.0, "loss weight of pseudo label for strong augmentation"),
    ),
    *group(
        "hardware",
        string("amp", "off", "mixed precision: autocast the network forwards (losses, prototypes and the EMA update stay "
                             "float32); fp16 adds gradient scaling", choices=["off", "bf16", "fp16"]),
        count("accum_steps", 1, 1, "gradient accumulation: each optimiser step sums this many micro-batches of bs / accum_steps "
                                   "(--bs stays the effective batch)"),
        flag("scale_lr", "scale every learning rate by bs / 4 (the reference's batch), the maintainers' advice for other batch sizes"),
        flag("freeze_bn_stats", "normalise with the running batch-norm statistics and stop updating them, but keep training "
                                "the affine parameters (micro-batches then normalise as the whole batch would)"),
    ),
    *group(
        "logging",
        count("print_interval", 20, 1, "print loss", feeds=NO_OUTPUT),
        count("val_interval", 1000, 1, "validate model iter"),
    ),
    *group(
        "pseudo labels",
        path_option("save_path", "./Pseudo", "output folder (pseudo labels go to <save_path>/<name>)"),
        flag("soft", "save soft pseudo label", feeds=(LABELS,)),
        flag("flip", "average with the flipped image", feeds=(LABELS,)),
    ),
    *group(
        "prototypes",
        flag("source", "calc source prototype", feeds=(PROTOTYPES,)),
    ),
    *group(
        "test",
        string("results_json", "", "[added] also write mIoU and per-class IoU to this JSON file", feeds=NO_OUTPUT),
        string("save_pred", "", "[added] folder for colour-coded prediction PNGs (empty: none)", feeds=NO_OUTPUT),
    ),
    *group(
        "tta",
        string("tta", "none", "adapt while evaluating: norm (test-batch BN statistics) or tent (also entropy steps on the BN affine)",
               choices=["none", "norm", "tent"]),
        weight("tta_lr", 1e-3, "tent's learning rate (the tent reference's Adam 1e-3)"),
        count("tta_steps", 1, 1, "tent's gradient steps per batch"),
        string("tta_optim", "adam", "tent's optimiser (SGD: momentum 0.9)", choices=["adam", "sgd"]),
        flag("tta_episodic", "restore the network before every batch (with --bs 1: every image); default: online over the stream"),
        string("tta_bn_stats", "batch", "tent: normalise with the test batch's statistics (tent) or keep the source "
                                        "running statistics and adapt only the affine", choices=["batch", "source"]),
    ),
)
DECLARED: Dict[str, Option] = {option.name: option for option in OPTIONS}
PATH_OPTIONS = tuple(option.name for option in OPTIONS if option.path)


def feeding(output: str) -> List[str]:
    """The options whose value is recorded with `output` (LABELS, PROTOTYPES or TRAINING)."""
    return [option.name for option in OPTIONS if output in option.feeds]


# ----------------------------------------------------------------------------- parser and config files

class OneLineParser(argparse.ArgumentParser):
    """argparse reporting a bad flag in one line (exit 2), not the usage text plus the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Exit 2 with one line naming the flag."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def get_parser(description: str = "ProDA", entry: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of every declared option, in its --help group.

    `entry` (train, test, generate_pseudo_label, calc_prototype) hides the other entry points'
    groups from --help; None shows every group (the shell helpers, tests).
    """
    p = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    groups = {key: p.add_argument_group(title) for key, title in GROUP_TITLES.items()}
    shown = ENTRY_GROUPS[entry] if entry is not None else tuple(GROUP_TITLES)
    for option in OPTIONS:
        hidden = bool(option.group) and option.group not in shown
        add_option(groups[option.group] if option.group else p, option, hidden)
    if entry is not None:
        others = ", ".join(f"proda.{e}" for e in ENTRY_GROUPS if e != entry)
        p.epilog = (f"The options of the other entry points ({others}; see their --help) are accepted too, "
                    "so that one config file serves every step of a stage; they do nothing here.")
    return p


def add_option(parser: Any, option: Option, hidden: bool = False) -> None:
    """Add one declared option to a parser or argument group (`hidden`: accepted, not in --help)."""
    help = argparse.SUPPRESS if hidden else option.help
    if option.type is None:
        parser.add_argument(f"--{option.name}", action="store_true", help=help)
    else:
        parser.add_argument(f"--{option.name}", type=option.type, default=option.default, choices=option.choices,
                            help=help)


def _check_value(option: Option, value: Any, path: str) -> Any:
    """Coerce a config value like the flag would, or explain in one line why not."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"option '{option.name}' in {path}: {why}")

    if option.type is None:
        if not isinstance(value, bool):
            raise bad(f"expected True or False, got {value!r}")
        return value
    if option.type is _pair or option.type is _layers:
        if value is None:
            return None
        text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        try:
            value = option.type(text)
        except argparse.ArgumentTypeError as err:
            raise bad(str(err)) from None
    elif option.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (option.type is int and isinstance(value, float)):
            raise bad(f"expected {option.type.__name__}, got {value!r}")
        value = option.type(value)
    elif option.type is str and not isinstance(value, str):
        raise bad(f"expected a string, got {value!r}")
    if option.choices is not None and value not in option.choices:
        raise bad(f"{value!r} is not one of {list(option.choices)}")
    return value


def load_config(path: str) -> Dict[str, Any]:
    """Read a config file and validate every key and value against the declared options."""
    checked = {}
    for key, value in Config.fromfile(path).items():
        if key not in DECLARED or key == "config":
            raise ConfigError(f"unknown option '{key}' in {path} (see --help for the option names)")
        checked[key] = _check_value(DECLARED[key], value, path)
    return checked


def resolved_paths(opt: argparse.Namespace) -> Dict[str, str]:
    """Relative paths prefixed with --root, and the log directory (default logs/<name>)."""
    def under_root(path: str) -> str:
        return path if (not opt.root or not path or os.path.isabs(path)) else os.path.join(opt.root, path)

    paths = {key: under_root(getattr(opt, key)) for key in PATH_OPTIONS}
    paths["logdir"] = under_root(opt.logdir or os.path.join("logs", opt.name))
    return paths


def process_share(opt: argparse.Namespace, environ: Mapping[str, str]) -> Tuple[Dict[str, Any], Optional[str]]:
    """Under torchrun (WORLD_SIZE > 1): this process's batch and device, or why --bs cannot be split.

    Each process drives one GPU (cuda:LOCAL_RANK). The reference's --bs was the total batch of
    its DataParallel run, so each process takes bs / world_size images.
    """
    world = int(environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return {}, None
    if opt.bs % world:
        return {}, f"--bs {opt.bs} is the total batch size and must be divisible by the {world} processes"
    share: Dict[str, Any] = {"bs": opt.bs // world}
    if share["bs"] % opt.accum_steps:  # [added] --accum_steps cuts each process's batch
        return {}, (f"--accum_steps {opt.accum_steps} must divide each process's batch of {share['bs']} "
                    f"(--bs / {world} processes)")
    import torch  # here, not at the top: --help and the shell helpers stay fast
    if torch.cuda.is_available():
        share["device"] = f"cuda:{int(environ.get('LOCAL_RANK', '0'))}"
    return share, None


def check_device(name: str) -> Optional[str]:
    """Why --device cannot be used here, or None (parsed by torch; CUDA must be present for cuda)."""
    if name in ("auto", "cpu"):
        return None
    import torch  # here, not at the top: --help stays fast
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:N"
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)"
        if device.index is not None and device.index >= count:
            return f"--device {name}: only cuda:0..cuda:{count - 1} exist"
    elif device.type != "cpu":
        return f"--device {name}: only auto, cpu, cuda and cuda:N are supported"
    return None


def range_problem(opt: argparse.Namespace) -> Optional[str]:
    """The first option value outside its declared range, as one line naming it, or None."""
    for key, value in vars(opt).items():  # inf passes every `>= low` check and trains to NaN
        if isinstance(value, float) and not math.isfinite(value):
            return f"--{key} {value} is out of range: must be a finite number"
    for option in OPTIONS:
        value = getattr(opt, option.name)
        for check in option.checks:
            why = check(value)
            if why:
                shown = ",".join(map(str, value)) if isinstance(value, list) else value
                return f"--{option.name} {shown} is out of range: {why}"
    return None


def option_problem(opt: argparse.Namespace) -> Optional[str]:
    """The first option value outside its range or contradicting another, as one line naming it, or None."""
    problem = range_problem(opt)
    if problem:
        return problem
    if opt.bn_clr and opt.student_init not in ("simclr", "random"):
        return (f"--bn_clr adds the SimCLR student's extra batch norm, which --student_init {opt.student_init} "
                "does not build: add --student_init simclr (the reference's pairing) or drop --bn_clr")
    if opt.bs % opt.accum_steps:
        return f"--accum_steps {opt.accum_steps} does not divide --bs {opt.bs}: micro-batches must be equal"
    return check_device(opt.device)


class FrozenOptionsError(AttributeError):
    """An attempt to change options after they were resolved."""


class Options(argparse.Namespace):
    """Resolved options, frozen: read them as attributes or through vars(); replace() makes a changed copy."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenOptionsError(f"options are frozen once resolved: cannot set {name!r} "
                                 f"(make a changed copy with opt.replace({name}=...))")

    def __delattr__(self, name: str) -> None:
        raise FrozenOptionsError(f"options are frozen once resolved: cannot delete {name!r}")

    def replace(self, **changes: Any) -> "Options":
        """A frozen copy with `changes` applied (only existing option names, as dataclasses.replace)."""
        unknown = sorted(set(changes) - set(vars(self)))
        if unknown:
            raise TypeError(f"no such options: {', '.join(unknown)}")
        return Options(**{**vars(self), **changes})


def resolve(opt: argparse.Namespace, overrides: Optional[Mapping[str, Any]] = None,
            environ: Optional[Mapping[str, str]] = None) -> Tuple[Optional[Options], Optional[str]]:
    """Checked, parsed options -> the frozen options (entry overrides, paths, each process's share), or why not."""
    opt = Options(**vars(opt)).replace(**(overrides or {}))
    share, problem = process_share(opt, os.environ if environ is None else environ)
    if problem:
        return None, problem
    return opt.replace(**resolved_paths(opt), **share), None


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(parser: argparse.ArgumentParser, argv: Sequence[str], config: Mapping[str, Any]) -> Dict[str, int]:
    """--num_workers when neither the command line nor the config sets it: the reference's 6, or fewer
    on a machine with fewer CPUs (more workers than CPUs only compete, and the DataLoader warns)."""
    probe = argparse.Namespace(num_workers=None)  # argparse leaves a value already present: None = not given
    parser.parse_known_args(list(argv), namespace=probe)
    if probe.num_workers is not None or "num_workers" in config:
        return {}
    return {"num_workers": min(DECLARED["num_workers"].default, available_cpus())}


def parse_opt(argv: Optional[Sequence[str]] = None, description: str = "ProDA",
              parser: Optional[argparse.ArgumentParser] = None, entry: Optional[str] = None,
              overrides: Optional[Mapping[str, Any]] = None) -> Options:
    """Parse defaults < --config file < command line, apply the entry point's `overrides`, resolve, freeze.

    The one place options are computed: paths under --root, the log directory, and under torchrun
    each process's batch and device. Nothing changes them afterwards (see Options).
    """
    parser = parser or get_parser(description, entry=entry)
    argv = list(sys.argv[1:] if argv is None else argv)
    pre, _ = parser.parse_known_args(argv)
    config: Dict[str, Any] = {}
    if pre.config:
        try:
            config = load_config(pre.config)
        except ConfigError as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        parser.set_defaults(**config)
    opt = parser.parse_args(argv)
    problem = option_problem(opt)
    if not problem:
        opt, problem = resolve(opt, {**default_workers(parser, argv, config), **(overrides or {})})
    if problem:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    return opt
