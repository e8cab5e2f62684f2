"""tent.train_source: ResNet26 trained on tiny source sets in torchvision's real layouts, then run through tent.

The files are made here as torchvision reads them: CIFAR-10's cifar-10-batches-py pickles, CIFAR-100's
cifar-100-python pickles, SVHN's train_32x32.mat / test_32x32.mat (scipy). torchvision also compares
each file's md5 with the real release's, which tiny files cannot match: the `md5_free` fixture makes
that check test only that the file exists (torchvision's loading code runs unchanged).
"""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tent import evaluation, launch, train_source
from tent.resnet26 import ResNet26, checkpoint_path
from tent.safe_load import load_checkpoint
from test_tent_data import write_cifar_c

REPO = Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST = 20, 12  # images per tiny split


def tiny_split(rng, n, classes):
    """n random uint8 32 x 32 RGB images (NHWC) and labels covering the classes."""
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), (np.arange(n) * 7 % classes).astype(np.int64)


def dump(path, obj):
    """A pickle as the CIFAR releases ship them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(x):
    """CIFAR's on-disk rows: 3072 bytes per image, the red plane, then green, then blue."""
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def write_cifar10(root, rng):
    """cifar-10-batches-py: data_batch_1..5 and test_batch ({'data', 'labels'}), batches.meta."""
    (x, y), (xt, yt) = tiny_split(rng, N_TRAIN, 10), tiny_split(rng, N_TEST, 10)
    folder = root / "cifar-10-batches-py"
    for i, part in enumerate(np.array_split(np.arange(N_TRAIN), 5)):
        dump(folder / f"data_batch_{i + 1}", {"data": cifar_rows(x[part]), "labels": y[part].tolist()})
    dump(folder / "test_batch", {"data": cifar_rows(xt), "labels": yt.tolist()})
    dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return x, y, xt, yt


def write_cifar100(root, rng):
    """cifar-100-python: train and test ({'data', 'fine_labels', 'coarse_labels'}), meta."""
    (x, y), (xt, yt) = tiny_split(rng, N_TRAIN, 100), tiny_split(rng, N_TEST, 100)
    folder = root / "cifar-100-python"
    for name, images, labels in (("train", x, y), ("test", xt, yt)):
        dump(folder / name, {"data": cifar_rows(images), "fine_labels": labels.tolist(),
                             "coarse_labels": (labels // 5).tolist()})
    dump(folder / "meta", {"fine_label_names": [f"class{i}" for i in range(100)]})
    return x, y, xt, yt


def write_svhn(root, rng):
    """train_32x32.mat and test_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with digit 0 stored as 10."""
    from scipy.io import savemat

    (x, y), (xt, yt) = tiny_split(rng, N_TRAIN, 10), tiny_split(rng, N_TEST, 10)
    root.mkdir(parents=True, exist_ok=True)
    for name, images, labels in (("train", x, y), ("test", xt, yt)):
        stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        savemat(root / f"{name}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": stored})
    return x, y, xt, yt


LAYOUTS = {"cifar10": write_cifar10, "cifar100": write_cifar100, "svhn": write_svhn}


@pytest.fixture()
def md5_free(monkeypatch):
    """torchvision's integrity check reduced to the file's existence (tiny files cannot match the release's md5)."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    for module in (cifar, svhn):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))


def as_input(x):
    """uint8 NHWC images as the model's [0, 1] NCHW input."""
    return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255


def train_args(data_dir, ckpt_dir, dataset, *extra):
    """A one-epoch command line on the CPU (batch 8, no worker processes)."""
    return ["--dataset", dataset, "--data_dir", str(data_dir), "--ckpt_dir", str(ckpt_dir), "--epochs", "1",
            "--batch_size", "8", "--workers", "0", "--device", "cpu", *extra]


@pytest.mark.parametrize("dataset", LAYOUTS)
def test_torchvision_reads_the_tiny_real_layouts(tmp_path, md5_free, dataset):
    x, y, xt, yt = LAYOUTS[dataset](tmp_path, np.random.default_rng(0))
    for train, images, labels in ((True, x, y), (False, xt, yt)):
        data = train_source.torchvision_dataset(dataset, str(tmp_path), train, "none")
        assert len(data) == len(images)
        for i in (0, len(images) - 1):
            image, label = data[i]
            torch.testing.assert_close(image, as_input(images[i:i + 1])[0])
            assert label == labels[i]  # SVHN's stored 10 reads as digit 0


@pytest.mark.parametrize("dataset", LAYOUTS)
def test_one_epoch_writes_the_checkpoint_with_its_recipe(tmp_path, md5_free, dataset):
    _, _, xt, yt = LAYOUTS[dataset](tmp_path / "data", np.random.default_rng(0))
    assert train_source.main(train_args(tmp_path / "data", tmp_path / "ckpt", dataset)) == 0
    path = checkpoint_path(tmp_path / "ckpt", dataset)
    assert path.parent == (tmp_path / "ckpt" / "svhn" if dataset == "svhn" else tmp_path / "ckpt" / dataset / "corruptions")
    checkpoint = load_checkpoint(path)  # weights-only
    recipe = checkpoint["recipe"]
    assert (recipe["lr"], recipe["momentum"], recipe["weight_decay"], recipe["milestones"]) == (0.1, 0.9, 5e-4, [50, 65])
    assert (recipe["epochs"], recipe["batch_size"], recipe["optimizer"]) == (1, 8, "SGD")
    assert recipe["augment"] == ("crop" if dataset == "svhn" else "crop_flip")
    model = ResNet26(checkpoint["num_classes"])
    model.load_state_dict(checkpoint["model_state"])
    with torch.no_grad():  # the stored clean accuracy is the eval-mode model's on the whole test split
        predicted = model.eval()(as_input(xt)).argmax(1).numpy()
    assert checkpoint["num_test"] == N_TEST and checkpoint["clean_test_acc"] == (predicted == yt).mean()
    torch.manual_seed(0)
    untrained = ResNet26(checkpoint["num_classes"]).state_dict()
    assert not torch.equal(untrained["fc.weight"], checkpoint["model_state"]["fc.weight"])


def test_the_same_seed_trains_the_same_weights(tmp_path, md5_free):
    write_cifar10(tmp_path / "data", np.random.default_rng(0))
    states = []
    for run in ("a", "b", "a2"):
        seed = "1" if run == "b" else "0"
        args = train_args(tmp_path / "data", tmp_path / run, "cifar10", "--num_train", "12", "--seed", seed)
        assert train_source.main(args) == 0
        states.append(load_checkpoint(checkpoint_path(tmp_path / run, "cifar10"))["model_state"])
    a, b, a2 = states
    assert all(torch.equal(a[k], a2[k]) for k in a)
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_trained_checkpoint_runs_through_tent(tmp_path, md5_free, fresh_cfg):
    write_cifar10(tmp_path / "data", np.random.default_rng(0))
    assert train_source.main(train_args(tmp_path / "data", tmp_path / "ckpt", "cifar10")) == 0
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, size=(20, 32, 32, 3), dtype=np.uint8), np.arange(20, dtype=np.uint8) % 10
    write_cifar_c(tmp_path / "data", "CIFAR-10-C", "fog", 5, images, labels)
    argv = ["--cfg", str(REPO / "cfgs" / "cifar10" / "resnet26_tent.yaml"), "MODEL.ADAPTATIONS", "[source, norm, tent]",
            "CORRUPTION.TYPE", "[fog]", "CORRUPTION.NUM_EX", "20", "TEST.BATCH_SIZE", "10",
            "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(tmp_path / "ckpt"), "SAVE_DIR", str(tmp_path / "out"),
            "DEVICE", "cpu"]
    cfg_file, c = launch.config_from_args("test", argv)
    results = evaluation.run(launch.start_run(c, cfg_file))
    model = ResNet26()
    model.load_state_dict(load_checkpoint(checkpoint_path(tmp_path / "ckpt", "cifar10"))["model_state"])
    with torch.no_grad():
        source_error = (model.eval()(as_input(images)).argmax(1).numpy() != labels).mean()
    assert results["source"][5]["fog"] == pytest.approx(source_error)
    # the paper's offline setting: each method's first (adapting) pass is reported too, as <method>_online
    assert set(results) == {"source", "norm", "norm_online", "tent", "tent_online"}
    assert all(0 <= r[5]["fog"] <= 1 for r in results.values())


def test_missing_data_ends_in_one_line_on_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tent.train_source", "--dataset", "cifar100", "--data_dir",
                           str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert str(tmp_path / "cifar-100-python") in lines[0] or (str(tmp_path) in lines[0] and "cifar-100-python" in lines[0])
    assert "download=True" in lines[0] and "cifar-100-python.tar.gz" in lines[0]


def test_damaged_data_and_bad_values_are_refused_in_one_line(tmp_path, caplog, capsys):
    write_cifar100(tmp_path, np.random.default_rng(0))  # present, but not the release's bytes (md5 checked)
    assert train_source.main(["--dataset", "cifar100", "--data_dir", str(tmp_path)]) == 1
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "incomplete or corrupt" in record.getMessage() and "cifar-100-python" in record.getMessage()
    with pytest.raises(SystemExit) as exc:
        train_source.main(["--dataset", "svhn", "--batch_size", "0"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == "python -m tent.train_source: error: --batch_size must be >= 1, got 0\n"
