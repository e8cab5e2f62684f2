"""The stage scripts end to end (slow): scripts/proda_all.sh trains the warm-up and chains
stage 1 -> 2 -> 3 on tiny synthetic data, and a rerun skips every finished step."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from proda.demo.synthetic import generate
from proda.models.deeplabv2 import Deeplab
from tiny_configs import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = ["base", "warmup", "stage1_pseudo", "stage1_prototypes", "stage1",
         "stage2_pseudo", "stage2", "stage3_pseudo", "stage3"]
BEST = "from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"


def tiny_configs(root) -> str:
    """Each demo stage config at 64x32 and 2 iterations, under `root`; returns the folder."""
    folder = root / "configs"
    folder.mkdir()
    for step in STEPS:
        text = tiny_config(root, (64, 32), (48, 24), 2, f"{REPO}/configs/demo/gta2city_{step}.py", max_iters=2)
        if step == "warmup":  # from random weights (the demo starts it from its source-only model)
            text += 'no_resume = True\nresume_path = ""\n'
        (folder / f"gta2city_{step}.py").write_text(text)
    return str(folder)


def stand_in_backbone(path) -> None:
    """A random tiny backbone in the {'state_dict': ...} form --simclr_path reads."""
    net = Deeplab(nn.BatchNorm2d, num_classes=19, layers=[1, 1, 1, 1], init="random")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith(("layer5.", "bn_pretrain."))}
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state}, path)


def run_all(root, cfg_dir) -> subprocess.CompletedProcess:
    """bash scripts/proda_all.sh with WARMUP=train, from `root`."""
    env = dict(os.environ, CFG_DIR=cfg_dir, WARMUP="train", SRC="gta5", PYTHON=sys.executable,
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="2")
    return subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_all.sh")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_proda_all_chains_every_stage_and_a_rerun_skips_them(tmp_path):
    generate(str(tmp_path / "data"), n_source=4, n_target_train=4, n_target_val=2, size=(64, 32), seed=0)
    stand_in_backbone(tmp_path / "pretrained" / "demo_backbone.pth")
    cfg_dir = tiny_configs(tmp_path)

    first = run_all(tmp_path, cfg_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    logs, pseudo = tmp_path / "logs", tmp_path / "Pseudo"
    for name in ["gta2citylabv2_warmup", "gta2citylabv2_stage1Denoise", "gta2citylabv2_stage2", "gta2citylabv2_stage3"]:
        assert (logs / name / BEST).is_file(), name
    assert (logs / "gta2citylabv2_warmup" / "prototypes_on_cityscapes_from_deeplabv2").is_file()
    for name in ["gta2citylabv2_warmup_soft", "gta2citylabv2_stage1Denoise", "gta2citylabv2_stage2"]:
        assert (pseudo / name / ".complete").is_file(), name
    assert len(list((pseudo / "gta2citylabv2_warmup_soft").glob("*.npy"))) == 4     # soft: one map per image
    assert len(list((pseudo / "gta2citylabv2_stage2").glob("*_conf.npy"))) == 4     # hard: label + confidence
    for heading in ["[stage 1, step 3/3]", "[stage 2, step 2/2]", "[stage 3, step 2/2]"]:
        assert heading in first.stdout

    stamps = {p: p.stat().st_mtime_ns for p in logs.rglob(BEST)}
    second = run_all(tmp_path, cfg_dir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("skipped:") == 4  # three pseudo-label folders and the prototypes
    assert (second.stdout + second.stderr).count("training already finished") == 4
    assert {p: p.stat().st_mtime_ns for p in logs.rglob(BEST)} == stamps
