"""The ProDA stage chain: each stage's steps, run as the reference README runs them.

    python -m proda.pipeline stage1 | stage2 | stage3 | all [--dry_run]
    python -m proda.pipeline train ARGS...         # one training run (torchrun + DDP with > 1 GPU)
    python -m proda.pipeline paths WHAT ARGS...    # an entry point's file name for these options
    python -m proda.pipeline flags                 # the flags every step gets
    python -m proda.pipeline configs STAGE...      # the stage config files (stops when one is missing)

scripts/proda_stage{1,2,3}.sh and proda_all.sh run the stage commands; scripts/proda_lib.sh lists
the settings (environment variables: SRC, CFG_DIR, SRC_ROOT, TGT_ROOT, WARMUP, WARMUP_CKPT,
STAGE1_CKPT, STAGE2_CKPT, LOG_DIR, PSEUDO_DIR, SIMCLR_CKPT, EXTRA_ARGS, NGPU, PYTHON). Every step
is an entry point run as its own process (python -m proda.generate_pseudo_label, calc_prototype,
train); a step whose output exists and records the same inputs (proda.manifest) is skipped, and
training resumes from its current checkpoint, so a rerun continues a chain that stopped. Paths
given in the settings are made absolute (symbolic links resolved), so a config's --root does not
apply to them. Errors end in one line and a non-zero status: 2 for a bad setting or option, the
failing step's status for a failed step.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence

from proda import manifest
from proda.paths import model_file, prototype_file
from proda.options import Options, get_parser, parse_opt
from proda.weight_sources import released

PROG = "proda.pipeline"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIXES = {"gta5": "gta2city", "synthia": "syn2city"}  # SRC -> the configs' file-name prefix
BEST_SUFFIX = "_best_model.pkl"


class Stop(Exception):
    """Ends the chain: one line on stderr (none when `message` is empty) and the exit `status`."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


# ----------------------------------------------------------------------------- settings

def words(text: str) -> List[str]:
    """The words of the first line of `text`, as bash's `read -r -a` splits it."""
    line = text.split("\n", 1)[0]
    return [w for w in re.split(r"[ \t]+", line) if w]


def absolute(path: str) -> str:
    """Absolute form of a path with symbolic links resolved (`realpath -m`: it need not exist)."""
    return os.path.realpath(path)


@dataclass(frozen=True)
class Settings:
    """The chain's settings, read from the environment (scripts/proda_lib.sh lists them)."""

    src: str
    cfg_dir: str
    python: str
    environ: Mapping[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "Settings":
        """Settings of `environ`; a bad SRC stops with status 2."""
        src = environ.get("SRC") or "gta5"
        if src not in PREFIXES:
            raise Stop(f"SRC must be gta5 or synthia, got '{src}'", 2)
        return cls(src, environ.get("CFG_DIR") or os.path.join(REPO, "configs"),
                   environ.get("PYTHON") or "python", environ)

    def get(self, name: str) -> str:
        """An environment setting ('' when unset)."""
        return self.environ.get(name, "")

    def config(self, stage: str) -> str:
        """Path of a stage's config file, e.g. stage1 -> <CFG_DIR>/gta2city_stage1.py."""
        return os.path.join(self.cfg_dir, f"{PREFIXES[self.src]}_{stage}.py")

    def need_configs(self, *stages: str) -> None:
        """Stop with status 2 when a stage's config file is missing."""
        for stage in stages:
            if not os.path.isfile(self.config(stage)):
                raise Stop(f"config {self.config(stage)} not found (CFG_DIR={self.cfg_dir}, SRC={self.src})", 2)

    def common_flags(self) -> List[str]:
        """Flags every step gets: the data roots (SRC_ROOT, TGT_ROOT) and EXTRA_ARGS."""
        flags = []
        for variable, flag in (("SRC_ROOT", "--src_rootpath"), ("TGT_ROOT", "--tgt_rootpath")):
            if self.get(variable):
                flags += [flag, absolute(self.get(variable))]
        return flags + words(self.get("EXTRA_ARGS"))

    def stage_flags(self, stage: str) -> List[str]:
        """--config of a stage with the common flags."""
        return ["--config", self.config(stage)] + self.common_flags()

    def gpu_count(self) -> int:
        """GPUs to train on: NGPU, else the entries of CUDA_VISIBLE_DEVICES, else nvidia-smi's count."""
        if self.get("NGPU"):
            if not self.get("NGPU").isdigit():
                raise Stop(f"NGPU must be a whole number, got '{self.get('NGPU')}'", 2)
            return int(self.get("NGPU"))
        if "CUDA_VISIBLE_DEVICES" in self.environ:
            ids = self.get("CUDA_VISIBLE_DEVICES").replace(" ", "")
            return 0 if not ids or ids.startswith("-1") else len(ids.split(","))
        if shutil.which("nvidia-smi"):
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout
            return sum(line.startswith("GPU") for line in listing.splitlines())
        return 0


# ----------------------------------------------------------------------------- options and file names

def options(args: Sequence[str]) -> Options:
    """The options `args` resolve to, as the entry points resolve them (bad ones exit 2 with one line)."""
    parser = get_parser()
    parser.prog = PROG
    return parse_opt(list(args), parser=parser)


def checked(check: Callable[..., bool], *args: object) -> bool:
    """A proda.manifest check; its refusal (an output of other inputs) stops the chain with one line."""
    try:
        return check(*args)
    except (ValueError, RuntimeError, OSError) as err:  # OptionError, CheckpointError, file errors
        raise Stop(str(err)) from err


def best_model(opt: Options) -> str:
    """Absolute path of the best checkpoint a training run with `opt` writes."""
    return os.path.abspath(model_file(opt, "best"))


def last_of(best: str) -> str:
    """The last checkpoint beside the best one (train.py writes both)."""
    return (best[:-len(BEST_SUFFIX)] if best.endswith(BEST_SUFFIX) else best) + "_last_model.pkl"


def prototypes(opt: Options) -> str:
    """Absolute path of the prototype file calc_prototype writes beside --resume_path."""
    return os.path.abspath(prototype_file(opt, opt.tgt_dataset))


def pseudo_folder(opt: Options) -> str:
    """The pseudo-label folder generate_pseudo_label fills: <save_path>/<name>."""
    return os.path.join(opt.save_path, opt.name)


PATHS: Dict[str, Callable[[Options], str]] = {
    "best_model": best_model,
    "last_model": lambda opt: last_of(best_model(opt)),
    "pseudo_labels": lambda opt: os.path.abspath(pseudo_folder(opt)),
    "prototypes": prototypes,
    "resume_path": lambda opt: os.path.abspath(opt.resume_path),
    "simclr_path": lambda opt: os.path.abspath(opt.simclr_path),
}


def logdir_flags(settings: Settings, args: Sequence[str]) -> List[str]:
    """--logdir LOG_DIR/<name> for a step's config when LOG_DIR is set (training runs, and the run logs
    of the pseudo-label and prototype steps, which would otherwise land in ./logs/<name>)."""
    if not settings.get("LOG_DIR"):
        return []
    return ["--logdir", os.path.join(absolute(settings.get("LOG_DIR")), options(args).name)]


# ----------------------------------------------------------------------------- running steps

class Runner:
    """Prints and runs the steps' commands (with dry_run: prints them only)."""

    def __init__(self, settings: Settings, dry_run: bool = False):
        self.settings, self.dry_run = settings, dry_run

    def say(self, line: str = "") -> None:
        """Print a line before a child process writes to the same terminal."""
        print(line, flush=True)

    def step(self, heading: str) -> None:
        """Print a step heading."""
        self.say()
        self.say(f"==> {heading}")

    def require_file(self, path: str, hint: str) -> None:
        """Stop when a checkpoint a step needs is missing (a dry run plans on)."""
        if not os.path.isfile(path) and not self.dry_run:
            raise Stop(f"{path} not found ({hint})")

    def run(self, command: List[str]) -> None:
        """Echo a command, then run it; its failure stops the chain with its exit status."""
        self.say("+ " + " ".join(command))
        if self.dry_run:
            return
        # like a shell: Ctrl-C reaches the child, which saves and exits 130; the chain then stops
        previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
        try:
            status = subprocess.call(command)
        except OSError as err:
            raise Stop(f"{command[0]}: {err.strerror}", 127) from err
        finally:
            signal.signal(signal.SIGINT, previous)
        if status:
            raise Stop("", 128 - status if status < 0 else status)  # killed by a signal: 128 + its number

    def module(self, name: str, args: Sequence[str]) -> None:
        """Run `python -m <name> args`."""
        self.run([self.settings.python, "-m", name, *args])

    def train(self, args: Sequence[str]) -> None:
        """Train: torchrun + DDP (SyncBatchNorm) with more than one GPU, else one process. proda.launch
        takes torchrun's arguments and ends in the failing process's one line, not torchrun's report."""
        n = self.settings.gpu_count()
        if n > 1:
            self.module("proda.launch", ["--standalone", f"--nproc_per_node={n}", "-m", "proda.train", *args])
        else:
            self.module("proda.train", args)

    def report_models(self, best: str) -> None:
        """A trained stage's two models: the best (selected on the target val set, as the reference
        selects it) and the last (the final iteration)."""
        self.say(f"  best model (selected on the target val set): {best}")
        self.say(f"  last model (final iteration):                {last_of(best)}")


# ----------------------------------------------------------------------------- the stages

def pseudo_labels(runner: Runner, ckpt: str, heading: str, args: Sequence[str]) -> str:
    """Generate pseudo labels of `ckpt` unless the folder is complete; returns the folder."""
    settings = runner.settings
    args = list(args)
    if settings.get("PSEUDO_DIR"):
        args += ["--save_path", absolute(settings.get("PSEUDO_DIR"))]
    args += ["--resume_path", ckpt]
    args += logdir_flags(settings, args)
    opt = options(args)
    folder = os.path.abspath(pseudo_folder(opt))
    runner.step(f"{heading} -> {folder}")
    # complete and made from this checkpoint and these options (else: refused, or not done)
    if checked(manifest.pseudo_labels_done, opt, pseudo_folder(opt), ".complete"):
        runner.say(f"    skipped: {folder} is complete and made from {ckpt}")
    else:
        runner.module("proda.generate_pseudo_label", args)
    return folder


def train_stage(runner: Runner, stage: str, heading: str, extra: Sequence[str]) -> str:
    """Train a stage config (with LOG_DIR's --logdir and `extra` flags); returns its best checkpoint."""
    args = runner.settings.stage_flags(stage)
    args += logdir_flags(runner.settings, args) + list(extra)
    best = best_model(options(args))
    runner.step(f"{heading} -> {best}")
    runner.train(args)
    return best


def warmup(runner: Runner) -> str:
    """The adversarial warm-up (maintainers' recipe, <CFG_DIR>/<prefix>_warmup.py); returns its best model."""
    runner.settings.need_configs("warmup")
    return train_stage(runner, "warmup", "[warm-up] adversarial warm-up", [])


def stage1(runner: Runner, warmup_override: str = "") -> None:
    """Stage 1 (reference README, "Stage1"): soft pseudo labels and target prototypes of the
    warm-up model, then training with prototype-rectified pseudo labels (train --stage stage1)."""
    settings = runner.settings
    settings.need_configs("stage1", "stage1_pseudo", "stage1_prototypes")
    common = settings.common_flags()
    start = absolute(warmup_override) if warmup_override else \
        os.path.abspath(options(settings.stage_flags("stage1")).resume_path)
    runner.require_file(start, f"the warm-up checkpoint: {released(PREFIXES[settings.src], 'warmup').download_line()}, "
                               f"or train it with: python -m proda.train --config {settings.config('warmup')}")
    runner.say(f"ProDA stage 1 ({settings.src}, configs in {settings.cfg_dir}) from the warm-up model {start}")

    soft = pseudo_labels(runner, start, "[stage 1, step 1/3] soft pseudo labels of the warm-up model",
                         settings.stage_flags("stage1_pseudo"))

    proto_args = ["--config", settings.config("stage1_prototypes"), *common, "--resume_path", start]
    proto_args += logdir_flags(settings, proto_args)
    opt = options(proto_args)
    runner.step(f"[stage 1, step 2/3] target prototypes of the warm-up model -> {prototypes(opt)}")
    if checked(manifest.prototypes_done, opt, prototypes(opt)):
        runner.say(f"    skipped: {prototypes(opt)} is made from {start}")
    else:
        runner.module("proda.calc_prototype", proto_args)

    best = train_stage(runner, "stage1", "[stage 1, step 3/3] train stage 1",
                       ["--resume_path", start, "--path_soft", soft])
    runner.say("stage 1 done:")
    runner.report_models(best)


def distill(runner: Runner, n: int, previous: str, teacher_override: str = "") -> None:
    """Stage 2 or 3 (reference README, "Stage2" / "Stage3"): hard pseudo labels (flip) of the previous
    stage's model (the teacher), then self-distillation training (train --stage stage<n>)."""
    settings = runner.settings
    settings.need_configs(f"stage{n}_pseudo", f"stage{n}")
    if teacher_override:
        teacher = absolute(teacher_override)
    else:
        settings.need_configs(previous)
        args = settings.stage_flags(previous)
        teacher = best_model(options(args + logdir_flags(settings, args)))
    runner.require_file(teacher, f"the {previous} model: run scripts/proda_{previous}.sh, "
                                 f"or set {previous.upper()}_CKPT to the released one "
                                 f"({released(PREFIXES[settings.src], previous).download_line()})")
    runner.say(f"ProDA stage {n} ({settings.src}, configs in {settings.cfg_dir}) from the {previous} model {teacher}")

    labels = pseudo_labels(runner, teacher, f"[stage {n}, step 1/2] hard pseudo labels (flip) of the {previous} model",
                           settings.stage_flags(f"stage{n}_pseudo"))
    extra = ["--resume_path", teacher, "--path_LP", labels]
    if settings.get("SIMCLR_CKPT"):
        extra += ["--simclr_path", absolute(settings.get("SIMCLR_CKPT"))]
    best = train_stage(runner, f"stage{n}", f"[stage {n}, step 2/2] train stage {n} (distillation)", extra)
    runner.say(f"stage {n} done:")
    runner.report_models(best)


def chain(runner: Runner) -> None:
    """The whole chain: [warm-up ->] stage 1 -> stage 2 -> stage 3 (WARMUP=pretrained | train)."""
    mode = runner.settings.get("WARMUP") or "pretrained"
    if mode not in ("pretrained", "train"):
        raise Stop(f"WARMUP must be pretrained or train, got '{mode}'", 2)
    start = warmup(runner) if mode == "train" else runner.settings.get("WARMUP_CKPT")
    stage1(runner, start)
    distill(runner, 2, "stage1", runner.settings.get("STAGE1_CKPT"))
    distill(runner, 3, "stage2", runner.settings.get("STAGE2_CKPT"))


STAGES: Dict[str, Callable[[Runner], None]] = {
    "stage1": lambda runner: stage1(runner, runner.settings.get("WARMUP_CKPT")),
    "stage2": lambda runner: distill(runner, 2, "stage1", runner.settings.get("STAGE1_CKPT")),
    "stage3": lambda runner: distill(runner, 3, "stage2", runner.settings.get("STAGE2_CKPT")),
    "all": chain,
}


# ----------------------------------------------------------------------------- command line

def print_lines(lines: Sequence[str]) -> None:
    """One value a line, for the shell's `mapfile`."""
    for line in lines:
        print(line)


def run_command(command: str, rest: List[str], settings: Settings) -> None:
    """Run one subcommand."""
    if command in STAGES:
        parser = argparse.ArgumentParser(prog=f"{PROG} {command}", description=STAGES[command].__doc__)
        parser.add_argument("--dry_run", action="store_true", help="print the steps and commands without running them")
        STAGES[command](Runner(settings, parser.parse_args(rest).dry_run))
    elif command == "train":
        Runner(settings).train(rest)
    elif command == "paths":
        if not rest or rest[0] not in PATHS:
            raise Stop(f"paths: WHAT must be one of {', '.join(PATHS)}", 2)
        print(PATHS[rest[0]](options(rest[1:])))
    elif command == "flags":
        print_lines(settings.common_flags())
    elif command == "configs":
        settings.need_configs(*rest)
        print_lines([settings.config(stage) for stage in rest])


def main(argv: Optional[Sequence[str]] = None, environ: Optional[Mapping[str, str]] = None) -> None:
    """Command line: a subcommand and its arguments (see the module's docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=[*STAGES, "train", "paths", "flags", "configs"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the subcommand's arguments")
    if not argv or argv[0] in ("-h", "--help"):
        parser.parse_args(argv)
    parsed = parser.parse_args(argv[:1])
    try:
        run_command(parsed.command, argv[1:], Settings.from_environ(os.environ if environ is None else environ))
    except Stop as stop:
        sys.stdout.flush()
        if str(stop):
            print(f"error: {stop}", file=sys.stderr, flush=True)
        sys.exit(stop.status)


if __name__ == "__main__":
    main()
