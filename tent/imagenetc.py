"""ImageNet-C read in full: all 50,000 images of a corruption x severity (CORRUPTION.NUM_EX -1).

robustbench's `load_imagenetc` reads a fixed list of 5,000 of them into one tensor. The full
folder is a torchvision `ImageFolder` with robustbench's ImageNet-C preprocessing
(`PREPROCESSINGS[None]`: ToTensor only, the files are already 224 x 224) and the same class
indices (sorted wnid folders, as robustbench's CustomImageFolder); batches are read on demand,
since 50,000 images do not fit in memory as one tensor.
"""
from __future__ import annotations

from pathlib import Path

from .data import MissingResourceError, expected_files, missing_message


def imagenetc_folder(data_dir: str, corruption: str, severity: int):
    """The ImageFolder of DATA_DIR/ImageNet-C/<corruption>/<severity>, with robustbench's transform."""
    from robustbench.data import PREPROCESSINGS
    from torchvision.datasets import ImageFolder

    folder = expected_files("imagenet", data_dir, corruption, severity)[-1]
    if not Path(folder).is_dir():
        raise MissingResourceError(missing_message("imagenet", data_dir, corruption, severity,
                                                   "no such folder"))
    return ImageFolder(str(folder), transform=PREPROCESSINGS[None])
