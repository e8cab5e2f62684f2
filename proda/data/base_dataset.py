"""Shared machinery of the ProDA dataset loaders: label encoding and colouring, image
normalisation, the weak / strong views, and one clear error for missing files.

Every loader (Cityscapes, GTA5, SYNTHIA) reads its own layout and raw label ids, then hands
the resized image and label to `BaseDataset.make_item`, which applies the joint weak
augmentation (`augmentations.Compose`), draws the strong view (`RandAugmentMC(2, 10)`) and
normalises exactly as the reference: float64, minus the (zero) mean, divided by 255, CHW,
then float32.
"""
from __future__ import annotations

import logging
import os
import pickle
from abc import ABC, abstractmethod
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.utils.data as data
from PIL import Image

from proda.data.randaugment import RandAugmentMC
from proda.utils import IGNORE_INDEX

# Cityscapes colours of the 19 train ids (road ... bicycle), used by every loader
PALETTE_19 = np.array([
    [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
    [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
    [0, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70],
    [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32],
], dtype=np.float64)

# train id of the 16- and 13-class protocols -> 19-class train id (for colours)
TO19 = {
    19: list(range(19)),
    16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18],
    13: [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18],
}


class DatasetError(FileNotFoundError):
    """A dataset root, split file, image or pseudo-label file that is missing or unreadable."""


def require_path(path: str, what: str, hint: str, is_dir: bool = False) -> str:
    """Return `path` if it exists, else raise one DatasetError naming it and how to create it."""
    exists = os.path.isdir(path) if is_dir else os.path.isfile(path)
    if not exists:
        raise DatasetError(f"{what} not found: {path} ({hint})")
    return path


def read_file(path: str, what: str, hint: str, reader: Callable[[str], Any]) -> Any:
    """reader(path) for an existing file; a truncated or corrupt one is one DatasetError naming it."""
    require_path(path, what, hint)
    try:
        return reader(path)
    except (OSError, ValueError, EOFError, SyntaxError, pickle.UnpicklingError) as err:
        raise DatasetError(f"{what} {path} is corrupt or unreadable ({' '.join(str(err).split())}); "
                           f"replace or regenerate it ({hint})") from None


def read_label_png(path: str, what: str, hint: str) -> np.ndarray:
    """A label PNG fully decoded as uint8 (PIL decodes lazily: a truncated file fails here)."""
    return read_file(path, what, hint, lambda p: np.asarray(Image.open(p), dtype=np.uint8))


def resize_image(img: Image.Image, size: Tuple[int, int]) -> np.ndarray:
    """RGB image resized bilinearly to size=(W, H), as uint8 H x W x 3."""
    img = img.convert("RGB").resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def resize_label(lbl: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Integer label map (uint8 or uint16) resized with nearest neighbour to size=(W, H)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(lbl)).resize(tuple(size), Image.Resampling.NEAREST))


def label_lut(valid_classes: Sequence[int]) -> np.ndarray:
    """Lookup table raw id -> train id; ids not listed (and any id beyond the table) -> 250."""
    lut = np.full(max(valid_classes) + 2, IGNORE_INDEX, dtype=np.uint8)
    lut[list(valid_classes)] = np.arange(len(valid_classes), dtype=np.uint8)
    return lut


def normalize_image(img: Any, mean: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 (array or PIL) -> C x H x W float32, as the reference: (img - mean) / 255."""
    arr = np.asarray(img).astype(np.float64)
    arr -= mean
    arr = arr / 255.0
    return torch.from_numpy(arr.transpose(2, 0, 1).copy()).float()


class BaseDataset(data.Dataset, ABC):
    """Common state and item building of the Cityscapes, GTA5 and SYNTHIA loaders."""

    mean_rgb = {"pascal": [103.939, 116.779, 123.68], "cityscapes": [0.0, 0.0, 0.0]}
    CLASS_PIXEL_COUNTS: Optional[Sequence[int]] = None  # the reference's per-class pixel counts, where it has them

    def __init__(self, opt: Any, logger: Optional[logging.Logger], augmentations: Any,
                 valid_classes: Sequence[int], class_names: Sequence[str], img_size: Sequence[int]) -> None:
        self.opt = opt
        self.logger = logger or logging.getLogger(__name__)
        self.augmentations = augmentations
        self.randaug = RandAugmentMC(2, 10)
        self.valid_classes = list(valid_classes)
        self.n_classes = len(self.valid_classes)
        self.class_names = list(class_names)
        self.class_map = dict(zip(self.valid_classes, range(self.n_classes)))
        self.to19 = dict(zip(range(self.n_classes), TO19[self.n_classes]))
        self.ignore_index = IGNORE_INDEX
        self.img_size = (int(img_size[0]), int(img_size[1]))  # (W, H), PIL order
        self.mean = np.array(self.mean_rgb["cityscapes"])
        self._lut = label_lut(self.valid_classes)

    @abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abstractmethod
    def __getitem__(self, index: int) -> Dict[str, Any]:
        """One item dict (see make_item)."""

    def encode_segmap(self, mask: np.ndarray) -> np.ndarray:
        """Raw dataset ids -> train ids 0..n_classes-1, every other id -> 250 (uint8)."""
        mask = np.asarray(mask)
        return self._lut[np.minimum(mask, len(self._lut) - 1)]

    def decode_segmap(self, temp: np.ndarray) -> np.ndarray:
        """Train ids -> RGB in [0, 1] with the 19-class colours; other values stay grey (v/255)."""
        temp = np.asarray(temp)
        rgb = np.repeat(temp[..., None], 3, axis=-1).astype(np.float64)
        valid = (temp >= 0) & (temp < self.n_classes)
        palette = PALETTE_19[TO19[self.n_classes]]
        rgb[valid] = palette[temp[valid].astype(np.int64)]
        return rgb / 255.0

    def load_image(self, path: str) -> np.ndarray:
        """Read an RGB image and resize it to the loader's img_size."""
        return read_file(path, "image", self.download_hint, lambda p: resize_image(Image.open(p), self.img_size))

    def transform(self, img: Any, lbl: np.ndarray, lp: Optional[np.ndarray] = None,
                  check: bool = True) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """Normalised image tensor, long label tensor and long pseudo-label tensor (or None)."""
        lbl = np.asarray(lbl).astype(np.int64)
        if check and np.any((lbl != self.ignore_index) & (lbl >= self.n_classes)):
            raise ValueError(f"Segmentation map contained invalid class values: {np.unique(lbl)}")
        lp_t = None if lp is None else torch.from_numpy(np.asarray(lp).astype(np.int64))
        return normalize_image(img, self.mean), torch.from_numpy(lbl), lp_t

    def make_item(self, img: np.ndarray, lbl: np.ndarray, img_path: str, lp: Optional[np.ndarray] = None,
                  lpsoft: Optional[np.ndarray] = None) -> Dict[str, Any]:
        """Weak view (+ recorded params), strong view (+ params), tensors; None entries dropped."""
        item: Dict[str, Any] = {}
        if self.augmentations is not None:
            img, lbl, lp, lpsoft, item["weak_params"] = self.augmentations(img, lbl, lp, lpsoft)
            img_strong, item["params"] = self.randaug(Image.fromarray(img))
            item["img_strong"] = normalize_image(img_strong, self.mean)
        item["img"], item["label"], item["lp"] = self.transform(img, lbl, lp)
        item["lpsoft"] = lpsoft
        item["img_path"] = img_path
        return {k: v for k, v in item.items() if v is not None}

    def log_found(self, count: int, what: str) -> None:
        """Log the image count (the reference prints 'Found N images')."""
        self.logger.info("Found %d %s images", count, what)

    download_hint = "see docs/proda.md (Data layouts)"

    # ---------------------------------------------------------------- compatibility
    # The reference's names, for its callers; nothing in proda/ uses them (decode_segmap is the palette).

    colors = PALETTE_19.astype(int).tolist()
    label_colours = dict(zip(range(19), colors))

    def get_cls_num_list(self) -> Optional[np.ndarray]:
        """The reference's pixel count per class of this dataset (None where it has none, as for SYNTHIA)."""
        return None if self.CLASS_PIXEL_COUNTS is None else np.array(self.CLASS_PIXEL_COUNTS)
