"""ImageNet-C read in full: all 50,000 images of a corruption x severity (CORRUPTION.NUM_EX -1).

robustbench's `load_imagenetc` reads a fixed list of 5,000 of them into one tensor. The full
folder is a torchvision `ImageFolder` with robustbench's ImageNet-C preprocessing
(`PREPROCESSINGS[None]`: ToTensor only, the files are already 224 x 224, cut by resize 256 and
centre crop 224 as every ImageNet model's test transform) and ImageNet's class indices (the
sorted 1,000 wnids, as robustbench's CustomImageFolder and pycls number a complete folder, here
also when class folders are missing); batches are read on demand, since 50,000 images do not fit
in memory as one tensor.

A folder that is only partly there ends in one sentence naming it: an empty class folder, or an
image of robustbench's 5,000-image list that is missing (`check_listed_images`, checked before
robustbench's DataLoader would fail on it).
"""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from torchvision.datasets import ImageFolder

from .data import SOURCES, MissingResourceError, expected_files, missing_message

logger = logging.getLogger(__name__)

# the archive of Hendrycks & Dietterich's release (https://zenodo.org/records/2235448) holding each corruption
ARCHIVES = {
    "noise.tar": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur.tar": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather.tar": ("snow", "frost", "fog", "brightness"),
    "digital.tar": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
    "extra.tar": ("speckle_noise", "gaussian_blur", "spatter", "saturate"),
}
ZENODO = "https://zenodo.org/records/2235448"
IMAGES_PER_FOLDER = 50000  # the ImageNet validation set, one corruption x severity


def archive_of(corruption: str) -> str:
    """The release's archive holding a corruption (e.g. noise.tar)."""
    return next(name for name, members in ARCHIVES.items() if corruption in members)


def extract_again(data_dir: str, corruption: str) -> str:
    """What to do about an incomplete folder: extract its archive again."""
    return f"extract {archive_of(corruption)} from {ZENODO} into {Path(data_dir) / SOURCES['imagenet'][0]} again"


@lru_cache(maxsize=1)
def imagenet_classes() -> Dict[str, int]:
    """ImageNet's 1,000 wnids and their class indices (sorted order: torchvision's, pycls's and robustbench's)."""
    from timm.data import ImageNetInfo

    return {wnid: i for i, wnid in enumerate(sorted(ImageNetInfo().label_names()))}


def empty_class_folders(folder: Path, classes: Sequence[str]) -> List[str]:
    """The class folders holding no image file (torchvision's extensions)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    def has_image(wnid: str) -> bool:
        with os.scandir(folder / wnid) as entries:
            return any(e.name.lower().endswith(IMG_EXTENSIONS) and e.is_file() for e in entries)
    return [wnid for wnid in classes if not has_image(wnid)]


class ImageNetCFolder(ImageFolder):
    """An ImageFolder whose class indices are ImageNet's, whichever class folders are present."""

    def __init__(self, root: str, data_dir: str, corruption: str, transform=None) -> None:
        self.data_dir, self.corruption = data_dir, corruption  # find_classes (called below) names them
        super().__init__(root, transform=transform)

    def find_classes(self, directory: str) -> Tuple[List[str], Dict[str, int]]:
        """The wnid folders present, each with its ImageNet index; an empty one stops with one sentence."""
        return imagenet_class_folders(Path(directory), self.data_dir, self.corruption)


def imagenetc_folder(data_dir: str, corruption: str, severity: int) -> ImageNetCFolder:
    """The ImageFolder of DATA_DIR/ImageNet-C/<corruption>/<severity>, with robustbench's transform."""
    from robustbench.data import PREPROCESSINGS

    folder = expected_files("imagenet", data_dir, corruption, severity)[-1]
    if not Path(folder).is_dir():
        raise MissingResourceError(missing_message("imagenet", data_dir, corruption, severity,
                                                   "no such folder"))
    dataset = ImageNetCFolder(str(folder), data_dir, corruption, transform=PREPROCESSINGS[None])
    if len(dataset) != IMAGES_PER_FOLDER:
        logger.warning("%s holds %d images, not ImageNet-C's %d: its error is over those images only",
                       folder, len(dataset), IMAGES_PER_FOLDER)
    return dataset


def imagenet_class_folders(folder: Path, data_dir: str, corruption: str) -> Tuple[List[str], Dict[str, int]]:
    """(wnids present, wnid -> ImageNet index) of an ImageNet-C folder; a folder that is partly there: one sentence."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    index = imagenet_classes()
    foreign = [name for name in classes if name not in index]
    if foreign:
        raise MissingResourceError(f"{folder / foreign[0]} is not an ImageNet class folder (a wnid such as "
                                   f"n01440764); move it out of {folder}")
    empty = empty_class_folders(folder, classes) if classes else []
    if not classes or empty:
        what = (f"{len(empty)} of its {len(classes)} class folders empty (e.g. {empty[0]})" if classes
                else "no class folder")
        raise MissingResourceError(f"ImageNet-C folder {folder} has {what}: it was only partly extracted; "
                                   f"{extract_again(data_dir, corruption)}")
    return classes, {wnid: index[wnid] for wnid in classes}


@lru_cache(maxsize=1)
def robustbench_list() -> Tuple[str, ...]:
    """robustbench's 5,000 ImageNet-C images (wnid/file, its order), which `load_imagenetc` reads."""
    import importlib.resources

    ids = importlib.resources.files("robustbench") / "helper_files" / "imagenet_test_image_ids.txt"
    return tuple(ids.read_text().split())


def check_listed_images(data_dir: str, corruption: str, severity: int, n_examples: int) -> None:
    """Stop with one sentence where robustbench's loader would fail: a missing image among the list's first
    n (its DataLoader's error), or a missing class folder of any listed image (its KeyError)."""
    folder = expected_files("imagenet", data_dir, corruption, severity)[-1]
    if not folder.is_dir():
        return  # the missing folder is reported where robustbench's loader fails on it
    listed = robustbench_list()
    missing = [rel for rel in listed[:n_examples] if not (folder / rel).is_file()]
    if missing:
        raise MissingResourceError(f"ImageNet-C image {folder / missing[0]} is missing ({len(missing)} of the "
                                   f"{len(listed[:n_examples])} images robustbench reads from that folder are); "
                                   f"{extract_again(data_dir, corruption)}")
    classes = sorted({rel.split("/")[0] for rel in listed})
    absent = [wnid for wnid in classes if not (folder / wnid).is_dir()]
    if absent:
        raise MissingResourceError(f"ImageNet-C class folder {folder / absent[0]} is missing ({len(absent)} of the "
                                   f"{len(classes)} robustbench's list names are); {extract_again(data_dir, corruption)}")


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
