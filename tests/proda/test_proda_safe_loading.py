"""Opening a checkpoint never runs code.

A crafted pickle whose payload creates a marker file goes through every loader and every
entry point that reads a checkpoint: --resume_path (train, calc_prototype,
generate_pseudo_label, test), --simclr_path, --imagenet_path, the prototype file, the
auto-resumed current checkpoint in the log dir and scripts/proda_demo_backbone.py. The marker
never appears, the exit status is non-zero and the message is one line naming the file and
--trust_checkpoint. Reference checkpoints that pickle a NumPy float64 'best_iou' load through
the allow-list; atomic writes get open()'s permissions and clean their stale temp files.
"""
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

from dacommon.files import atomic_write, stale_temp_files
from proda import calc_prototype, generate_pseudo_label, test, train
from proda.files import CheckpointError
from proda.utils import atomic_save, load_checkpoint, set_trust_checkpoint
from proda_helpers import save_tiny_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"


class Payload:
    """Unpickling this calls open(marker, 'w'): the stand-in for an attacker's code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted(path, marker):
    """A checkpoint-shaped file whose unpickling creates `marker`."""
    torch.save({"ResNet101": {"model_state": Payload(str(marker))}, "state_dict": Payload(str(marker)),
                "iter": 1, "best_iou": 0.0}, path)
    return str(path)


@pytest.fixture(scope="module")
def tree(synthetic_tree):
    """Tiny data, a genuine tiny checkpoint and the flags every run shares."""
    root = synthetic_tree("proda_security", n_source=2, n_target_train=2, n_target_val=1, size=(32, 16))
    good = root / "good" / CKPT.format("best")
    save_tiny_checkpoint(good, iter=1, best_iou=np.float64(0.25))
    common = ["--src_rootpath", str(root / "data" / "GTA5"), "--tgt_rootpath", str(root / "data" / "cityscapes"),
              "--src_img_size", "32,16", "--tgt_img_size", "32,16", "--resize", "32", "--rcrop", "24,12",
              "--backbone_layers", "1,1,1,1", "--bs", "1", "--num_workers", "0", "--bn", "bn", "--device", "cpu"]
    return root, str(good), common


def refused(capsys, entry, argv, marker, path):
    """Run an entry point that must refuse `path`: non-zero exit, one line, no payload run."""
    with pytest.raises(SystemExit) as exit_info:
        entry.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code not in (0, None)
    assert not os.path.exists(marker)
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert path in last and "--trust_checkpoint" in last, err[-2000:]


def test_load_checkpoint_refuses_a_crafted_pickle(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted(tmp_path / "evil.pkl", marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert not marker.exists()
    assert "\n" not in str(err.value) and path in str(err.value) and "--trust_checkpoint" in str(err.value)


def test_trust_checkpoint_is_the_only_route_to_the_full_unpickler(tmp_path):
    marker = tmp_path / "ran"
    path = crafted(tmp_path / "trusted.pkl", marker)
    set_trust_checkpoint(True)
    try:
        load_checkpoint(path)
    finally:
        set_trust_checkpoint(False)
    assert marker.exists()  # the user said they trust it: the payload ran, as documented


def numpy1_variant(data: bytes) -> bytes:
    """The same torch file as NumPy 1 writes it: numpy.core instead of numpy._core."""
    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            content = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                content = content.replace(b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar")
            dst.writestr(info.filename, content)
    return out.getvalue()


def test_reference_checkpoints_with_numpy_best_iou_load_safely(tree, tmp_path):
    _, good, _ = tree
    checkpoint = load_checkpoint(good)
    assert isinstance(checkpoint["best_iou"], np.float64) and checkpoint["best_iou"] == 0.25
    old = tmp_path / "numpy1.pkl"
    old.write_bytes(numpy1_variant(open(good, "rb").read()))
    assert load_checkpoint(str(old))["best_iou"] == 0.25
    # other NumPy objects (an array: a reduce call into numpy) stay outside the allow-list
    torch.save({"best_iou": np.zeros(3)}, tmp_path / "array.pkl")
    with pytest.raises(CheckpointError, match="--trust_checkpoint"):
        load_checkpoint(str(tmp_path / "array.pkl"))


@pytest.mark.parametrize("where", ["resume_path", "simclr_path", "imagenet_path", "prototypes", "current"])
def test_train_refuses_a_crafted_file_on_every_path(tree, tmp_path, capsys, where):
    root, good, common = tree
    marker = str(tmp_path / "pwned")
    base = common + ["--logdir", str(tmp_path / "logs"), "--max_iters", "1"]
    if where == "resume_path":
        path = crafted(tmp_path / "evil.pkl", marker)
        argv = base + ["--stage", "src_only", "--resume_path", path, "--student_init", "random"]
    elif where == "simclr_path":
        path = crafted(tmp_path / "evil.pth", marker)
        argv = base + ["--stage", "src_only", "--no_resume", "--student_init", "simclr", "--simclr_path", path]
    elif where == "imagenet_path":
        path = crafted(tmp_path / "resnet101.pth", marker)
        argv = base + ["--stage", "src_only", "--no_resume", "--student_init", "imagenet", "--imagenet_path", path]
    elif where == "prototypes":
        start = tmp_path / "warmup" / CKPT.format("best")
        start.parent.mkdir()
        start.write_bytes(open(good, "rb").read())
        path = crafted(start.parent / "prototypes_on_cityscapes_from_deeplabv2", marker)
        argv = base + ["--stage", "stage1", "--resume_path", str(start), "--student_init", "random", "--ema",
                       "--proto_rectify"]
    else:
        os.makedirs(tmp_path / "logs")
        path = crafted(tmp_path / "logs" / CKPT.format("current"), marker)
        argv = base + ["--stage", "src_only", "--no_resume", "--student_init", "random"]
    refused(capsys, train, argv, marker, path)


@pytest.mark.parametrize("entry", [test, generate_pseudo_label, calc_prototype], ids=lambda e: e.__name__)
def test_inference_entry_points_refuse_a_crafted_checkpoint(tree, tmp_path, capsys, entry):
    _, _, common = tree
    marker = str(tmp_path / "pwned")
    path = crafted(tmp_path / "evil.pkl", marker)
    argv = common + ["--resume_path", path, "--student_init", "random", "--logdir", str(tmp_path / "logs"),
                     "--save_path", str(tmp_path / "Pseudo")]
    refused(capsys, entry, argv, marker, path)


def test_demo_backbone_script_refuses_a_crafted_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    path = crafted(tmp_path / "evil.pkl", marker)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "proda_demo_backbone.py"), path,
                           str(tmp_path / "out.pth")], capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode != 0 and not marker.exists() and not (tmp_path / "out.pth").exists()
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert path in proc.stderr and "--trust_checkpoint" in proc.stderr


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_open_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_save({"x": torch.ones(1)}, str(tmp_path / "a.pkl"))
        with open(tmp_path / "b.txt", "w"):
            pass
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "a.pkl").st_mode & 0o777 == os.stat(tmp_path / "b.txt").st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_removes_stale_temp_files_of_the_same_target(tmp_path):
    target = str(tmp_path / "ckpt.pkl")
    stale = tmp_path / ".tmp_ckpt.pkl.abc123"  # what a kill during a write leaves
    other = tmp_path / ".tmp_other.pkl.abc123"  # another target's: not ours to remove
    stale.write_bytes(b"half")
    other.write_bytes(b"half")
    assert stale_temp_files(target) == [str(stale)]
    atomic_write(target, lambda f: f.write(b"whole"))
    assert not stale.exists() and other.exists() and open(target, "rb").read() == b"whole"


# ----------------------------------------------------------------------------- error messages on bad checkpoints

class Call:
    """Unpickling this calls func(*args); func's module is one torch's weights-only loader blocks."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def blocked_call(module, marker):
    """A payload naming a global of `module` (os, posix, sys) whose effect the test can see."""
    if module == "os":
        return Call(os.makedirs, str(marker))  # os.makedirs lives in os.py: pickled as os.makedirs
    if module == "posix":
        return Call(os.system, f"touch {marker}")  # os.system is posix.system
    return Call(sys.setrecursionlimit, 12345)


@pytest.mark.parametrize("module", ["os", "posix", "sys"])
def test_blocked_modules_are_reported_as_refused_not_corrupt(tmp_path, module):
    """torch 2.14 words these 'unsupported GLOBAL ... is blocked': still a refusal, never 'corrupt'
    nor torch's advice to load with weights_only=False."""
    marker, limit = tmp_path / "pwned", sys.getrecursionlimit()
    path = str(tmp_path / "evil.pkl")
    torch.save({"ResNet101": {"model_state": blocked_call(module, marker)}, "iter": 1}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert not marker.exists() and sys.getrecursionlimit() == limit
    assert "--trust_checkpoint" in message and path in message and "\n" not in message
    assert "corrupt" not in message and "weights_only" not in message and f"{module}." in message


def test_tent_loader_reports_blocked_modules_as_unsafe(tmp_path):
    from tent import safe_load
    from tent.errors import UnsafeCheckpointError
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": blocked_call("posix", marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="posix.system") as err:
        safe_load.load_checkpoint(path)
    assert not marker.exists() and "weights_only" not in str(err.value)


@pytest.mark.parametrize("kind", ["cut_zip", "html_page"])
def test_corrupt_files_are_still_reported_as_corrupt(tree, tmp_path, kind):
    """A damaged zip (RuntimeError) and a file that is no pickle at all (torch raises the same
    UnpicklingError as for a refusal) are corrupt, not 'needs --trust_checkpoint'."""
    _, good, _ = tree
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(open(good, "rb").read()[:300] if kind == "cut_zip" else b"<!DOCTYPE html><html>quota</html>")
    with pytest.raises(CheckpointError, match="corrupt") as err:
        load_checkpoint(str(bad))
    assert "--trust_checkpoint" not in str(err.value) and "weights_only" not in str(err.value)


@pytest.mark.parametrize("where", ["resume_path", "simclr_path", "imagenet_path", "prototypes", "current"])
def test_trusted_file_of_the_wrong_shape_ends_in_one_line(tree, tmp_path, capsys, where):
    """--trust_checkpoint on a file whose payload returns an int where tensors belong (os.getpid:
    harmless, blocked without trust): one line naming the file, no AttributeError traceback."""
    root, good, common = tree
    payload = Call(os.getpid)
    base = common + ["--logdir", str(tmp_path / "logs"), "--max_iters", "1", "--trust_checkpoint",
                     "--stage", "src_only", "--student_init", "random"]

    def evil(path, content):
        torch.save(content, path)
        return str(path)

    if where == "resume_path":
        path = evil(tmp_path / "e.pkl", {"ResNet101": {"model_state": payload}, "iter": 1, "best_iou": 0.0})
        argv = base + ["--resume_path", path]
    elif where == "simclr_path":
        path = evil(tmp_path / "e.pth", {"state_dict": payload})
        argv = base + ["--no_resume", "--student_init", "simclr", "--simclr_path", path]
    elif where == "imagenet_path":
        path = evil(tmp_path / "resnet101.pth", payload)
        argv = base + ["--no_resume", "--student_init", "imagenet", "--imagenet_path", path]
    elif where == "prototypes":
        start = tmp_path / "warmup" / CKPT.format("best")
        start.parent.mkdir()
        start.write_bytes(open(good, "rb").read())
        path = evil(start.parent / "prototypes_on_cityscapes_from_deeplabv2", payload)
        argv = base + ["--stage", "stage1", "--resume_path", str(start), "--ema", "--proto_rectify"]
    else:
        os.makedirs(tmp_path / "logs")
        path = evil(tmp_path / "logs" / CKPT.format("current"), {"iter": 2, "resume": payload})
        argv = base + ["--no_resume"]
    with pytest.raises(SystemExit) as exit_info:
        train.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code not in (0, None) and "Traceback" not in err, err[-3000:]
    assert path in err.strip().splitlines()[-1], err[-2000:]
