"""No stale or mixed outputs (issue 7): pseudo-label folders, prototype files and training runs
record their inputs, and a rerun with other inputs is refused with the `rm` command to run (or
starts over with --restart) instead of reusing or mixing outputs. The stage scripts stop on
every error, a missing config file included.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from proda import calc_prototype, generate_pseudo_label, train
from proda.demo.synthetic import generate
from proda.manifest import MANIFEST
from proda.models.deeplabv2 import Deeplab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"


def checkpoint(path, seed):
    """A tiny random model in the reference checkpoint format."""
    torch.manual_seed(seed)
    net = Deeplab(nn.BatchNorm2d, num_classes=19, layers=[1, 1, 1, 1], init="random")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"ResNet101": {"model_state": net.state_dict(), "objective_vectors": torch.zeros(19, 256)},
                "iter": 1, "best_iou": np.float64(0.1)}, path)
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny data, two different models A and B, and the shared flags."""
    root = tmp_path_factory.mktemp("proda_outputs")
    generate(str(root / "data"), n_source=2, n_target_train=2, n_target_val=1, size=(64, 32), seed=0)
    a = checkpoint(root / "A" / CKPT.format("best"), 0)
    b = checkpoint(root / "B" / CKPT.format("best"), 1)
    common = ["--src_rootpath", str(root / "data" / "GTA5"), "--tgt_rootpath", str(root / "data" / "cityscapes"),
              "--src_img_size", "64,32", "--tgt_img_size", "64,32", "--resize", "64", "--rcrop", "48,24",
              "--backbone_layers", "1,1,1,1", "--bs", "1", "--num_workers", "0", "--bn", "bn", "--device", "cpu",
              "--logdir", str(root / "logs" / "misc")]
    return root, a, b, common


def refused(capsys, entry, argv, *wanted):
    """The entry point exits 2 with one line holding every `wanted` text."""
    with pytest.raises(SystemExit) as exit_info:
        entry.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    for text in wanted:
        assert text in last, last


def stamps(folder):
    """Modification times of a folder's files."""
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


def test_pseudo_labels_of_another_model_are_refused_then_relabelled_with_restart(world, capsys):
    root, a, b, common = world
    flags = common + ["--soft", "--save_path", str(root / "Pseudo"), "--name", "soft"]
    out = str(root / "Pseudo" / "soft")
    generate_pseudo_label.main(flags + ["--resume_path", a])
    by_a = stamps(out)
    assert json.load(open(os.path.join(out, MANIFEST)))["options"]["soft"] is True
    os.remove(os.path.join(out, ".complete"))  # as if model A's run had been interrupted
    refused(capsys, generate_pseudo_label, flags + ["--resume_path", b], "checkpoint", f"rm -r {out}", "--restart")
    assert {k: v for k, v in stamps(out).items()} == {k: v for k, v in by_a.items() if k != ".complete"}
    refused(capsys, generate_pseudo_label, flags + ["--resume_path", a, "--flip"], "options.flip")
    generate_pseudo_label.main(flags + ["--resume_path", b, "--restart"])
    assert os.path.isfile(os.path.join(out, ".complete"))
    assert all(stamps(out)[name] != by_a[name] for name in by_a if name.endswith(".npy"))


def test_prototypes_record_their_checkpoint(world, capsys):
    root, a, b, common = world
    start = root / "warmup" / CKPT.format("best")
    start.parent.mkdir()
    start.write_bytes(open(a, "rb").read())
    flags = common + ["--resume_path", str(start)]
    calc_prototype.main(flags)
    protos = start.parent / "prototypes_on_cityscapes_from_deeplabv2"
    made = protos.stat().st_mtime_ns
    calc_prototype.main(flags)  # same inputs: nothing to do
    assert protos.stat().st_mtime_ns == made
    start.write_bytes(open(b, "rb").read())  # the warm-up model was retrained
    refused(capsys, calc_prototype, flags, str(protos), f"rm {protos}")
    stage1 = common + ["--stage", "stage1", "--resume_path", str(start), "--ema", "--proto_rectify",
                       "--student_init", "random", "--max_iters", "1", "--logdir", str(root / "logs" / "s1")]
    refused(capsys, train, stage1, "another checkpoint", f"rm {protos}")
    calc_prototype.main(flags + ["--restart"])
    assert protos.stat().st_mtime_ns != made


def test_a_finished_run_with_changed_inputs_is_not_called_finished(world, capsys):
    root, a, b, common = world
    start = root / "warmup2" / CKPT.format("best")
    start.parent.mkdir()
    start.write_bytes(open(a, "rb").read())
    logdir = str(root / "logs" / "run")
    flags = common + ["--stage", "src_only", "--student_init", "random", "--resume_path", str(start),
                      "--max_iters", "1", "--logdir", logdir, "--lr", "1e-3"]
    train.main(flags)
    current = os.path.join(logdir, CKPT.format("current"))
    made = os.stat(current).st_mtime_ns
    train.main(flags + ["--num_workers", "1", "--print_interval", "7"])  # only where/how: still finished
    refused(capsys, train, flags + ["--lr", "2e-3"], "options.lr", f"rm -r {logdir}", "--restart")
    start.write_bytes(open(b, "rb").read())  # the model it started from changed
    refused(capsys, train, flags, "files.resume_path", f"rm -r {logdir}")
    assert os.stat(current).st_mtime_ns == made


def test_scripts_stop_when_a_config_is_missing(tmp_path):
    env = dict(os.environ, SRC="synthia", CFG_DIR=os.path.join(REPO, "configs", "demo"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_stage1.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: config {REPO}/configs/demo/syn2city_stage1.py not found (CFG_DIR={REPO}/configs/demo, SRC=synthia)"]
    assert "+ " not in proc.stdout  # nothing ran


def test_scripts_stop_on_a_bad_config_value(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for step in ["stage1", "stage1_pseudo", "stage1_prototypes", "warmup"]:
        (cfg / f"gta2city_{step}.py").write_text(f'_base_ = "{REPO}/configs/demo/gta2city_{step}.py"\nbs = 0\n')
    env = dict(os.environ, SRC="gta5", CFG_DIR=str(cfg), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_stage1.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--bs 0 is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr and "ProDA stage 1" not in proc.stdout


def test_the_shell_helpers_modules_do_not_import_torch():
    """scripts/proda_lib.sh runs opt_eval (options, manifest checks) several times a step: no torch import."""
    code = "import sys, proda.options, proda.manifest, proda.files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "False"
