"""Pre-flight check of the folders a run writes, before any data or model is touched.

SAVE_DIR must be writable (log, results). DATA_DIR and CKPT_DIR must be writable too
(downloads, generated MNIST-C arrays, the trained MnistCNN), except a read-only folder that
already holds every file a robustbench run reads (a shared dataset or model folder). Without this
check an unwritable CKPT_DIR failed only after the MNIST-C source model had trained.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Optional

from .data import expected_files, present
from .errors import ConfigError

WRITTEN = {"SAVE_DIR": "its log and results", "DATA_DIR": "downloaded or generated data",
           "CKPT_DIR": "downloaded or trained checkpoints"}


def unwritable_reason(folder: Path) -> Optional[str]:
    """Why files cannot be created in `folder` (or in the folders to create for it); None if they can."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:  # the only honest test (permissions, read-only mounts, root's rights): create a file
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"cannot create files in {existing} ({e.strerror})"
    return None


def holds_inputs(key: str, c: Any) -> bool:
    """Whether a robustbench run only reads from this folder: every file it needs is there."""
    dataset = c.CORRUPTION.DATASET
    if dataset == "mnist":
        return False  # the MNIST-C caches are written on first use
    if key == "DATA_DIR":
        return all(present(path) for t in c.CORRUPTION.TYPE for s in c.CORRUPTION.SEVERITY
                   for path in expected_files(dataset, c.DATA_DIR, t, s))
    if dataset == "imagenet" and "Standard" in c.MODEL.ARCH:
        return True  # torchvision's weights live in the torch hub cache, not in CKPT_DIR
    return (Path(c.CKPT_DIR) / dataset / "corruptions" / f"{c.MODEL.ARCH}.pt").is_file()


def check_folders(c: Any) -> None:
    """ConfigError naming the key when a folder the run writes cannot be written."""
    for key, written in WRITTEN.items():
        reason = unwritable_reason(Path(getattr(c, key)))
        if reason and not (key != "SAVE_DIR" and holds_inputs(key, c)):
            raise ConfigError(f"config key {key} must be a folder where the run can write {written}: "
                              f"{reason}")
