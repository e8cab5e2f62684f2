"""Trust and errors: no checkpoint runs code, and every bad input ends in one line and an exit status.

Each bad input goes through the real entry point (`tent.cifar10c.main`, a few also as a
subprocess of `python cifar10c.py` / `python -m tent.cifar10c`) and must end with its exit
status, exactly one line on stderr without a traceback, and no existing file changed.
"""
import errno
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

import tent  # noqa: F401  (installs the autoattack alias robustbench needs)
from dacommon import checkpoints
from tent import cifar10c, conf, conf_checks, launch, models, preflight, safe_load
from tent.errors import CorruptFileError, UnsafeCheckpointError

pytestmark = pytest.mark.usefixtures("fresh_cfg")

REPO = Path(__file__).resolve().parents[2]
N_CIFAR = 10000  # images per severity in a CIFAR-10-C file
SMALL_ARCH = "Hendrycks2020AugMix_WRN"  # robustbench's smallest CIFAR-10 corruptions model (WRN-40-2)
MNIST_CFG = ("MODEL:\n  ARCH: MnistCNN\n  ADAPTATION: tent\nCORRUPTION:\n  DATASET: mnist\n  NUM_EX: 20\n"
             "  SEVERITY: [5]\n  TYPE: [fog]\nMNISTC:\n  NUM_TRAIN: 500\n  WIDTH: 4\n  EPOCHS: 1\n")
CIFAR_CFG = f"MODEL:\n  ARCH: {SMALL_ARCH}\n  ADAPTATION: source\nCORRUPTION:\n  NUM_EX: 4\n  SEVERITY: [5]\n  TYPE: [fog]\n"


class Payload:
    """Unpickling this calls open(marker, 'w'): a pickle that runs code creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def craft(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A checkpoint whose loading with weights_only=False creates `marker` (zip or raw pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if legacy:
        path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}, protocol=2))
    else:
        torch.save({"state_dict": Payload(marker)}, path)
    return path


def snapshot(root: Path) -> Dict[str, Tuple[int, int, str]]:
    """Size, mtime and content hash of every file under root."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in root.rglob("*") if p.is_file()}


def unchanged(before: Dict[str, Tuple[int, int, str]], root: Path) -> bool:
    """Whether every file in `before` still exists with the same size, mtime and content."""
    after = snapshot(root)
    return all(after.get(path) == stamp for path, stamp in before.items())


def stderr_lines(text: str) -> List[str]:
    """The lines of stderr a user reads (library deprecation warnings left out)."""
    return [ln for ln in text.splitlines() if ln.strip() and "Warning" not in ln and not ln.startswith(" ")]


def error_lines(text: str) -> List[str]:
    """The error lines of stderr; the run's INFO log (also on stderr, as in the reference) left out.

    The error must be the last line, so a user sees it without scrolling."""
    lines = stderr_lines(text)
    errors = [ln for ln in lines if "error: " in ln]
    return errors if errors and lines[-1] == errors[-1] else lines


def run_main(argv: List[str], capsys) -> Tuple[int, List[str], str]:
    """Exit status, the error lines and the raw stderr of cifar10c.main(argv)."""
    try:
        status = cifar10c.main(argv)
    except SystemExit as e:  # config errors exit from load_cfg_fom_args, as in the reference
        status = e.code
    err = capsys.readouterr().err
    return status, error_lines(err), err


def write_cfg(tmp_path: Path, text: str) -> Path:
    """A config file in tmp_path."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def dirs(tmp_path: Path) -> List[str]:
    """Overrides pointing every folder into tmp_path."""
    return ["SAVE_DIR", str(tmp_path / "out"), "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(tmp_path / "ckpt")]


# ------------------------------ Safe loading -------------------------------- #

def test_payload_is_live_when_loaded_unsafely(tmp_path):
    """Control: the crafted file really runs code under weights_only=False (so the tests below mean something)."""
    marker = tmp_path / "marker"
    torch.load(craft(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "raw-pickle"])
def test_load_checkpoint_refuses_code_in_one_line(tmp_path, legacy):
    marker = tmp_path / "marker"
    path = craft(tmp_path / "evil.pt", marker, legacy)
    with pytest.raises(UnsafeCheckpointError) as exc:
        safe_load.load_checkpoint(path)
    message = str(exc.value)
    assert str(path) in message and "MODEL.TRUST_CHECKPOINT" in message and "\n" not in message
    assert not marker.exists()


def test_trust_is_the_only_route_to_a_full_unpickle(tmp_path):
    path = tmp_path / "numpy_scalar.pt"
    torch.save({"acc": np.float64(0.5), "w": torch.ones(2)}, path)  # numpy scalars need a global
    with pytest.raises(UnsafeCheckpointError, match="numpy"):
        safe_load.load_checkpoint(path)
    assert safe_load.load_checkpoint(path, trust=True)["acc"] == 0.5


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html>quota exceeded</html>", b"", "truncated"])
def test_corrupt_checkpoint_is_named_in_one_line(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        torch.save({"w": torch.ones(100)}, path)
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(CorruptFileError) as exc:
        safe_load.load_checkpoint(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_third_party_loads_are_weights_only_and_restore_the_environment(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    path = craft(tmp_path / "evil.pt", marker)
    monkeypatch.setenv(checkpoints.FORCE_UNSAFE, "1")  # a user environment that would unpickle anything
    with pytest.raises(UnsafeCheckpointError):
        with safe_load.third_party_loads(path):
            torch.load(path, weights_only=False)  # what torchvision's hub loader passes
    assert not marker.exists()
    assert os.environ[checkpoints.FORCE_UNSAFE] == "1" and checkpoints.FORCE_SAFE not in os.environ


def small_model_checkpoint(ckpt_dir: Path) -> Dict[str, torch.Tensor]:
    """A valid robustbench checkpoint file for SMALL_ARCH (random weights); returns its state dict."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(0)
    model = model_dicts[BenchmarkDataset.cifar_10][ThreatModel.corruptions][SMALL_ARCH]["model"]()
    path = ckpt_dir / "cifar10" / "corruptions" / f"{SMALL_ARCH}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, path)
    return model.state_dict()


@pytest.fixture(scope="module")
def small_ckpt_dir(tmp_path_factory) -> Path:
    """A CKPT_DIR holding a valid SMALL_ARCH checkpoint (9 MB, written once per module)."""
    ckpt_dir = tmp_path_factory.mktemp("ckpt")
    small_model_checkpoint(ckpt_dir)
    return ckpt_dir


def test_robustbench_checkpoint_loads_weights_only(small_ckpt_dir, monkeypatch):
    monkeypatch.setenv(checkpoints.FORCE_UNSAFE, "1")  # ignored: our load is weights-only anyway
    model = models.load_robustbench_model(SMALL_ARCH, str(small_ckpt_dir), "cifar10")
    saved = torch.load(small_ckpt_dir / "cifar10" / "corruptions" / f"{SMALL_ARCH}.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved["state_dict"][name])


def craft_robustbench(tmp_path: Path, marker: Path, monkeypatch) -> List[str]:
    """Crafted cifar10 Standard.pt; overrides for it."""
    craft(tmp_path / "ckpt" / "cifar10" / "corruptions" / "Standard.pt", marker)
    return ["MODEL.ARCH", "Standard", "CORRUPTION.DATASET", "cifar10"]


def craft_hub_resnet50(tmp_path: Path, marker: Path, monkeypatch) -> List[str]:
    """Crafted torchvision ResNet-50 weights in the torch hub cache (torchvision loads them unsafely)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    craft(tmp_path / "torch_home" / "hub" / "checkpoints" / models.R50_FILE, marker)
    return ["MODEL.ARCH", "Standard_R50", "CORRUPTION.DATASET", "imagenet", "CORRUPTION.NUM_EX", "10"]


def craft_mnist_cnn(tmp_path: Path, marker: Path, monkeypatch) -> List[str]:
    """Crafted cached MnistCNN checkpoint, at the path of MNIST_CFG's training settings."""
    settings = dict(models.DEFAULT_TRAIN_CFG, num_train=500, width=4, epochs=1)
    craft(models.mnist_cnn_path(str(tmp_path / "ckpt"), settings), marker)
    return []


@pytest.mark.parametrize("craft_files", [craft_robustbench, craft_hub_resnet50, craft_mnist_cnn])
def test_crafted_checkpoint_never_runs_through_the_entry_point(tmp_path, monkeypatch, capsys, craft_files):
    monkeypatch.setenv(checkpoints.FORCE_UNSAFE, "1")  # robustbench's own torch.load would then run it
    marker = tmp_path / "marker"
    overrides = craft_files(tmp_path, marker, monkeypatch)
    (tmp_path / "c.yaml").write_text(MNIST_CFG)
    before = snapshot(tmp_path)
    status, lines, err = run_main(["--cfg", str(tmp_path / "c.yaml"), *dirs(tmp_path), *overrides], capsys)
    assert not marker.exists()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err
    assert "MODEL.TRUST_CHECKPOINT" in lines[0] and "refused" in lines[0]
    assert unchanged(before, tmp_path)


# ------------------------------ Bad config values --------------------------- #
def alias_bomb(levels: int = 7, fan: int = 9) -> str:
    """A YAML flow list of a few hundred bytes that expands to fan ** levels values ("billion laughs")."""
    parts = ["&a0 [" + ", ".join(["0"] * fan) + "]"]
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * fan) + "]" for i in range(1, levels)]
    return "[" + ", ".join(parts) + "]"


def mapping_bomb(levels: int = 7, fan: int = 9) -> str:
    """Nested YAML mappings of a few hundred bytes whose keys expand to fan ** levels entries."""
    lines = ["m0: &m0 {" + ", ".join(f"k{j}: 0" for j in range(fan)) + "}"]
    lines += [f"m{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(fan)) + "}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


DEEP = "[" * 3000 + "0" + "]" * 3000  # 3,000 nested lists
# (id, overrides, text the one line must contain); all on the offline MNIST-C config
BAD_CONFIG = [
    ("lr-negative", ["OPTIM.LR", "-1e-3"], "OPTIM.LR"),
    ("lr-inf", ["OPTIM.LR", "1e999"], "OPTIM.LR"),
    ("wd-negative", ["OPTIM.WD", "-0.1"], "OPTIM.WD"),
    ("beta-1", ["OPTIM.BETA", "1.0"], "OPTIM.BETA"),
    ("beta-negative", ["OPTIM.BETA", "-0.1"], "OPTIM.BETA"),
    ("momentum-negative", ["OPTIM.MOMENTUM", "-0.9"], "OPTIM.MOMENTUM"),
    ("dampening-2", ["OPTIM.DAMPENING", "2.0"], "OPTIM.DAMPENING"),
    ("nesterov-no-momentum", ["OPTIM.METHOD", "SGD", "OPTIM.MOMENTUM", "0"], "OPTIM.NESTEROV"),
    ("optimizer", ["OPTIM.METHOD", "RMSprop"], "OPTIM.METHOD"),
    ("steps-0", ["OPTIM.STEPS", "0"], "OPTIM.STEPS"),
    ("bn-mom-1", ["BN.MOM", "1.0"], "BN.MOM"),
    ("bn-mom-negative", ["BN.MOM", "-0.1"], "BN.MOM"),
    ("bn-eps-0", ["BN.EPS", "0"], "BN.EPS"),
    ("bn-eps-negative", ["BN.EPS", "-1e-5"], "BN.EPS"),
    ("batch-size-0", ["TEST.BATCH_SIZE", "0"], "TEST.BATCH_SIZE"),
    ("num-ex-0", ["CORRUPTION.NUM_EX", "0"], "CORRUPTION.NUM_EX"),
    ("severity-6", ["CORRUPTION.SEVERITY", "[6]"], "CORRUPTION.SEVERITY"),
    ("severity-empty", ["CORRUPTION.SEVERITY", "[]"], "CORRUPTION.SEVERITY"),
    ("severity-float", ["CORRUPTION.SEVERITY", "[5.0]"], "CORRUPTION.SEVERITY"),
    ("type-unknown", ["CORRUPTION.TYPE", "[fgo]"], "CORRUPTION.TYPE"),
    ("type-empty", ["CORRUPTION.TYPE", "[]"], "CORRUPTION.TYPE"),
    ("type-not-list", ["CORRUPTION.TYPE", "fog"], "CORRUPTION.TYPE"),
    ("dataset", ["CORRUPTION.DATASET", "svhn"], "CORRUPTION.DATASET"),
    ("adaptation", ["MODEL.ADAPTATION", "tnet"], "MODEL.ADAPTATION"),
    ("adaptations", ["MODEL.ADAPTATIONS", "[source, bn]"], "MODEL.ADAPTATIONS"),
    ("arch-for-mnist", ["MODEL.ARCH", "Standard"], "MODEL.ARCH"),
    ("norm-layers", ["MODEL.NORM_LAYERS", "[BatchNorm]"], "MODEL.NORM_LAYERS"),
    ("norm-on-groupnorm", ["MODEL.ADAPTATION", "norm", "MODEL.NORM_LAYERS", "[GroupNorm]"], "MODEL.NORM_LAYERS"),
    ("copy-state", ["MODEL.COPY_STATE", "False"], "MODEL.COPY_STATE"),
    ("mnistc-epochs-0", ["MNISTC.EPOCHS", "0"], "MNISTC.EPOCHS"),
    ("mnistc-batch-size-0", ["MNISTC.BATCH_SIZE", "0"], "MNISTC.BATCH_SIZE"),
    ("mnistc-width-0", ["MNISTC.WIDTH", "0"], "MNISTC.WIDTH"),
    ("mnistc-lr-0", ["MNISTC.LR", "0"], "MNISTC.LR"),
    ("mnistc-num-train", ["MNISTC.NUM_TRAIN", "5000"], "MNISTC.NUM_TRAIN"),
    ("mnistc-seed-negative", ["MNISTC.SEED", "-1"], "MNISTC.SEED"),
    ("rng-seed-negative", ["RNG_SEED", "-1"], "RNG_SEED"),
    ("rng-seed-huge", ["RNG_SEED", str(2 ** 32)], "RNG_SEED"),
    ("device", ["DEVICE", "gpu0"], "DEVICE"),
    ("unknown-key", ["OPTIM.LRR", "0.1"], "OPTIM.LRR"),
    ("unknown-section", ["FOO.BAR", "1"], "FOO.BAR"),
    ("key-below-leaf", ["OPTIM.LR.X", "1"], "OPTIM.LR.X"),
    ("section-as-value", ["OPTIM", "3"], "OPTIM"),
    ("type-int-for-bool", ["MODEL.EPISODIC", "1"], "MODEL.EPISODIC"),
    ("type-float-for-int", ["TEST.BATCH_SIZE", "1.5"], "TEST.BATCH_SIZE"),
    ("type-str-for-float", ["OPTIM.LR", "fast"], "OPTIM.LR"),
    ("none", ["OPTIM.LR", "None"], "OPTIM.LR"),
    ("trust-not-bool", ["MODEL.TRUST_CHECKPOINT", "yes"], "MODEL.TRUST_CHECKPOINT"),
    ("odd-overrides", ["OPTIM.LR"], "OPTIM.LR"),
    ("save-dir-empty", ["SAVE_DIR", ""], "SAVE_DIR"),
    ("save-dir-under-a-file", ["SAVE_DIR", "{tmp}/c.yaml/out"], "SAVE_DIR"),
    ("data-dir-under-a-file", ["DATA_DIR", "{tmp}/c.yaml/data"], "DATA_DIR"),
    ("ckpt-dir-under-a-file", ["CKPT_DIR", "{tmp}/c.yaml/ckpt"], "CKPT_DIR"),
    # bounds (tent/bounds.py): shapes and sizes that would hang, exhaust memory or recurse
    ("seeds-alias-bomb", ["MNISTC.SEEDS", alias_bomb()], "MNISTC.SEEDS"),
    ("seeds-3000-deep", ["MNISTC.SEEDS", DEEP], "MNISTC.SEEDS"),
    ("seeds-nested-list", ["MNISTC.SEEDS", "[[0]]"], "MNISTC.SEEDS"),
    ("seeds-bool", ["MNISTC.SEEDS", "[true]"], "MNISTC.SEEDS"),
    ("type-nested-list", ["CORRUPTION.TYPE", "[[fog]]"], "CORRUPTION.TYPE"),
    ("mnistc-width-360-gb", ["MNISTC.WIDTH", "100000"], "MNISTC.WIDTH"),
    ("batch-size-beyond-int64", ["TEST.BATCH_SIZE", str(10 ** 30)], "TEST.BATCH_SIZE"),
    ("num-ex-beyond-int64", ["CORRUPTION.NUM_EX", str(-10 ** 30)], "CORRUPTION.NUM_EX"),
]
if not torch.cuda.is_available():
    BAD_CONFIG.append(("device-cuda-missing", ["DEVICE", "cuda"], "DEVICE"))


@pytest.mark.parametrize("overrides, named", [row[1:] for row in BAD_CONFIG], ids=[row[0] for row in BAD_CONFIG])
def test_bad_config_value_exits_2_in_one_line_before_any_work(tmp_path, capsys, overrides, named):
    (tmp_path / "c.yaml").write_text(MNIST_CFG)
    before = snapshot(tmp_path)
    overrides = [o.replace("{tmp}", str(tmp_path)) for o in overrides]
    status, lines, err = run_main(["--cfg", str(tmp_path / "c.yaml"), *dirs(tmp_path), *overrides], capsys)
    assert status == 2 and len(lines) == 1 and "Traceback" not in err
    assert named in lines[0] and "error" in lines[0]
    assert unchanged(before, tmp_path)
    assert not (tmp_path / "data").exists() and not (tmp_path / "ckpt").exists()  # nothing touched


@pytest.mark.parametrize("text, named", [
    ("MODEL: [1, 2\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping"),
    ("MODEL:\n  ARCHH: MnistCNN\n", "MODEL.ARCHH"),
    ("OPTIM:\n  LR: -0.5\n", "OPTIM.LR"),
    ("CORRUPTION:\n  SEVERITY: [5, x]\n", "CORRUPTION.SEVERITY"),
    (f"MNISTC:\n  SEEDS: {alias_bomb()}\n", "values"),
    (mapping_bomb(), "values"),
    (f"MNISTC:\n  SEEDS: {DEEP}\n", "deep"),
    ("MODEL: &m\n  SUB: *m\n", "itself"),
    ("MNISTC:\n  SEEDS: [[0]]\n", "MNISTC.SEEDS"),
    ("MNISTC:\n  WIDTH: 100000\n", "MNISTC.WIDTH"),
    ("DESC: " + "x" * 1_000_001 + "\n", "larger than"),
], ids=["yaml-syntax", "yaml-list", "file-unknown-key", "file-negative-lr", "file-bad-list-item", "file-alias-bomb",
        "file-mapping-bomb", "file-3000-deep", "file-self-reference", "file-nested-list", "file-width-360-gb",
        "file-over-1-mb"])
def test_bad_config_file_exits_2_in_one_line(tmp_path, capsys, text, named):
    (tmp_path / "c.yaml").write_text(text)
    status, lines, err = run_main(["--cfg", str(tmp_path / "c.yaml"), *dirs(tmp_path)], capsys)
    assert status == 2 and len(lines) == 1 and named in lines[0] and "Traceback" not in err


def test_empty_section_in_a_file_keeps_the_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("MODEL: {}\nOPTIM:\n  LR: 0.5\n")
    conf.merge_from_file(str(tmp_path / "c.yaml"))
    assert conf.cfg.MODEL.ARCH == "Standard" and conf.cfg.OPTIM.LR == 0.5 and conf.cfg.OPTIM.STEPS == 1


def test_python_config_file_is_read_as_yaml_never_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    (tmp_path / "c.py").write_text(f"open({str(marker)!r}, 'w')\ncfg = {{}}\n")  # yacs would execute this
    status, lines, _ = run_main(["--cfg", str(tmp_path / "c.py"), *dirs(tmp_path)], capsys)
    assert status == 2 and len(lines) == 1 and not marker.exists()


def test_missing_config_file_exits_2_in_one_line(tmp_path, capsys):
    status, lines, _ = run_main(["--cfg", str(tmp_path / "nope.yaml")], capsys)
    assert status == 2 and len(lines) == 1 and "nope.yaml" in lines[0]


def test_every_rule_names_a_real_key_and_defaults_pass():
    for key in conf_checks.RULES:
        conf_checks.value_of(key)  # a KeyError here is a typo in the table
    conf.assert_and_infer_cfg()


def test_read_only_robustbench_folders_are_fine_when_they_hold_every_input(tmp_path):
    conf.merge_from_list(["CORRUPTION.TYPE", "[fog]", "CORRUPTION.SEVERITY", "[5]",
                          "DATA_DIR", str(tmp_path), "CKPT_DIR", str(tmp_path)])
    assert not preflight.holds_inputs("DATA_DIR", conf.cfg) and not preflight.holds_inputs("CKPT_DIR", conf.cfg)
    (tmp_path / "CIFAR-10-C").mkdir()
    (tmp_path / "CIFAR-10-C" / "labels.npy").write_bytes(b"")
    (tmp_path / "CIFAR-10-C" / "fog.npy").write_bytes(b"")
    (tmp_path / "cifar10" / "corruptions").mkdir(parents=True)
    (tmp_path / "cifar10" / "corruptions" / "Standard.pt").write_bytes(b"")
    assert preflight.holds_inputs("DATA_DIR", conf.cfg) and preflight.holds_inputs("CKPT_DIR", conf.cfg)
    conf.merge_from_list(["CORRUPTION.DATASET", "mnist"])
    assert not preflight.holds_inputs("DATA_DIR", conf.cfg)  # MNIST-C caches are written on first use


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_ckpt_dir_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(MNIST_CFG)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt").chmod(0o555)
    try:
        status, lines, _ = run_main(["--cfg", str(tmp_path / "c.yaml"), *dirs(tmp_path)], capsys)
    finally:
        (tmp_path / "ckpt").chmod(0o755)
    assert status == 2 and len(lines) == 1 and "CKPT_DIR" in lines[0]


# ------------------------------ Bad data files ------------------------------ #

def write_fog(root: Path, rows: int = 5 * N_CIFAR) -> None:
    """fog.npy of `rows` black images (a sparse file: nothing is written but the header)."""
    arr = np.lib.format.open_memmap(root / "fog.npy", mode="w+", dtype=np.uint8, shape=(rows, 32, 32, 3))
    arr.flush()
    del arr


def write_cifar_c(data_dir: Path) -> Path:
    """CIFAR-10-C in robustbench's layout with labels and fog only."""
    root = data_dir / "CIFAR-10-C"
    root.mkdir(parents=True)
    np.save(root / "labels.npy", np.arange(5 * N_CIFAR, dtype=np.uint8) % 10)
    write_fog(root)
    return root


def truncate(path: Path, keep: int = 4096) -> None:
    """Cut a file after `keep` bytes, as an interrupted download does."""
    with open(path, "r+b") as f:
        f.truncate(keep)


def bad_fog_truncated(root: Path) -> str:
    truncate(root / "fog.npy")
    return "fog.npy"


def bad_labels_truncated(root: Path) -> str:
    truncate(root / "labels.npy", 100)
    return "labels.npy"


def bad_fog_not_an_array(root: Path) -> str:
    np.save(root / "fog.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)  # a pickled object
    return "fog.npy"


def bad_fog_short(root: Path) -> str:
    write_fog(root, 4 * N_CIFAR + 2)  # 2 of the 10,000 images of severity 5
    return "fog.npy"


def bad_fog_is_a_folder(root: Path) -> str:
    (root / "fog.npy").unlink()
    (root / "fog.npy").mkdir()
    return "fog.npy"


def bad_checkpoint_truncated(root: Path) -> str:
    truncate(root.parent.parent / "ckpt" / "cifar10" / "corruptions" / f"{SMALL_ARCH}.pt", 5000)
    return f"{SMALL_ARCH}.pt"


def bad_checkpoint_html(root: Path) -> str:
    path = root.parent.parent / "ckpt" / "cifar10" / "corruptions" / f"{SMALL_ARCH}.pt"
    path.write_text("<html>Google Drive - Virus scan warning</html>")  # a failed gdown download
    return f"{SMALL_ARCH}.pt"


BAD_FILES = [bad_fog_truncated, bad_labels_truncated, bad_fog_not_an_array, bad_fog_short, bad_fog_is_a_folder,
             bad_checkpoint_truncated, bad_checkpoint_html]


@pytest.mark.parametrize("spoil", BAD_FILES)
def test_bad_data_or_checkpoint_file_is_named_in_one_line(tmp_path, capsys, small_ckpt_dir, spoil):
    root = write_cifar_c(tmp_path / "data")
    ckpt = tmp_path / "ckpt" / "cifar10" / "corruptions"
    ckpt.mkdir(parents=True)
    (ckpt / f"{SMALL_ARCH}.pt").write_bytes((small_ckpt_dir / "cifar10" / "corruptions" / f"{SMALL_ARCH}.pt").read_bytes())
    named = spoil(root)
    (tmp_path / "c.yaml").write_text(CIFAR_CFG)
    before = snapshot(tmp_path)
    status, lines, err = run_main(["--cfg", str(tmp_path / "c.yaml"), *dirs(tmp_path)], capsys)
    assert status == 1 and len(lines) == 1 and "Traceback" not in err
    assert named in lines[0]
    assert unchanged(before, tmp_path)


def test_good_cifar_files_and_checkpoint_run_to_the_end(tmp_path, capsys, small_ckpt_dir):
    """Control for the rows above: the same setup, unspoilt, runs and exits 0."""
    write_cifar_c(tmp_path / "data")
    status, _, err = run_main(["--cfg", str(write_cfg(tmp_path, CIFAR_CFG)), "SAVE_DIR", str(tmp_path / "out"),
                               "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(small_ckpt_dir)], capsys)
    assert status == 0 and "Traceback" not in err


def test_os_error_on_a_cache_file_is_one_line(tmp_path, capsys):
    """An OSError (here: a folder where the MNIST split file should be) is a user error, not a traceback."""
    from tent import mnistc

    split = mnistc.split_dir(str(tmp_path / "data"), 500, 0) / "split.npz"
    split.mkdir(parents=True)
    status, lines, err = run_main(["--cfg", str(write_cfg(tmp_path, MNIST_CFG)), *dirs(tmp_path)], capsys)
    assert status == 1 and len(lines) == 1 and "split.npz" in lines[0] and "Traceback" not in err


# ------------------------------ The real command line ----------------------- #

@pytest.mark.parametrize("command, overrides, status, named", [
    (["-m", "tent.cifar10c"], ["OPTIM.LR", "-1"], 2, "OPTIM.LR"),
    (["cifar10c.py"], ["MODEL.ARCH", SMALL_ARCH, "CORRUPTION.DATASET", "cifar10"], 2, f"{SMALL_ARCH}.pt"),
], ids=["module-bad-value", "script-crafted-checkpoint"])
def test_command_line_prints_one_line_and_exits(tmp_path, command, overrides, status, named):
    marker = tmp_path / "marker"
    craft(tmp_path / "ckpt" / "cifar10" / "corruptions" / f"{SMALL_ARCH}.pt", marker)
    env = dict(os.environ, **{checkpoints.FORCE_UNSAFE: "1"})
    proc = subprocess.run([sys.executable, *command, "--cfg", str(write_cfg(tmp_path, MNIST_CFG)), *dirs(tmp_path),
                           *overrides], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    lines = error_lines(proc.stderr)
    assert proc.returncode == status and len(lines) == 1 and named in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not marker.exists()


def test_exit_status_of_user_errors_and_bugs(caplog):
    from tent import errors

    def raise_(error):
        def command():
            raise error
        return command

    assert errors.exit_status(lambda: None) == 0
    assert errors.exit_status(raise_(errors.ConfigError("config key X must be > 0"))) == 2
    assert errors.exit_status(raise_(errors.UnsafeCheckpointError("refused"))) == 2
    assert errors.exit_status(raise_(errors.CorruptFileError("cut"))) == 1
    assert errors.exit_status(raise_(PermissionError(13, "Permission denied", "/data/x.npy"))) == 1
    assert errors.exit_status(raise_(KeyboardInterrupt())) == errors.INTERRUPTED == 130
    messages = [r.getMessage() for r in caplog.records]
    assert "error: /data/x.npy: Permission denied" in messages and "interrupted" in messages
    with pytest.raises(ZeroDivisionError):  # a bug in this project keeps its traceback
        errors.exit_status(raise_(ZeroDivisionError("bug")))


# ------------------------------ Outputs: full disks, two runs in one folder -- #

@pytest.fixture()
def full_folders(monkeypatch) -> List[str]:
    """Folders (appended by the test) whose new files are /dev/full: the kernel's own ENOSPC on write."""
    import builtins
    real_open, folders = builtins.open, []

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax") \
                and any(os.path.abspath(file).startswith(f) for f in folders):
            return real_open("/dev/full", mode.replace("x", "w"), *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    return folders


def test_a_full_disk_at_the_results_is_one_line_naming_the_file_and_leaves_no_file(tmp_path, capsys, full_folders):
    full_folders.append(str(tmp_path / "out"))  # the log (os-level appends) is written; the results are not
    status, lines, err = run_main(["--cfg", str(write_cfg(tmp_path, MNIST_CFG)), *dirs(tmp_path)], capsys)
    assert status == 1 and len(lines) == 1 and "Traceback" not in err
    assert "_results.csv: No space left on device (it needs " in lines[0] and str(tmp_path / "out") in lines[0]
    left = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(left) == 1 and left[0].endswith(".txt")  # the log alone: no empty CSV, no temporary file
    assert "error (%) on mnist corruptions" in (tmp_path / "out" / left[0]).read_text()


def test_results_that_do_not_fit_are_refused_before_any_is_written(tmp_path, capsys, monkeypatch):
    real_statvfs, out = os.statvfs, str(tmp_path / "out")

    def statvfs(path):  # the file system of SAVE_DIR has 4 kB left
        st = real_statvfs(path)
        if not os.path.abspath(path).startswith(out):
            return st
        return os.statvfs_result((4096, 4096, st.f_blocks, 1, 1, st.f_files, st.f_ffree, st.f_favail, 0, 255))

    monkeypatch.setattr(os, "statvfs", statvfs)
    status, lines, err = run_main(["--cfg", str(write_cfg(tmp_path, MNIST_CFG)), *dirs(tmp_path)], capsys)
    assert status == 1 and len(lines) == 1 and "Traceback" not in err
    assert f"cannot write the results to {out}: they need " in lines[0] and "4.1 kB free" in lines[0]
    assert [p.suffix for p in (tmp_path / "out").iterdir()] == [".txt"]


def test_a_full_disk_at_the_log_is_one_line_naming_it(tmp_path, caplog):
    from tent import errors, report

    log = tmp_path / "run.txt"
    log.symlink_to("/dev/full")  # every write to it fails with the kernel's ENOSPC
    launch.setup_logging(str(log))
    logger = logging.getLogger("tent.test")
    with pytest.raises(errors.OutputError, match=r"run\.txt: No space left on device \(it needs \d+ B;"):
        logger.info("the first line of a run")
    logger.info("later lines go to the console only")  # no second error, no traceback
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, report.LogFile)]
    assert len(handlers) == 1 and handlers[0].failed


@pytest.mark.slow
def test_two_runs_into_one_folder_in_the_same_second_get_their_own_outputs(tmp_path):
    """Two real processes, the clock of both frozen at the same second, one SAVE_DIR."""
    frozen = ("import datetime, sys\nimport tent.launch\n"
              "class Frozen(datetime.datetime):\n"
              "    @classmethod\n    def now(cls, tz=None):\n        return cls(2026, 1, 1, 12, 0, 0)\n"
              "tent.launch.datetime = Frozen\nfrom tent.cifar10c import main\nsys.exit(main())\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", frozen, "--cfg", str(write_cfg(tmp_path, MNIST_CFG)),
                               *dirs(tmp_path), "OPTIM.LR", lr], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for lr in ("1e-3", "1e-2")]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    out = tmp_path / "out"
    logs = sorted(out.glob("c_260101_120000*.txt"))
    assert [p.name for p in logs] == ["c_260101_120000.txt", "c_260101_120000_2.txt"]
    lrs = set()
    for log in logs:  # each log holds one run, whose results carry the log's stem and name the log
        text = log.read_text()
        assert text.count("PyTorch Version") == 1 and f"{out / log.stem}_results.csv" in text
        payload = json.loads((out / f"{log.stem}_results.json").read_text())
        assert payload["log"] == log.name
        lrs.add(payload["lr"])
    assert lrs == {1e-3, 1e-2} and len(list(out.glob("*_results.csv"))) == 2


@pytest.fixture()
def read_only_folders(monkeypatch) -> List[str]:
    """Folders (appended by the test) where creating or writing a file fails with EROFS, even for root.

    chmod does not stop root, so the file system's answer is given at the os level: os.open (used
    by tempfile, the pre-flight probe) and open() for writing, with the errno a read-only mount gives."""
    import builtins
    real_os_open, real_open, folders = os.open, builtins.open, []

    def refuse(path) -> None:
        if any(os.path.abspath(path).startswith(f) for f in folders):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_)
    return folders


@pytest.mark.slow
def test_a_finished_benchmark_runs_from_read_only_folders(tmp_path, capsys, read_only_folders):
    """MNIST-C caches and source model made by an earlier run: read-only DATA_DIR / CKPT_DIR are fine."""
    cfg_file = str(write_cfg(tmp_path, MNIST_CFG))
    assert run_main(["--cfg", cfg_file, *dirs(tmp_path)], capsys)[0] == 0
    read_only_folders += [str(tmp_path / "data"), str(tmp_path / "ckpt")]
    before = snapshot(tmp_path / "data")
    status, _, err = run_main(["--cfg", cfg_file, *dirs(tmp_path)], capsys)
    assert status == 0 and "Traceback" not in err and unchanged(before, tmp_path / "data")
    for overrides, key in [(["CORRUPTION.NUM_EX", "40"], "DATA_DIR"),  # 20 images cached, 40 asked for
                           (["MNISTC.EPOCHS", "2"], "CKPT_DIR")]:      # another source model
        status, lines, err = run_main(["--cfg", cfg_file, *dirs(tmp_path), *overrides], capsys)
        assert status == 2 and len(lines) == 1 and key in lines[0] and "Read-only file system" in lines[0]
