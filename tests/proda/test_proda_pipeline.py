"""End-to-end smoke test of the ProDA entry points on a tiny synthetic source/target pair.

Runs the real chain on 64x32 images with a one-block-per-stage backbone: source-only training
-> soft pseudo labels -> prototypes -> stage 1 -> hard pseudo labels -> stage 2 -> test, and
checks the files each step must produce, that an interrupted run resumes from its saved
iteration, that pseudo-label generation skips finished images, and that test.py's numbers
are the confusion-matrix mIoU of the model's predictions.
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from proda import calc_prototype, generate_pseudo_label, test, train
from proda.data import find_dataset_using_name
from proda.models.deeplabv2 import Deeplab
from proda.options import parse_opt

CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"


@pytest.fixture(scope="module")
def tree(synthetic_tree):
    """Tiny synthetic GTA5 / Cityscapes trees and the options every step shares."""
    root = synthetic_tree("proda_pipeline", n_source=4, n_target_train=4, n_target_val=2, size=(64, 32))
    common = ["--src_rootpath", str(root / "data" / "GTA5"), "--tgt_rootpath", str(root / "data" / "cityscapes"),
              "--src_img_size", "64,32", "--tgt_img_size", "64,32", "--resize", "64", "--rcrop", "48,24",
              "--backbone_layers", "1,1,1,1", "--bs", "2", "--num_workers", "0", "--bn", "bn",
              "--device", "cpu", "--print_interval", "1"]
    return root, common


def logdir(root, name):
    """Log folder of one step."""
    return str(root / "logs" / name)


def saved_iteration(folder):
    """Iteration stored in a run's resume state."""
    state = torch.load(os.path.join(folder, CKPT.format("current")), map_location="cpu", weights_only=False)
    return state["resume"]["iter"]


@pytest.fixture(scope="module")
def source_only(tree):
    """Source-only training interrupted after 1 iteration, then resumed to 2."""
    root, common = tree
    args = common + ["--stage", "src_only", "--student_init", "random", "--no_resume", "--lr", "1e-3",
                     "--logdir", logdir(root, "src"), "--val_interval", "1"]
    train.main(args + ["--max_iters", "1"])
    first = saved_iteration(logdir(root, "src"))
    train.main(args + ["--max_iters", "2"])
    return first, saved_iteration(logdir(root, "src"))


def test_source_only_writes_checkpoints_and_resumes(tree, source_only):
    root, _ = tree
    first, second = source_only
    assert (first, second) == (1, 2)
    best = torch.load(os.path.join(logdir(root, "src"), CKPT.format("best")), map_location="cpu", weights_only=False)
    assert set(best) >= {"ResNet101", "iter", "best_iou"}
    assert set(best["ResNet101"]) == {"model_state", "objective_vectors"}
    assert os.listdir(logdir(root, "src"))  # tensorboard events and the run log live here too
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(logdir(root, "src")))


def test_finished_run_does_nothing(tree, source_only):
    root, common = tree
    path = os.path.join(logdir(root, "src"), CKPT.format("current"))
    before = os.path.getmtime(path)
    train.main(common + ["--stage", "src_only", "--student_init", "random", "--no_resume", "--lr", "1e-3",
                         "--logdir", logdir(root, "src"), "--val_interval", "1", "--max_iters", "2"])
    assert os.path.getmtime(path) == before


@pytest.fixture(scope="module")
def stage1(tree, source_only):
    """Soft pseudo labels and prototypes of the source-only model, then two stage-1 iterations."""
    root, common = tree
    warmup = os.path.join(logdir(root, "src"), CKPT.format("best"))
    pseudo = ["--resume_path", warmup, "--save_path", str(root / "Pseudo"), "--logdir", logdir(root, "gen")]
    generate_pseudo_label.main(common + pseudo + ["--name", "soft", "--soft"])
    calc_prototype.main(common + ["--resume_path", warmup, "--logdir", logdir(root, "proto")])
    train.main(common + ["--stage", "stage1", "--resume_path", warmup, "--used_save_pseudo", "--ema",
                         "--proto_rectify", "--moving_prototype", "--path_soft", str(root / "Pseudo" / "soft"),
                         "--proto_consistW", "10", "--rce", "--regular_w", "0.1",
                         "--logdir", logdir(root, "stage1"), "--max_iters", "2", "--val_interval", "2"])
    return warmup


def test_stage1_chain_files(tree, stage1):
    root, _ = tree
    soft = root / "Pseudo" / "soft"
    npys = sorted(f for f in os.listdir(soft) if f.endswith(".npy"))
    assert len(npys) == 4 and (soft / ".complete").exists()
    prob = np.load(soft / npys[0])
    assert prob.shape[0] == 19 and np.allclose(prob.sum(0), 1, atol=1e-4)
    protos = torch.load(os.path.join(os.path.dirname(stage1), "prototypes_on_cityscapes_from_deeplabv2"))
    assert protos.shape == (19, 256) and (protos.abs().sum(1) > 0).any()
    ckpt = torch.load(os.path.join(logdir(root, "stage1"), CKPT.format("current")), map_location="cpu",
                      weights_only=False)
    assert ckpt["resume"]["iter"] == 2 and "ema" in ckpt["resume"]
    # moving prototypes changed the ones stage 1 started from
    assert not torch.equal(ckpt["ResNet101"]["objective_vectors"].cpu(), protos)


@pytest.fixture(scope="module")
def stage2(tree, stage1):
    """Flipped hard pseudo labels of the stage-1 model, then a distillation stage."""
    root, common = tree
    teacher = os.path.join(logdir(root, "stage1"), CKPT.format("best"))
    generate_pseudo_label.main(common + ["--resume_path", teacher, "--save_path", str(root / "Pseudo"),
                                         "--name", "hard", "--flip", "--logdir", logdir(root, "gen")])
    train.main(common + ["--stage", "stage2", "--resume_path", teacher, "--used_save_pseudo",
                         "--path_LP", str(root / "Pseudo" / "hard"), "--S_pseudo", "1", "--threshold", "0.2",
                         "--distillation", "1", "--finetune", "--lr", "6e-4", "--student_init", "random",
                         "--no_resume", "--logdir", logdir(root, "stage2"), "--max_iters", "2", "--val_interval", "2"])
    return os.path.join(logdir(root, "stage2"), CKPT.format("best"))


@pytest.mark.slow  # the whole chain to stage 2; stage 1's files are checked by default
def test_stage2_chain_files(tree, stage2):
    root, _ = tree
    hard = root / "Pseudo" / "hard"
    stems = [f[:-len("_conf.npy")] for f in os.listdir(hard) if f.endswith("_conf.npy")]
    assert len(stems) == 4
    for stem in stems:
        label = np.array(Image.open(hard / f"{stem}.png"))
        conf = np.load(hard / f"{stem}_conf.npy")
        assert label.shape == conf.shape == (32, 64) and label.max() < 19
        assert conf.dtype == np.float16 and 0 < conf.min() and conf.max() <= 1
        assert (hard / f"{stem}_color.png").exists()
    assert os.path.isfile(stage2)


def test_pseudo_label_generation_skips_finished_images(tree, stage2):
    root, common = tree
    hard = root / "Pseudo" / "hard"
    kept, removed = sorted(f for f in os.listdir(hard) if f.endswith("_conf.npy"))[:2]
    kept_time = os.path.getmtime(hard / kept)
    os.remove(hard / removed)
    teacher = os.path.join(logdir(root, "stage1"), CKPT.format("best"))
    generate_pseudo_label.main(common + ["--resume_path", teacher, "--save_path", str(root / "Pseudo"),
                                         "--name", "hard", "--flip", "--logdir", logdir(root, "gen")])
    assert (hard / removed).exists()
    assert os.path.getmtime(hard / kept) == kept_time


def test_test_py_equals_confusion_matrix(tree, stage2):
    root, common = tree
    out = root / "results.json"
    test.main(common + ["--resume_path", stage2, "--results_json", str(out), "--logdir", logdir(root, "test")])
    reported = json.loads(out.read_text())

    opt = parse_opt(common + ["--resume_path", stage2])
    net = Deeplab(torch.nn.BatchNorm2d, num_classes=19, restore_from=stage2, layers=[1, 1, 1, 1]).eval()
    dataset = find_dataset_using_name("cityscapes")(opt, None, augmentations=None, split="val")
    hist = np.zeros((19, 19))
    with torch.no_grad():
        for i in range(len(dataset)):
            item = dataset[i]
            logits = net(item["img"][None])["out"]
            pred = F.interpolate(logits, size=item["img"].shape[1:], mode="bilinear", align_corners=True).argmax(1)[0]
            gt = item["label"].numpy().ravel()
            keep = gt < 19
            hist += np.bincount(19 * gt[keep] + pred.numpy().ravel()[keep], minlength=361).reshape(19, 19)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    assert reported["mIoU"] == pytest.approx(np.nanmean(iou) * 100, abs=1e-6)
