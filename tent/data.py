"""Corrupted test sets: robustbench's CIFAR-10-C / CIFAR-100-C / ImageNet-C loaders, or MNIST-C.

`load_part` is what a run loads for one corruption x severity of its stream (the dataset, NUM_EX
and the peer's loader taken from the config); `load_corruption` the loaders underneath.

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

from . import digit_shifts, digits, mnistc, protocols, visda
from .errors import CorruptFileError, MissingResourceError  # noqa: F401  (also imported from here)

# folder names are robustbench's (data.CORRUPTIONS_DIR_NAMES); sources are the official releases
SOURCES = {
    "cifar10": ("CIFAR-10-C", "https://zenodo.org/records/2535967 (CIFAR-10-C.tar)"),
    "cifar100": ("CIFAR-100-C", "https://zenodo.org/records/3555552 (CIFAR-100-C.tar)"),
    "imagenet": ("ImageNet-C", "https://zenodo.org/records/2235448 (blur.tar, digital.tar, "
                               "extra.tar, noise.tar, weather.tar)"),
}
# CORRUPTION.NUM_EX -1: every test image (MNIST-C: its whole test split)
FULL_SIZE = {"cifar10": 10000, "cifar100": 10000, "imagenet": 50000,
             **{name: 10 ** 9 for name in ("mnist", "digits2mnist", "mnist2digits")}, **digit_shifts.TEST_SIZES,
             visda.DATASET: visda.VALIDATION_SIZE}
# the files (not folders) expected_files names for the digit shifts and VisDA-C
DATA_FILE_NAMES = tuple(Path(name).name for name in digit_shifts.WHERE) + (visda.list_file(".").name,)


def expected_files(dataset: str, data_dir: str, corruption: str, severity: int) -> Tuple[Path, ...]:
    """The paths robustbench reads for one corruption x severity, outermost first."""
    if dataset in digit_shifts.SHIFTS:  # the target's test files (one clean set)
        return digit_shifts.expected_files(dataset, data_dir)
    if dataset == visda.DATASET:
        return (visda.list_file(data_dir),)
    root = Path(data_dir) / SOURCES[dataset][0]
    if dataset == "imagenet":
        return root, root / corruption / str(severity)
    return root, root / "labels.npy", root / f"{corruption}.npy"


def present(path: Path) -> bool:
    """Whether a path a loader reads is there: .npy and the named data files as files, ImageNet-C folders as folders."""
    if path.suffix == ".npy" or path.name in DATA_FILE_NAMES:
        return path.is_file()
    return path.is_dir()


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
    if dataset == "imagenet":  # a missing listed image: one sentence before robustbench's DataLoader fails on it
        from .imagenetc import check_listed_images  # imported here: imagenetc imports this module
        check_listed_images(data_dir, corruption, severity, n_examples)
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
    if dataset in digit_shifts.SHIFTS:  # the paper's SVHN -> MNIST / MNIST-M / USPS
        return digit_shifts.load_target(dataset, n_examples, data_dir, **(mnist_cfg or {}))
    if dataset == visda.DATASET:  # VisDA-C's real validation images, read on demand (not tensors)
        return visda.load_target(n_examples, data_dir, **(mnist_cfg or {}))
    return load_robustbench_corruption(dataset, n_examples, severity, data_dir, corruption)


def mnist_data_cfg(c: Any) -> Dict[str, object]:
    """MNIST-C split settings of config `c` (used by the data loader and the source model alike)."""
    return dict(num_train=c.MNISTC.NUM_TRAIN, seed=c.MNISTC.SEED, params=c.MNISTC.PARAMS)


def mnist_model_cfg(c: Any) -> Dict[str, object]:
    """MNIST-C source-model training settings of config `c`."""
    return dict(mnist_data_cfg(c), width=c.MNISTC.WIDTH, epochs=c.MNISTC.EPOCHS,
                batch_size=c.MNISTC.BATCH_SIZE, lr=c.MNISTC.LR, source_weights=c.MNISTC.SOURCE_WEIGHTS,
                train_seed=c.MNISTC.SEEDS[0])  # the first seed; seeds.py runs the others


def num_examples(c: Any) -> int:
    """CORRUPTION.NUM_EX, with -1 meaning every image of the test set."""
    return c.CORRUPTION.NUM_EX if c.CORRUPTION.NUM_EX != -1 else FULL_SIZE[c.CORRUPTION.DATASET]


def load_clean(c: Any, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first n images of the clean test set (mariodoebler's domain 'none': forgetting of the source)."""
    if c.CORRUPTION.DATASET == "mnist":
        x, y = mnistc.split_arrays(c.DATA_DIR, c.MNISTC.NUM_TRAIN, c.MNISTC.SEED, "x_test", "y_test")
        return mnistc.to_tensor(x[:n]), torch.from_numpy(y[:n])
    if c.CORRUPTION.DATASET in digit_shifts.SHIFTS:  # the source domain's test set: SVHN (MNIST for mnist2svhn)
        return digit_shifts.load_source_test(c.DATA_DIR, n, c.CORRUPTION.DATASET)
    from robustbench.data import load_cifar10, load_cifar100

    try:
        return {"cifar10": load_cifar10, "cifar100": load_cifar100}[c.CORRUPTION.DATASET](n, c.DATA_DIR)
    except OSError as e:  # torchvision's download failed (offline) or the folder is unreadable
        raise MissingResourceError(f"the clean {c.CORRUPTION.DATASET} test set is not under {c.DATA_DIR} "
                                   f"and could not be downloaded ({type(e).__name__}); place it there") from None


def load_part(c: Any, setting: str, corruption: str, severity: int, peer: str = "tent"):
    """One corruption x severity of the stream of config `c`: (x, y) tensors, or ImageNet-C's full folder.

    tent / CoTTA: the first NUM_EX images. mariodoebler: every image (its loader draws NUM_EX from
    them); for ImageNet-C robustbench's 5,000-image list, or its own list of all 50,000 where its loader
    reads that (a correlated setting or NUM_EX != -1). 'none': the clean
    test set (all of it for mariodoebler, whose loader cannot shuffle or subsample a torchvision set).
    """
    from .imagenetc import imagenetc_folder, imagenetc_listed  # imported here: imagenetc imports this module

    dataset = c.CORRUPTION.DATASET
    if corruption == protocols.CLEAN:
        return load_clean(c, FULL_SIZE[dataset] if peer == "mariodoebler" else num_examples(c))
    if peer == "mariodoebler":
        imagenet = dataset == "imagenet"
        if imagenet and (c.CORRUPTION.NUM_EX != -1 or "correlated" in setting):
            return imagenetc_listed(c.DATA_DIR, corruption, severity)  # its list of all 50,000
        n = 5000 if imagenet else FULL_SIZE[dataset]
        return load_corruption(dataset, n, severity, c.DATA_DIR, corruption, mnist_data_cfg(c))
    if dataset == "imagenet" and c.CORRUPTION.NUM_EX == -1:
        return imagenetc_folder(c.DATA_DIR, corruption, severity)
    return load_corruption(dataset, num_examples(c), severity, c.DATA_DIR, corruption, mnist_data_cfg(c))
