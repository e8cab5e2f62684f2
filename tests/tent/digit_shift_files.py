"""Tiny files in the real on-disk layouts of the digit datasets (MNIST, USPS, MNIST-M, SVHN), for the tests.

Each image is one grey level per image (level = 20 * label + 10 + index % 5), so a test can read the
label back from the pixels after resizing and shuffling.
"""
import bz2
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def levels(labels: np.ndarray) -> np.ndarray:
    """The grey level each image is filled with: it encodes its label (and varies within a class)."""
    return (20 * labels + 10 + np.arange(len(labels)) % 5).astype(np.uint8)


def label_of(level: float) -> int:
    """The label an image's grey level (0-255) encodes."""
    return int(round(level)) // 20


def write_mnist(data_dir: Path, labels: np.ndarray, split: str = "t10k") -> np.ndarray:
    """MNIST's test (split 'train': training) files in torchvision's raw layout (idx, big-endian headers); the images."""
    raw = Path(data_dir) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    images = np.broadcast_to(levels(labels)[:, None, None], (len(labels), 28, 28)).copy()
    images[:, 4:24, 13:15] = 255  # a stroke, so that resizing has an edge to interpolate
    (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, len(labels), 28, 28)
                                                     + images.tobytes())
    (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, len(labels))
                                                     + labels.astype(np.uint8).tobytes())
    return images


def write_usps(data_dir: Path, labels: np.ndarray) -> None:
    """USPS's test file in libsvm's bz2 format (labels 1-10, pixels in [-1, 1]), as torchvision reads it."""
    lines = []
    for label, level in zip(labels, levels(labels)):
        value = level / 255 * 2 - 1
        lines.append(f"{label + 1} " + " ".join(f"{i}:{value:.6f}" for i in range(1, 257)))
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    (Path(data_dir) / "usps.t.bz2").write_bytes(bz2.compress(("\n".join(lines) + "\n").encode()))


def write_mnistm(data_dir: Path, labels: np.ndarray, test=None, payload=None) -> np.ndarray:
    """keras_mnistm.pkl.gz with byte keys (as Python 2 wrote it): RGB images whose red channel encodes the label."""
    folder = Path(data_dir) / "MNIST-M"
    folder.mkdir(parents=True, exist_ok=True)
    if test is None:
        test = np.zeros((len(labels), 28, 28, 3), np.uint8)
        test[..., 0] = levels(labels)[:, None, None]
        test[..., 1] = 7
    arrays = payload if payload is not None else {b"train": test[:2], b"test": test}
    (folder / "keras_mnistm.pkl.gz").write_bytes(gzip.compress(pickle.dumps(arrays, protocol=2)))
    return test


def write_svhn(data_dir: Path, labels: np.ndarray) -> None:
    """SVHN's test_32x32.mat (X of shape (32, 32, 3, N), y (N, 1) with 10 for the digit 0)."""
    from scipy.io import savemat

    x = np.broadcast_to(levels(labels)[None, None, None, :], (32, 32, 3, len(labels))).copy()
    y = np.where(labels == 0, 10, labels).reshape(-1, 1).astype(np.uint8)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    savemat(str(Path(data_dir) / "test_32x32.mat"), {"X": x, "y": y})


def write_all(data_dir: Path, n: int = 40) -> np.ndarray:
    """Every digit file with n test images of labels 0..9 cycled; returns the labels."""
    labels = np.arange(n) % 10
    write_mnist(data_dir, labels)
    write_usps(data_dir, labels)
    write_mnistm(data_dir, labels)
    write_svhn(data_dir, labels)
    return labels
