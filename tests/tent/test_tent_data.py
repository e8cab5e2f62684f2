"""Data: robustbench's real loaders on tiny files in its own on-disk layout, MNIST-C, the autoattack alias."""
import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tent  # noqa: F401  (installs the autoattack alias robustbench needs)
from tent import compat, mnistc
from tent.data import MissingResourceError, load_corruption

N_CIFAR = 10000  # images per severity in CIFAR-10-C / CIFAR-100-C files


def write_cifar_c(root: Path, folder: str, corruption: str, severity: int, images: np.ndarray,
                  labels: np.ndarray) -> None:
    """robustbench's layout: <root>/<folder>/labels.npy (50000,) and <corruption>.npy (50000, 32, 32, 3) uint8.

    The 150 MB image file is a sparse memmap: only the rows of one severity are written.
    """
    d = root / folder
    d.mkdir(parents=True)
    all_labels = np.zeros(5 * N_CIFAR, dtype=np.uint8)
    all_labels[:len(labels)] = labels
    np.save(d / "labels.npy", all_labels)
    arr = np.lib.format.open_memmap(d / f"{corruption}.npy", mode="w+", dtype=np.uint8,
                                    shape=(5 * N_CIFAR, 32, 32, 3))
    start = (severity - 1) * N_CIFAR
    arr[start:start + len(images)] = images
    arr.flush()
    del arr


@pytest.mark.parametrize("dataset, folder", [("cifar10", "CIFAR-10-C"), ("cifar100", "CIFAR-100-C")])
def test_robustbench_cifar_c_loader_reads_its_layout(tmp_path, dataset, folder):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(6, 32, 32, 3), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    write_cifar_c(tmp_path, folder, "fog", 3, images, labels)
    x, y = load_corruption(dataset, 5, 3, str(tmp_path), "fog")
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(images[:5]).permute(0, 3, 1, 2).float() / 255)
    assert y.tolist() == [3, 1, 4, 1, 5]
    x_sev1, _ = load_corruption(dataset, 2, 1, str(tmp_path), "fog")  # other severities: other rows
    assert not x_sev1.any()


def test_robustbench_imagenet_c_loader_reads_its_layout(tmp_path):
    import robustbench

    ids = (Path(robustbench.__file__).parent / "helper_files" / "imagenet_test_image_ids.txt").read_text().split()
    root = tmp_path / "ImageNet-C" / "gaussian_noise" / "2"
    classes = sorted({i.split("/")[0] for i in ids})
    for c in classes:  # every class folder robustbench's file list names; images only for the first few
        (root / c).mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    for image, rel in zip(images, ids[:3]):
        Image.fromarray(image).save(root / rel, format="PNG")  # PIL reads by content, so lossless
    x, y = load_corruption("imagenet", 3, 2, str(tmp_path), "gaussian_noise")
    assert x.shape == (3, 3, 224, 224)
    torch.testing.assert_close(x, torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    assert y.tolist() == [classes.index(rel.split("/")[0]) for rel in ids[:3]]


def test_missing_cifar_file_gives_one_clear_message(tmp_path):
    (tmp_path / "CIFAR-10-C").mkdir()  # folder present (so no download is tried), labels missing
    with pytest.raises(MissingResourceError) as exc:
        load_corruption("cifar10", 10, 5, str(tmp_path), "fog")
    message = str(exc.value)
    assert str(tmp_path / "CIFAR-10-C" / "labels.npy") in message
    assert "zenodo.org/records/2535967" in message and "\n" not in message
    with pytest.raises(MissingResourceError, match="ImageNet-C"):
        load_corruption("imagenet", 10, 5, str(tmp_path), "fog")


def test_autoattack_alias_serves_pyautoattack():
    import autoattack
    import autoattack.state
    import pyautoattack.state
    import robustbench.eval  # noqa: F401  (imports `from autoattack import AutoAttack`)

    assert autoattack is importlib.import_module("pyautoattack")
    assert autoattack.state.EvaluationState is pyautoattack.state.EvaluationState


def test_alias_steps_aside_for_a_real_autoattack(tmp_path, monkeypatch):
    (tmp_path / "autoattack").mkdir()
    (tmp_path / "autoattack" / "__init__.py").write_text("REAL = True\n")
    finder = compat.AutoattackAliasFinder()
    assert finder.find_spec("autoattack") is not None  # only pyautoattack is installed
    monkeypatch.syspath_prepend(str(tmp_path))
    assert finder.find_spec("autoattack") is None
    assert finder.find_spec("numpy") is None


def test_mnist_split_is_stratified_disjoint_and_shuffled(mnist_data_dir):
    x_tr, y_tr, x_te, y_te = mnistc.load_split(mnist_data_dir, 500, 0)
    assert x_tr.shape == (500, 32, 32, 3) and x_te.shape == (4500, 32, 32, 3) and x_tr.dtype == np.uint8
    assert np.bincount(y_tr).tolist() == [50] * 10 and np.bincount(y_te).tolist() == [450] * 10
    assert len(set(y_te[:100].tolist())) == 10  # shuffled: batches mix classes
    assert (x_tr[:, :2].max(), x_tr[:, :, :, 0].max()) == (0, 255)  # zero padding, real digits
    assert np.array_equal(x_tr[..., 0], x_tr[..., 2])  # grey repeated to RGB
    train_rows = {r.tobytes() for r in x_tr[:50]}
    assert not train_rows & {r.tobytes() for r in x_te}


@pytest.mark.parametrize("corruption", ["glass_blur", "impulse_noise", "gaussian_noise", "frost"])
def test_corruptions_are_deterministic_and_prefix_consistent(mnist_data_dir, corruption):
    _, _, x_te, _ = mnistc.load_split(mnist_data_dir, 500, 0)
    clean = x_te[:4]
    a = mnistc.corrupt_images(clean, corruption, 5, seed=0)
    b = mnistc.corrupt_images(clean[:2], corruption, 5, seed=0)
    np.random.seed(123)  # the global RNG state must not matter
    c = mnistc.corrupt_images(clean, corruption, 5, seed=0)
    assert a.shape == clean.shape and a.dtype == np.uint8
    assert np.array_equal(a, c) and np.array_equal(a[:2], b)
    assert not np.array_equal(a, clean)
    assert not np.array_equal(a, mnistc.corrupt_images(clean, corruption, 5, seed=1))


def test_mnistc_cache_is_reused_and_extended(mnist_data_dir):
    x, y = mnistc.load_mnistc(6, 2, mnist_data_dir, "contrast", num_train=500, seed=0)
    path = mnistc.corruption_path(mnist_data_dir, "contrast", 2, num_train=500, seed=0)
    assert x.shape == (6, 3, 32, 32) and 0 <= x.min() and x.max() <= 1 and y.dtype == torch.int64
    np.save(path, np.full((6, 32, 32, 3), 7, dtype=np.uint8))  # a marked cache file is read, not regenerated
    x_cached, _ = mnistc.load_mnistc(4, 2, mnist_data_dir, "contrast", num_train=500, seed=0)
    assert torch.allclose(x_cached, torch.full_like(x_cached, 7 / 255))
    x_more, y_more = mnistc.load_mnistc(8, 2, mnist_data_dir, "contrast", num_train=500, seed=0)
    assert len(x_more) == 8 and torch.allclose(x_more[:6], x) and torch.equal(y_more[:6], y)
