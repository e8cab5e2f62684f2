"""Command-line options of every ProDA entry point, and the `--config FILE` mechanism.

All entry points (train, calc_prototype, generate_pseudo_label, test) accept one option set:
the reference `parser_train.py` flags with the reference defaults, the entry-specific flags
of the reference scripts (`--soft`, `--flip`, `--save_path`, `--source`), and a few
additions that are documented in place and listed in docs/fidelity.md. The options come in
groups; each entry point's --help lists the shared groups and its own (ENTRY_GROUPS), while
a shared config file or command line may still set the others.

`parse_opt` resolves the options once -- the entry point's overrides, paths under --root,
under torchrun each process's batch and device -- and returns them frozen (`Options`).

Precedence: built-in defaults < config file (and its `_base_` files) < command-line flags.
An unknown option name or a wrongly typed value in a config file stops with one line
naming the option (exit status 2).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from proda.config import Config, ConfigError

STAGES = ("warm_up", "src_only", "stage1", "stage2", "stage3")


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


class OneLineParser(argparse.ArgumentParser):
    """argparse reporting a bad flag in one line (exit 2), not the usage text plus the message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Exit 2 with one line naming the flag."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


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
    "hardware": "hardware [added] (train.py; docs/proda-hardware.md)",
    "logging": "logging (train.py)",
    "pseudo labels": "pseudo labels to write (generate_pseudo_label.py)",
    "prototypes": "prototypes to compute (calc_prototype.py)",
    "test": "test outputs (test.py)",
    "tta": "test-time adaptation [added] (test.py; tent, Wang et al. ICLR 2021; see docs/tta.md)",
}


def get_parser(description: str = "ProDA", entry: Optional[str] = None) -> argparse.ArgumentParser:
    """The shared parser: reference flags and defaults first, additions marked as such.

    `entry` (train, test, generate_pseudo_label, calc_prototype) hides the other entry points'
    groups from --help; None shows every group (the shell helpers, tests).
    """
    p = OneLineParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=str, default=None,
                   help="Python config file of option assignments (see configs/); flags given on the command line override it")
    group = {key: p.add_argument_group(title) for key, title in GROUP_TITLES.items()}

    g = group["paths"]
    g.add_argument("--root", type=str, default="",
                   help="prefix for the relative data, checkpoint and pseudo-label paths below (reference: '/mnt/blob' plus 'Code/ProDA'; here: empty = relative to the working directory)")
    g.add_argument("--name", type=str, default="gta2city", help="experiment name: logs go to logs/<name>, pseudo labels to <save_path>/<name>")
    g.add_argument("--logdir", type=str, default="", help="[added] log and checkpoint directory (default: logs/<name>)")
    g.add_argument("--resume_path", type=str, default="pretrained/warmup/from_gta5_to_cityscapes_on_deeplab101_best_model_warmup.pkl",
                   help="checkpoint to start from (warm-up / previous stage); its folder also holds the prototype file")
    g.add_argument("--src_rootpath", type=str, default="Dataset/GTA5")
    g.add_argument("--tgt_rootpath", type=str, default="Dataset/cityscapes")
    g.add_argument("--simclr_path", type=str, default="pretrained/simclr/r101_1x_sk0.pth",
                   help="[added] SimCLR ResNet-101 checkpoint for --student_init simclr (reference: fixed path)")
    g.add_argument("--imagenet_path", type=str, default="",
                   help="[added] local torchvision ResNet-101 ImageNet weights (default: torch hub cache, resnet101-5d3b4d8f.pth)")

    g = group["model"]
    g.add_argument("--model_name", type=str, default="deeplabv2", choices=["deeplabv2"])
    g.add_argument("--bn", type=str, default="sync_bn", choices=["sync_bn", "bn"],
                   help="sync_bn: torch SyncBatchNorm when training on several GPUs (plain BatchNorm2d otherwise)")
    g.add_argument("--student_init", type=str, default="stage1", choices=["stage1", "imagenet", "simclr", "random"],
                   help="backbone initialisation before --resume_path is loaded ('random' [added]: no pretrained weights)")
    g.add_argument("--bn_clr", action="store_true", help="if true, add a bn layer for the output of simclr model")
    g.add_argument("--backbone_layers", type=_layers, default=[3, 4, 23, 3],
                   help="[added] bottleneck blocks per ResNet stage; 3,4,23,3 is ResNet-101 (smaller for tests and the CPU demo)")
    g.add_argument("--trim_aspp", action="store_true",
                   help="[added] ASPP's dilated 3x3 convs skip the kernel taps that fall outside a feature map "
                        "smaller than their dilation (they read zero padding only): same function, rounding "
                        "differs (~1e-7); speeds up tiny images (the CPU demo), never triggers at the reference sizes")

    g = group["data"]
    g.add_argument("--src_dataset", type=str, default="gta5", choices=["gta5", "synthia", "cityscapes"])
    g.add_argument("--tgt_dataset", type=str, default="cityscapes", choices=["cityscapes"])
    g.add_argument("--n_class", type=int, default=19, choices=[19, 16, 13])
    g.add_argument("--bs", type=int, default=4, help="total batch size (split across torchrun processes, as the reference's DataParallel split it across GPUs)")
    g.add_argument("--num_workers", type=int, default=6)
    g.add_argument("--no_droplast", action="store_true")
    g.add_argument("--src_img_size", type=_pair, default=None,
                   help="[added] W,H the source images are resized to first (default: the reference's, GTA5 1914,1052 / SYNTHIA 1280,760)")
    g.add_argument("--tgt_img_size", type=_pair, default=None,
                   help="[added] W,H the target images are resized to first (default: the reference's 2048,1024)")

    g = group["runtime"]
    g.add_argument("--seed", type=int, default=1337, help="random seed")
    g.add_argument("--device", type=str, default="auto", help="[added] auto (CUDA when present) | cpu | cuda | cuda:N")
    g.add_argument("--restart", action="store_true",
                   help="[added] start over: ignore an interrupted or finished run's checkpoint in the log dir "
                        "(train), or relabel / recompute outputs made from other inputs (pseudo labels, prototypes)")
    g.add_argument("--trust_checkpoint", action="store_true",
                   help="[added] also load checkpoint files that pickle arbitrary Python objects; such a file can "
                        "run any code on this machine when loaded, so use it only for files from a source you trust")

    g = group["training"]
    g.add_argument("--stage", type=str, default="stage1", choices=STAGES,
                   help="warm_up (adversarial) | src_only (source only) | stage1 (denoising + structure) | stage2/stage3 (distillation)")
    g.add_argument("--lr", type=float, default=0.0001)
    g.add_argument("--epochs", type=int, default=84, help="epochs over the target loader")
    g.add_argument("--train_iters", type=int, default=90000, help="length of the poly learning-rate schedule")
    g.add_argument("--max_iters", type=int, default=0,
                   help="[added] stop after this many iterations (0: run all --epochs, as the reference)")
    g.add_argument("--no_resume", action="store_true", help="do not load --resume_path into the student")
    g.add_argument("--finetune", action="store_true", help="separate 1x / 10x learning rates for backbone / head")
    g.add_argument("--unique_lr_params", action="store_true",
                   help="[added] give SGD each backbone parameter once in the 1x group (the corrected form; the "
                        "reference's get_1x_lr_params yields most of them 3-4 times, so with --finetune or "
                        "warm_up SGD updates them 3-4 times per step)")
    g.add_argument("--freeze_bn", action="store_true")
    g.add_argument("--ema", action="store_true", help="use ema model")
    g.add_argument("--ema_bn", action="store_true", help="add extra bn for ema model")
    g.add_argument("--moving_prototype", action="store_true")
    g.add_argument("--proto_momentum", type=float, default=0.0001)
    g.add_argument("--proto_rectify", action="store_true")
    g.add_argument("--proto_temperature", type=float, default=1.0)
    g.add_argument("--train_thred", type=float, default=0, help="stage 1: rectified pseudo labels below this probability are ignored")

    g = group["training data"]
    g.add_argument("--resize", type=int, default=2200, help="resize long size")
    g.add_argument("--rcrop", type=_pair, default=[896, 512], help="random crop size W,H")
    g.add_argument("--hflip", type=float, default=0.5, help="random flip probability")
    g.add_argument("--noshuffle", action="store_true", help="do not use shuffle")
    g.add_argument("--noaug", action="store_true", help="do not use data augmentation")
    g.add_argument("--used_save_pseudo", action="store_true", help="if True used saved pseudo label")
    g.add_argument("--path_LP", type=str, default="Pseudo/pretrain_warmup/LP0.95", help="folder of hard pseudo labels (stage 2/3)")
    g.add_argument("--path_soft", type=str, default="Pseudo/pretrain_warmup_soft/LP0.0", help="folder of soft pseudo labels (stage 1)")
    g.add_argument("--threshold", type=float, default=-1, help="stage 2/3: pseudo labels with confidence <= threshold are ignored")

    g = group["losses"]
    g.add_argument("--gan", type=str, default="LS", choices=["Vanilla", "LS"])
    g.add_argument("--adv", type=float, default=0.01, help="loss weight of adv loss, only use when stage=warm_up")
    g.add_argument("--S_pseudo_src", type=float, default=0.0, help="loss weight of pseudo label for strong augmentation of source")
    g.add_argument("--rce", action="store_true", help="if true, use symmetry cross entropy loss")
    g.add_argument("--rce_alpha", type=float, default=0.1, help="loss weight for symmetry cross entropy loss")
    g.add_argument("--rce_beta", type=float, default=1.0, help="loss weight for symmetry cross entropy loss")
    g.add_argument("--regular_w", type=float, default=0, help="loss weight for regular term")
    g.add_argument("--regular_type", type=str, default="MRKLD", choices=["MRENT", "MRKLD"])
    g.add_argument("--proto_consistW", type=float, default=1.0, help="loss weight for proto_consist")
    g.add_argument("--distillation", type=float, default=0, help="kl loss weight")
    g.add_argument("--kd_log_softmax", action="store_true",
                   help="[added] pass a log-softmax student to the distillation KL (the corrected form; "
                        "the reference passes a softmax, microsoft/ProDA issues 20 and 43)")
    g.add_argument("--S_pseudo", type=float, default=0.0, help="loss weight of pseudo label for strong augmentation")

    g = group["hardware"]
    g.add_argument("--amp", type=str, default="off", choices=["off", "bf16", "fp16"],
                   help="mixed precision: autocast the network forwards (losses, prototypes and the EMA update stay "
                        "float32); fp16 adds gradient scaling")
    g.add_argument("--accum_steps", type=int, default=1,
                   help="gradient accumulation: each optimiser step sums this many micro-batches of bs / accum_steps "
                        "(--bs stays the effective batch)")
    g.add_argument("--scale_lr", action="store_true",
                   help="scale every learning rate by bs / 4 (the reference's batch), the maintainers' advice for other batch sizes")
    g.add_argument("--freeze_bn_stats", action="store_true",
                   help="normalise with the running batch-norm statistics and stop updating them, but keep training "
                        "the affine parameters (micro-batches then normalise as the whole batch would)")

    g = group["logging"]
    g.add_argument("--print_interval", type=int, default=20, help="print loss")
    g.add_argument("--val_interval", type=int, default=1000, help="validate model iter")

    g = group["pseudo labels"]
    g.add_argument("--save_path", type=str, default="./Pseudo", help="output folder (pseudo labels go to <save_path>/<name>)")
    g.add_argument("--soft", action="store_true", help="save soft pseudo label")
    g.add_argument("--flip", action="store_true", help="average with the flipped image")

    g = group["prototypes"]
    g.add_argument("--source", action="store_true", help="calc source prototype")

    g = group["test"]
    g.add_argument("--results_json", type=str, default="",
                   help="[added] also write mIoU and per-class IoU to this JSON file")
    g.add_argument("--save_pred", type=str, default="",
                   help="[added] folder for colour-coded prediction PNGs (empty: none)")

    g = group["tta"]
    g.add_argument("--tta", type=str, default="none", choices=["none", "norm", "tent"],
                   help="adapt while evaluating: norm (test-batch BN statistics) or tent (also entropy steps on the BN affine)")
    g.add_argument("--tta_lr", type=float, default=1e-3, help="tent's learning rate (the tent reference's Adam 1e-3)")
    g.add_argument("--tta_steps", type=int, default=1, help="tent's gradient steps per batch")
    g.add_argument("--tta_optim", type=str, default="adam", choices=["adam", "sgd"], help="tent's optimiser (SGD: momentum 0.9)")
    g.add_argument("--tta_episodic", action="store_true",
                   help="restore the network before every batch (with --bs 1: every image); default: online over the stream")
    g.add_argument("--tta_bn_stats", type=str, default="batch", choices=["batch", "source"],
                   help="tent: normalise with the test batch's statistics (tent) or keep the source running statistics and adapt only the affine")
    if entry is not None:
        hide_groups(group, ENTRY_GROUPS[entry])
        others = ", ".join(f"proda.{e}" for e in ENTRY_GROUPS if e != entry)
        p.epilog = (f"The options of the other entry points ({others}; see their --help) are accepted too, "
                    "so that one config file serves every step of a stage; they do nothing here.")
    return p


def hide_groups(groups: Dict[str, Any], shown: Sequence[str]) -> None:
    """Leave the options of groups not in `shown` out of --help and usage (they are still accepted)."""
    for key, group in groups.items():
        if key not in shown:
            for action in group._group_actions:
                action.help = argparse.SUPPRESS


def option_names(parser: argparse.ArgumentParser) -> Dict[str, argparse.Action]:
    """Options a config file may set, by destination name."""
    return {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}


def _check_value(action: argparse.Action, key: str, value: Any, path: str) -> Any:
    """Coerce a config value like the flag would, or explain in one line why not."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"option '{key}' in {path}: {why}")

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise bad(f"expected True or False, got {value!r}")
        return value
    if action.type is _pair or action.type is _layers:
        if value is None:
            return None
        text = ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
        try:
            value = action.type(text)
        except argparse.ArgumentTypeError as err:
            raise bad(str(err)) from None
    elif action.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (action.type is int and isinstance(value, float)):
            raise bad(f"expected {action.type.__name__}, got {value!r}")
        value = action.type(value)
    elif action.type is str and not isinstance(value, str):
        raise bad(f"expected a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise bad(f"{value!r} is not one of {list(action.choices)}")
    return value


def load_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    """Read a config file and validate every key and value against the parser's options."""
    cfg = Config.fromfile(path)
    known = option_names(parser)
    checked = {}
    for key, value in cfg.items():
        if key not in known:
            raise ConfigError(f"unknown option '{key}' in {path} (see --help for the option names)")
        checked[key] = _check_value(known[key], key, value, path)
    return checked


PATH_OPTIONS = ("resume_path", "src_rootpath", "tgt_rootpath", "path_LP", "path_soft", "save_path",
                "simclr_path", "imagenet_path")


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


# (option, lowest allowed value, text of the allowed range): checked before any work starts
LOWER_BOUNDS = [("bs", 1, ">= 1"), ("epochs", 0, ">= 0"), ("train_iters", 1, ">= 1"), ("max_iters", 0, ">= 0"),
                ("lr", 0, ">= 0"), ("num_workers", 0, ">= 0"), ("print_interval", 1, ">= 1"),
                ("val_interval", 1, ">= 1"), ("resize", 1, ">= 1"), ("proto_temperature", 1e-12, "> 0"),
                ("adv", 0, ">= 0"), ("rce_alpha", 0, ">= 0"), ("rce_beta", 0, ">= 0"), ("regular_w", 0, ">= 0"),
                ("proto_consistW", 0, ">= 0"), ("distillation", 0, ">= 0"), ("S_pseudo", 0, ">= 0"),
                ("S_pseudo_src", 0, ">= 0"), ("seed", 0, ">= 0"),
                ("accum_steps", 1, ">= 1"), ("tta_lr", 0, ">= 0"), ("tta_steps", 1, ">= 1")]
UNIT_INTERVAL = ["hflip", "proto_momentum", "train_thred"]
SEED_LIMIT = 2 ** 32  # NumPy's seed must be below it (np.random.seed raises ValueError)


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


def option_problem(opt: argparse.Namespace) -> Optional[str]:
    """The first option value outside its allowed range, as one line naming it, or None."""
    for key, value in vars(opt).items():  # inf passes every `>= low` check and trains to NaN
        if isinstance(value, float) and not math.isfinite(value):
            return f"--{key} {value} is out of range: must be a finite number"
    for key, low, allowed in LOWER_BOUNDS:
        if not getattr(opt, key) >= low:  # `not >=`: NaN is out of range too
            return f"--{key} {getattr(opt, key)} is out of range: must be {allowed}"
    for key in UNIT_INTERVAL:
        if not 0 <= getattr(opt, key) <= 1:
            return f"--{key} {getattr(opt, key)} is out of range: must be in [0, 1]"
    if opt.seed >= SEED_LIMIT:
        return f"--seed {opt.seed} is out of range: must be < 2**32 ({SEED_LIMIT})"
    if opt.bn_clr and opt.student_init not in ("simclr", "random"):
        return (f"--bn_clr adds the SimCLR student's extra batch norm, which --student_init {opt.student_init} "
                "does not build: add --student_init simclr (the reference's pairing) or drop --bn_clr")
    if not -1 <= opt.threshold <= 1:
        return f"--threshold {opt.threshold} is out of range: must be in [-1, 1]"
    for key in ("rcrop", "src_img_size", "tgt_img_size"):
        size = getattr(opt, key)
        if size is not None and min(size) < 1:
            return f"--{key} {','.join(map(str, size))} is out of range: both sizes must be >= 1"
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
    if pre.config:
        try:
            parser.set_defaults(**load_config(pre.config, parser))
        except ConfigError as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
    opt = parser.parse_args(argv)
    problem = option_problem(opt)
    if not problem:
        opt, problem = resolve(opt, overrides)
    if problem:
        parser.exit(2, f"{parser.prog}: error: {problem}\n")
    return opt
