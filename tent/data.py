"""Corrupted test sets: robustbench's CIFAR-10-C / CIFAR-100-C / ImageNet-C loaders, or MNIST-C.

robustbench downloads CIFAR-10-C / CIFAR-100-C from Zenodo when the folder is missing; where
that fails (offline) or a file is missing, `load_corruption` raises MissingResourceError with
one sentence naming the expected path and where to get the data; a file that is there but
cannot be read (truncated .npy, not an array) raises CorruptFileError naming it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from . import digits, mnistc
from .errors import CorruptFileError, MissingResourceError  # noqa: F401  (also imported from here)

# folder names are robustbench's (data.CORRUPTIONS_DIR_NAMES); sources are the official releases
SOURCES = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/records/2535967 (CIFAR-10-C.tar)"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/records/3555552 (CIFAR-100-C.tar)"),
    "imagenet": ("ImageNet-C", "https://zenodo.org/records/2235448 (blur.tar, digital.tar, "
                               "extra.tar, noise.tar, weather.tar)"),
}


def expected_files(dataset: str, data_dir: str, corruption: str, severity: int) -> Tuple[Path, ...]:
    """The paths robustbench reads for one corruption x severity, outermost first."""
    root = Path(data_dir) / SOURCES[dataset][0]
    if dataset == "imagenet":
        return root, root / corruption / str(severity)
    return root, root / "labels.npy", root / f"{corruption}.npy"


def present(path: Path) -> bool:
    """Whether a path robustbench reads is there: .npy files as files, ImageNet-C folders as folders."""
    return path.is_file() if path.suffix == ".npy" else path.is_dir()


def missing_message(dataset: str, data_dir: str, corruption: str, severity: int, reason: str) -> str:
    """One sentence: which path is missing, and where the data comes from."""
    paths = expected_files(dataset, data_dir, corruption, severity)
    missing = next((p for p in paths if not present(p)), paths[-1])
    folder, source = SOURCES[dataset]
    return (f"{folder} data file {missing} is missing and could not be downloaded ({reason}); "
            f"download {source} and extract it into {Path(data_dir)} so that {missing} exists")


def load_robustbench_corruption(dataset: str, n_examples: int, severity: int, data_dir: str,
                                corruption: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """robustbench's own loader for one corruption x severity (unshuffled, as the reference)."""
    from robustbench.data import load_cifar10c, load_cifar100c, load_imagenetc
    from robustbench.zenodo_download import DownloadError

    loader = {"cifar10": load_cifar10c, "cifar100": load_cifar100c, "imagenet": load_imagenetc}[dataset]
    paths = expected_files(dataset, data_dir, corruption, severity)
    try:
        x, y = loader(n_examples, severity, data_dir, False, [corruption])
    except (OSError, DownloadError) as e:  # failed download (offline), missing folder or file
        if isinstance(e, OSError) and all(present(p) for p in paths):
            raise  # the files are there (PermissionError, ...): the entry point reports it in one line
        raise MissingResourceError(
            missing_message(dataset, data_dir, corruption, severity, type(e).__name__)) from None
    except (ValueError, EOFError) as e:  # np.load of a truncated or foreign file
        raise CorruptFileError(corrupt_message(paths, e)) from None
    if len(x) != len(y):  # a short but well-formed array: robustbench would pair wrong labels
        raise CorruptFileError(f"{paths[-1]} holds {len(x)} images of severity {severity} for "
                               f"{len(y)} labels in {paths[1]}: the file is incomplete; download it again")
    return x, y


def corrupt_message(paths: Tuple[Path, ...], error: BaseException) -> str:
    """One line naming the .npy file numpy cannot read (checked by its header), and why."""
    bad = paths[-1]
    for path in paths[1:]:
        try:
            np.load(path, mmap_mode="r")  # reads the header and checks the size only
        except (ValueError, EOFError, OSError):
            bad = path
            break
    reason = " ".join(str(error).split()) or type(error).__name__
    return f"data file {bad} cannot be read ({reason}): it is truncated or not a NumPy array; download it again"


def load_corruption(dataset: str, n_examples: int, severity: int, data_dir: str, corruption: str,
                    mnist_cfg: Optional[Dict[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(x, y) for one corruption x severity: x float NCHW in [0, 1] on the CPU, y class indices."""
    if dataset == "mnist":
        return mnistc.load_mnistc(n_examples, severity, data_dir, corruption, **(mnist_cfg or {}))
    if dataset in digits.SHIFTS:  # a real domain shift: one clean target set, severity unused
        return digits.load_target(dataset, n_examples, data_dir, **(mnist_cfg or {}))
    return load_robustbench_corruption(dataset, n_examples, severity, data_dir, corruption)
