"""Pre-flight check of the folders a run writes, before any data or model is touched.

SAVE_DIR must be writable (log, results). DATA_DIR and CKPT_DIR must be writable too
(downloads, generated MNIST-C arrays, the trained MnistCNN), except a read-only folder that
already holds every file the run reads (a shared dataset or model folder, or the caches of an
MNIST-C benchmark that has run before: it then runs from them). Without this
check an unwritable CKPT_DIR failed only after the MNIST-C source model had trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from dacommon.files import write_blocker

from . import mnistc, protocols
from .conf_checks import effective_setting
from .data import expected_files, present
from .digits import SHIFTS as DIGIT_SHIFTS
from .errors import ConfigError
from .models import mnist_cnn_path, source_checkpoint

WRITTEN = {"SAVE_DIR": "its log and results", "DATA_DIR": "downloaded or generated data",
           "CKPT_DIR": "downloaded or trained checkpoints"}


def unwritable_reason(folder: Path) -> Optional[str]:
    """Why files cannot be created in `folder` (or in the folders to create for it); None if they can."""
    blocker = write_blocker(folder)
    if blocker is None:
        return None
    if blocker.is_file:
        return f"{blocker.where} is a file, not a folder"
    return f"cannot create files in {blocker.where} ({blocker.reason})"


def holds_inputs(key: str, c: Any) -> bool:
    """Whether a run only reads from this folder: every file it needs is there."""
    dataset = c.CORRUPTION.DATASET
    if dataset == "mnist":
        return holds_mnistc_inputs(key, c)
    if dataset in DIGIT_SHIFTS:
        return False  # their caches are written on first use
    if key == "DATA_DIR":
        return all(present(path) for t in c.CORRUPTION.TYPE for s in c.CORRUPTION.SEVERITY
                   for path in expected_files(dataset, c.DATA_DIR, t, s))
    if dataset == "imagenet" and "Standard" in c.MODEL.ARCH:
        return True  # torchvision's weights live in the torch hub cache, not in CKPT_DIR
    return source_checkpoint(c.MODEL.ARCH, c.CKPT_DIR, dataset).is_file()


def holds_mnistc_inputs(key: str, c: Any) -> bool:
    """MNIST-C: DATA_DIR holds the split and every corrupted file the stream reads, long enough;
    CKPT_DIR holds every seed's source model. A finished benchmark then runs from read-only folders."""
    if key == "CKPT_DIR":
        return all(mnist_cnn_path(c.CKPT_DIR, dict(
            num_train=c.MNISTC.NUM_TRAIN, seed=c.MNISTC.SEED, width=c.MNISTC.WIDTH, epochs=c.MNISTC.EPOCHS,
            batch_size=c.MNISTC.BATCH_SIZE, lr=c.MNISTC.LR, train_seed=s, source="mnist")).is_file()
            for s in c.MNISTC.SEEDS)
    split = mnistc.split_dir(c.DATA_DIR, c.MNISTC.NUM_TRAIN, c.MNISTC.SEED) / "split.npz"
    if not split.is_file():
        return False
    needed = mnistc.NUM_IMAGES - c.MNISTC.NUM_TRAIN
    needed = needed if c.CORRUPTION.NUM_EX == -1 else min(needed, c.CORRUPTION.NUM_EX)
    pieces = protocols.plan(effective_setting(c), list(c.CORRUPTION.TYPE), list(c.CORRUPTION.SEVERITY))
    files = {mnistc.corruption_path(c.DATA_DIR, name, p.severity, c.MNISTC.NUM_TRAIN, c.MNISTC.SEED, c.MNISTC.PARAMS)
             for p in pieces for name in p.corruptions}
    return all(mnistc.cached_images(path, needed) is not None for path in files)


def check_folders(c: Any) -> None:
    """ConfigError naming the key when a folder the run writes cannot be written."""
    for key, written in WRITTEN.items():
        reason = unwritable_reason(Path(getattr(c, key)))
        if reason and not (key != "SAVE_DIR" and holds_inputs(key, c)):
            raise ConfigError(f"config key {key} must be a folder where the run can write {written}: "
                              f"{reason}")
