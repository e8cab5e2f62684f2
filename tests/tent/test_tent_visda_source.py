"""tent.train_source --dataset visda: pycls's ResNet-50 fine-tuned on a tiny VisDA-C train split, then run through tent.

The start is a random ResNet-50 saved with pycls's keys and format at CKPT_DIR/imagenet/pycls/ (where
the model zoo's file goes); the train and validation splits are written in the challenge's layout by
test_tent_visda.write_split. A 32-pixel crop (--crop_size) keeps the ResNet-50 cheap on the CPU.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tent import cifar10c, pycls_resnet, train_source, visda
from tent.pycls_resnet import PyclsResNet
from tent.safe_load import load_checkpoint
from test_tent_visda import write_split

REPO = Path(__file__).resolve().parents[2]
CROP = 32


def save_imagenet_start(ckpt_dir: Path) -> dict:
    """A random 1000-class ResNet-50 in the model zoo's format ({'epoch', 'model_state', 'optimizer_state', 'cfg'})."""
    torch.manual_seed(0)
    state = PyclsResNet(50, 1000).state_dict()
    path = pycls_resnet.checkpoint_path(ckpt_dir)
    path.parent.mkdir(parents=True)
    torch.save({"epoch": 99, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  TYPE: resnet\n"}, path)
    return state


def visda_args(tmp_path: Path, *extra: str) -> list:
    """One CPU epoch on the tiny train split, batch 4, 32-pixel crops."""
    return ["--dataset", "visda", "--data_dir", str(tmp_path / "data"), "--ckpt_dir", str(tmp_path / "ckpt"),
            "--epochs", "1", "--batch_size", "4", "--crop_size", str(CROP), "--workers", "0", "--device", "cpu", *extra]


def test_recipe_defaults_are_shots_and_the_cifar_ones_stay_ttts():
    shot = train_source.parse_args(["--dataset", "visda"])
    assert (shot.epochs, shot.lr, shot.backbone_lr, shot.momentum, shot.weight_decay, shot.batch_size,
            shot.label_smoothing, shot.crop_size, shot.milestones) == (10, 1e-3, 1e-4, 0.9, 1e-3, 64, 0.1, 224, [])
    ttt = train_source.parse_args(["--dataset", "cifar10"])
    assert (ttt.epochs, ttt.lr, ttt.momentum, ttt.weight_decay, ttt.batch_size, ttt.milestones, ttt.augment) == \
        (75, 0.1, 0.9, 5e-4, 128, [50, 65], "crop_flip")


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar10", "--crop_size", "32"], "--crop_size: options of --dataset visda only"),
    (["--dataset", "visda", "--milestones", "5"], "--milestones and --augment do not apply to --dataset visda"),
    (["--dataset", "visda", "--label_smoothing", "1"], "--label_smoothing must be in [0, 1)"),
])
def test_options_of_the_other_recipe_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train_source.parse_args(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and err.count("\n") == 1


def test_held_out_accuracy_is_overall_and_mean_per_class():
    class Fixed(torch.nn.Module):
        """Predicts class 0 for every image."""

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.zeros(len(x), dtype=torch.long), 12).float()

    labels = torch.tensor([0, 0, 0, 1])  # 3 of 4 right overall; class 0 all right, class 1 none: mean 0.5
    loader = [(torch.zeros(2, 3, 4, 4), labels[:2]), (torch.zeros(2, 3, 4, 4), labels[2:])]
    assert train_source.held_out_accuracy(Fixed(), loader, torch.device("cpu")) == (0.75, 0.5)


def test_train_split_is_divided_as_shot_does(tmp_path):
    write_split(tmp_path / "data", n=20, split="train")
    args = train_source.parse_args(visda_args(tmp_path))
    train, held = train_source.visda_splits(args)
    assert (len(train), len(held)) == (18, 2) and not set(train.names) & set(held.names)
    again, _ = train_source.visda_splits(args)
    assert again.names == train.names  # seeded
    x, _ = train[0]
    assert x.shape == (3, CROP, CROP) and 0 <= x.min() and x.max() <= 1
    assert held[0][0].shape == (3, CROP, CROP)


def test_missing_imagenet_start_is_one_line_naming_path_and_url(tmp_path):
    write_split(tmp_path / "data", split="train")
    proc = subprocess.run([sys.executable, "-m", "tent.train_source", *visda_args(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert str(pycls_resnet.checkpoint_path(tmp_path / "ckpt")) in lines[0] and pycls_resnet.R50_URL in lines[0]


@pytest.mark.slow  # a ResNet-50 trained and adapted on the CPU
@pytest.mark.usefixtures("fresh_cfg")
def test_fine_tuned_checkpoint_loads_as_the_visda_source_model_and_runs_tent(tmp_path):
    start = save_imagenet_start(tmp_path / "ckpt")
    write_split(tmp_path / "data", n=12, split="train")
    assert train_source.main(visda_args(tmp_path, "--epochs", "2")) == 0
    checkpoint = load_checkpoint(visda.checkpoint_path(str(tmp_path / "ckpt")))  # weights-only
    recipe = checkpoint["recipe"]
    assert (recipe["lr"], recipe["backbone_lr"], recipe["weight_decay"], recipe["label_smoothing"], recipe["nesterov"],
            recipe["batch_size"], recipe["held_out"]) == (1e-3, 1e-4, 1e-3, 0.1, True, 4, 0.1)
    assert (checkpoint["arch"], checkpoint["num_classes"], checkpoint["num_test"]) == ("pycls_R50", 12, 2)
    assert checkpoint["selected_epoch"] in (1, 2) and 0 <= checkpoint["held_out_mean_class_acc"] <= 1
    model = visda.load_source_model("pycls_R50", str(tmp_path / "ckpt"))  # strict, weights-only
    assert model.head.fc.out_features == 12
    assert not torch.equal(model.stem.conv.weight, start["stem.conv.weight"])  # the backbone was fine-tuned too
    _, held = train_source.visda_splits(train_source.parse_args(visda_args(tmp_path)))
    with torch.no_grad():
        correct = sum(int(model(x[None]).argmax(1).item() == y) for x, y in held)
    assert checkpoint["clean_test_acc"] == correct / 2  # the kept weights' accuracy
    write_split(tmp_path / "data", n=4)  # the validation split: the target
    results = cifar10c.evaluate("test", ["--cfg", str(REPO / "cfgs" / "visda" / "tent.yaml"),
                                         "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(tmp_path / "ckpt"),
                                         "SAVE_DIR", str(tmp_path / "out"), "TEST.BATCH_SIZE", "2"])
    assert list(results) == ["tent"] and results["tent"][1]["clean"] in (0, .25, .5, .75, 1)
