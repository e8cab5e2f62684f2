"""ImageNet-C read in full: all 50,000 images of a corruption x severity (CORRUPTION.NUM_EX -1).

robustbench's `load_imagenetc` reads a fixed list of 5,000 of them into one tensor. The full
folder is a torchvision `ImageFolder` with robustbench's ImageNet-C preprocessing
(`PREPROCESSINGS[None]`: ToTensor only, the files are already 224 x 224) and the same class
indices (sorted wnid folders, as robustbench's CustomImageFolder); batches are read on demand,
since 50,000 images do not fit in memory as one tensor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

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


# mariodoebler/test-time-adaptation's list of all 50,000 images (datasets/imagenet_list/
# imagenet_val_ids_50k.txt, commit 8b2ed63), which its loader reads for correlated settings and
# NUM_EX != -1: stored as each entry's index in the sorted list (= ImageFolder's order), uint16
PEER_ORDER_FILE = Path(__file__).with_name("imagenet_val_50k_order.npy")
PEER_ORDER_SIZE = 50000
PEER_ORDER_SHA256 = "9354370b2de4b770ac02264ab3932fd557017a0de0fa5358413666b4b24b466e"


def mariodoebler_order() -> "np.ndarray":
    """Indices into a full ImageNet-C folder in the order of mariodoebler's 50,000-image list (hash checked)."""
    import hashlib

    import numpy as np

    data = PEER_ORDER_FILE.read_bytes()
    if hashlib.sha256(data).hexdigest() != PEER_ORDER_SHA256:
        raise MissingResourceError(f"{PEER_ORDER_FILE} is not the shipped file (its hash differs); restore it from git")
    return np.load(PEER_ORDER_FILE, allow_pickle=False).astype(np.int64)


class ListedFolder:
    """A folder's images in a given order, with their `targets` (what the stream's loaders read)."""

    def __init__(self, folder, order: Sequence[int]) -> None:
        self.folder, self.order = folder, list(order)
        self.targets = [folder.targets[i] for i in self.order]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        return self.folder[self.order[index]]


def imagenetc_listed(data_dir: str, corruption: str, severity: int) -> ListedFolder:
    """The full folder in mariodoebler's 50,000-image list order; every image must be there."""
    folder = imagenetc_folder(data_dir, corruption, severity)
    if len(folder) != PEER_ORDER_SIZE:
        raise MissingResourceError(f"{folder.root} holds {len(folder)} images; mariodoebler's list needs all "
                                   f"{PEER_ORDER_SIZE} of ImageNet-C's {corruption} severity {severity}")
    return ListedFolder(folder, mariodoebler_order())
