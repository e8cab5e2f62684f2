"""MNIST -> SVHN: the MNIST source model (tent.train_source --dataset mnist) on tiny MNIST files, then tent on SVHN.

MNIST's train and test files are written in torchvision's raw layout (idx files under MNIST/raw/, which
torchvision checks for existence only), SVHN's test_32x32.mat as torchvision reads it.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from digit_shift_files import write_mnist, write_svhn
from tent import cifar10c, conf, data, digit_shifts, resnet26, train_source
from tent.conf_checks import assert_and_infer_cfg
from tent.mnistc import to_tensor
from tent.safe_load import load_checkpoint

CFG = Path(__file__).resolve().parents[2] / "cfgs" / "digits" / "mnist2svhn.yaml"
TRAIN_LABELS, TEST_LABELS = np.arange(30) % 10, (np.arange(12) * 3) % 10


def write_mnist_splits(data_dir: Path) -> np.ndarray:
    """MNIST's four raw files; returns the test images."""
    write_mnist(data_dir, TRAIN_LABELS, split="train")
    return write_mnist(data_dir, TEST_LABELS)


def train_mnist(data_dir: Path, ckpt_dir: Path) -> dict:
    """One CPU epoch of the TTT recipe on the tiny MNIST; the checkpoint it writes."""
    argv = ["--dataset", "mnist", "--data_dir", str(data_dir), "--ckpt_dir", str(ckpt_dir), "--epochs", "1",
            "--batch_size", "8", "--workers", "0", "--device", "cpu"]
    assert train_source.main(argv) == 0
    return load_checkpoint(resnet26.checkpoint_path(ckpt_dir, "mnist"))  # weights-only


def test_mnist_is_prepared_as_the_digit_targets(tmp_path):
    images = write_mnist_splits(tmp_path)
    test = train_source.torchvision_dataset("mnist", str(tmp_path), False, "crop")  # no augmentation at test time
    x = torch.stack([test[i][0] for i in range(len(test))])
    assert x.shape == (12, 3, 32, 32) and [test[i][1] for i in range(12)] == TEST_LABELS.tolist()
    assert torch.equal(x, to_tensor(digit_shifts.resize_grey_or_rgb(images)))  # 32 x 32 bilinear, grey as RGB
    assert torch.equal(x, digit_shifts.load_source_test(str(tmp_path), 12, "mnist2svhn")[0])


def test_one_epoch_writes_the_mnist_resnet26_with_ttts_recipe_and_no_flips(tmp_path):
    write_mnist_splits(tmp_path / "data")
    checkpoint = train_mnist(tmp_path / "data", tmp_path / "ckpt")
    assert resnet26.checkpoint_path(tmp_path / "ckpt", "mnist") == tmp_path / "ckpt" / "mnist" / "ResNet26.pt"
    recipe = checkpoint["recipe"]
    assert (recipe["augment"], recipe["lr"], recipe["weight_decay"]) == ("crop", 0.1, 5e-4)
    assert recipe["milestones"] == [50, 65]
    assert checkpoint["num_test"] == 12 and checkpoint["num_classes"] == 10
    model = resnet26.load_resnet26(tmp_path / "ckpt", "mnist2svhn")  # MODEL.ARCH ResNet26 finds it by the target
    x, y = digit_shifts.load_source_test(str(tmp_path / "data"), 12, "mnist2svhn")
    with torch.no_grad():
        assert checkpoint["clean_test_acc"] == (model(x).argmax(1) == y).sum().item() / 12


@pytest.mark.usefixtures("fresh_cfg")
def test_config_holds_the_papers_settings_and_none_reads_mnist(tmp_path):
    conf.merge_from_file(str(CFG))
    c = conf.cfg
    assert_and_infer_cfg(c)
    assert (c.CORRUPTION.DATASET, c.MODEL.ARCH, c.SETTING, c.OPTIM.METHOD, c.OPTIM.LR, c.TEST.BATCH_SIZE) == \
        ("mnist2svhn", "ResNet26", "offline", "Adam", 1e-3, 128)
    assert data.num_examples(c) == 26032
    write_mnist_splits(tmp_path)
    c.merge_from_list(["CORRUPTION.TYPE", ["clean", "none"], "SETTING", "reset_each_shift", "DATA_DIR", str(tmp_path),
                       "CORRUPTION.NUM_EX", 10])
    assert_and_infer_cfg(c)
    x, y = data.load_part(c, "reset_each_shift", "none", 1)  # the source's clean test set: MNIST's
    assert y.tolist() == TEST_LABELS[:10].tolist() and x.shape == (10, 3, 32, 32)


@pytest.mark.slow  # ~10 s on 2 cores: training, then three methods over the stream
@pytest.mark.usefixtures("fresh_cfg")
def test_trained_mnist_model_runs_tent_on_svhn(tmp_path):
    write_mnist_splits(tmp_path / "data")
    train_mnist(tmp_path / "data", tmp_path / "ckpt")
    svhn_labels = np.arange(40) % 10
    write_svhn(tmp_path / "data", svhn_labels)
    results = cifar10c.evaluate("test", ["--cfg", str(CFG), "DATA_DIR", str(tmp_path / "data"),
                                         "CKPT_DIR", str(tmp_path / "ckpt"), "SAVE_DIR", str(tmp_path / "out"),
                                         "TEST.BATCH_SIZE", "20"])
    assert {"source", "norm", "tent", "tent_online"} <= set(results)
    images, labels = digit_shifts.svhn_test(str(tmp_path / "data"))
    model = resnet26.load_resnet26(tmp_path / "ckpt", "mnist2svhn")
    with torch.no_grad():
        source_error = (model(to_tensor(images)).argmax(1).numpy() != labels).mean()
    assert results["source"][1]["clean"] == pytest.approx(source_error)
    assert all(0 <= r[1]["clean"] <= 1 for r in results.values())
