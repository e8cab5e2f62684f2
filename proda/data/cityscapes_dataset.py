"""Cityscapes, the target domain: leftImg8bit/<split>/<city>/*_leftImg8bit.png with
gtFine/<split>/<city>/*_gtFine_labelIds.png, resized to 2048x1024 (reference) or --tgt_img_size.

Training items also carry the unaugmented image ('img_full') and, when the loader is given
`PseudoLabels` (by default, and in create_dataset, `saved_pseudo_labels(opt)` of
proda/pseudo_labels.py, the one place that decides them from the options), the saved
pseudo labels: soft probabilities ('lpsoft') or hard labels ('lp') whose confidence <=
threshold is set to the ignore index.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from proda.data import pseudo_files
from proda.data.base_dataset import (IGNORE_INDEX, BaseDataset, DatasetError, normalize_image, read_file,
                                     read_label_png, require_path, resize_label)
from proda.pseudo_labels import PseudoLabels, saved_pseudo_labels

IMG_SIZE = (2048, 1024)  # (W, H) of the reference

VALID_CLASSES = {
    19: [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33],
    16: [7, 8, 11, 12, 13, 17, 19, 20, 21, 23, 24, 25, 26, 28, 32, 33],
    13: [7, 8, 11, 19, 20, 21, 23, 24, 25, 26, 28, 32, 33],
}
CLASS_NAMES = {
    19: ["unlabelled", "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light",
         "traffic_sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
         "train", "motorcycle", "bicycle"],
    16: ["unlabelled", "road", "sidewalk", "building", "wall", "fence", "pole", "traffic_light",
         "traffic_sign", "vegetation", "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle"],
    13: ["unlabelled", "road", "sidewalk", "building", "traffic_light", "traffic_sign", "vegetation",
         "sky", "person", "rider", "car", "bus", "motorcycle", "bicycle"],
}
DOWNLOAD_HINT = ("download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
                 "https://www.cityscapes-dataset.com and unzip both into --tgt_rootpath")


FROM_OPTIONS = "from the options"  # Cityscapes_loader's default: saved_pseudo_labels(opt) for the train split


def recursive_glob(rootdir: str = ".", suffix: str = "") -> List[str]:
    """All files under rootdir whose name ends with suffix."""
    return [os.path.join(looproot, filename)
            for looproot, _, filenames in os.walk(rootdir)
            for filename in filenames if filename.endswith(suffix)]


class Cityscapes_loader(BaseDataset):
    """Cityscapes images and labels (19 / 16 / 13 classes) with saved pseudo labels for training."""

    download_hint = DOWNLOAD_HINT
    CLASS_PIXEL_COUNTS = (1557726944, 254364912, 673500400, 18431664, 14431392, 29361440, 7038112,  # train split
                          7352368, 477239920, 40134240, 211669120, 36057968, 865184, 264786464,
                          17128544, 2385680, 943312, 504112, 2174560)

    def __init__(self, opt: Any, logger: Optional[logging.Logger], augmentations: Any = None,
                 split: str = "train", pseudo_labels: Union[PseudoLabels, None, str] = FROM_OPTIONS) -> None:
        """pseudo_labels: what the split reads (None: none); by default the reference's choice from
        the options (saved_pseudo_labels, train split only), so the reference's call still works."""
        if pseudo_labels == FROM_OPTIONS:
            pseudo_labels = saved_pseudo_labels(opt) if split == "train" else None
        n_class = opt.n_class
        super().__init__(opt, logger, augmentations, VALID_CLASSES[n_class], CLASS_NAMES[n_class],
                         opt.tgt_img_size or IMG_SIZE)
        self.root = opt.tgt_rootpath
        self.split = split
        require_path(self.root, "Cityscapes root", DOWNLOAD_HINT, is_dir=True)
        self.images_base = require_path(os.path.join(self.root, "leftImg8bit", split),
                                        f"Cityscapes {split} images", DOWNLOAD_HINT, is_dir=True)
        self.annotations_base = require_path(os.path.join(self.root, "gtFine", split),
                                             f"Cityscapes {split} labels", DOWNLOAD_HINT, is_dir=True)
        self.files = sorted(recursive_glob(rootdir=self.images_base, suffix=".png"))
        if not self.files:
            raise DatasetError(f"No files for split=[{split}] found in {self.images_base} ({DOWNLOAD_HINT})")
        self.pseudo_labels = pseudo_labels
        if pseudo_labels is not None:
            self._check_pseudo_folder()
        self.log_found(len(self.files), split)

    def __len__(self) -> int:
        """Number of images in the split."""
        return len(self.files)

    def label_path(self, img_path: str) -> str:
        """gtFine/<split>/<city>/<name>_gtFine_labelIds.png of an image."""
        city = os.path.basename(os.path.dirname(img_path))
        return os.path.join(self.annotations_base, city, os.path.basename(img_path)[:-15] + "gtFine_labelIds.png")

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """Item dict: img, img_full, label, img_path [, img_strong, params, weak_params, lp | lpsoft]."""
        img_path = self.files[index].rstrip()
        img = self.load_image(img_path)
        lbl = read_label_png(self.label_path(img_path), "Cityscapes label", DOWNLOAD_HINT)
        lbl = self.encode_segmap(resize_label(lbl, self.img_size))
        lp, lpsoft = self.load_pseudo(img_path) if self.pseudo_labels is not None else (None, None)
        item = self.make_item(img, lbl, self.files[index], lp=lp, lpsoft=lpsoft)
        # without augmentation the weak view is the whole image, already normalised once
        item["img_full"] = item["img"].clone() if self.augmentations is None else normalize_image(img, self.mean)
        return item

    def _check_pseudo_folder(self) -> None:
        """Before training starts: the pseudo-label folder exists, every image's files are complete
        and of the right shape (headers), and a sample's values are valid (docs/reliability.md)."""
        soft = self.pseudo_labels.kind == "soft"
        require_path(self.pseudo_labels.folder, "soft pseudo-label folder" if soft else "pseudo-label folder",
                     self._pseudo_hint(soft), is_dir=True)
        shapes = {self._pseudo_shape(img_path): img_path for img_path in self.files}
        if len(shapes) > 1:  # a batch stacks them: one size for the whole folder
            (a, first), (b, other) = list(shapes.items())[:2]
            raise DatasetError(f"pseudo labels of {first} and {other} in {self.pseudo_labels.folder} differ in "
                               f"shape ({a} vs {b}): they come from different runs ({self._pseudo_hint(soft)})")
        sample = np.unique(np.linspace(0, len(self.files) - 1, min(pseudo_files.START_SAMPLE, len(self.files))))
        for index in sample.astype(int):
            self.load_pseudo(self.files[index])

    def _pseudo_paths(self, img_path: str) -> Tuple[str, Optional[str]]:
        """The pseudo-label file of an image and, for hard labels with a threshold, its confidences."""
        name, folder = os.path.basename(img_path), self.pseudo_labels.folder
        if self.pseudo_labels.kind == "soft":
            return os.path.join(folder, name.replace(".png", ".npy")), None
        conf = os.path.join(folder, name.replace(".png", "_conf.npy")) if self.pseudo_labels.threshold > 0 else None
        return os.path.join(folder, name), conf

    def _pseudo_shape(self, img_path: str) -> Tuple[int, ...]:
        """An image's pseudo-label shape from the file headers: every file complete, shapes consistent."""
        soft = self.pseudo_labels.kind == "soft"
        hint = self._pseudo_hint(soft)
        path, conf_path = self._pseudo_paths(img_path)
        if soft:
            shape, dtype = read_file(path, "soft pseudo labels", hint, pseudo_files.npy_header)
            self._pseudo_check(pseudo_files.soft_problem(shape, dtype, self.n_classes), path, soft)
            return shape
        (w, h), _ = read_file(path, "pseudo labels", hint, pseudo_files.png_header)
        if conf_path is not None:
            conf_shape, _ = read_file(conf_path, "pseudo-label confidences", hint, pseudo_files.npy_header)
            if conf_shape != (h, w):
                raise DatasetError(f"pseudo-label confidences {conf_path} have shape {conf_shape}, "
                                   f"the label {path} has {(h, w)} ({hint})")
        return (h, w)

    def _pseudo_check(self, problem: Optional[str], path: str, soft: bool) -> None:
        """Raise one DatasetError line naming the pseudo-label file when it has a problem."""
        if problem:
            kind = "soft pseudo labels" if soft else "pseudo labels"
            raise DatasetError(f"{kind} {path} {problem}: regenerate them ({self._pseudo_hint(soft)})")

    @staticmethod
    def _pseudo_hint(soft: bool) -> str:
        """How the pseudo labels are made, for error messages."""
        if soft:
            return ("run python -m proda.generate_pseudo_label --soft --name <NAME> --resume_path <warm-up checkpoint> "
                    "and pass --path_soft <save_path>/<NAME>")
        return ("run python -m proda.generate_pseudo_label --flip --name <NAME> --resume_path <previous stage checkpoint> "
                "and pass --path_LP <save_path>/<NAME>")

    def load_pseudo(self, img_path: str) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
        """(lp, lpsoft) saved for this image: soft C x h x w probabilities, or a hard label map;
        their values are checked on the way (about a millisecond on data already in memory)."""
        soft = self.pseudo_labels.kind == "soft"
        path, conf_path = self._pseudo_paths(img_path)
        if soft:
            lpsoft = read_file(path, "soft pseudo labels", self._pseudo_hint(soft=True), np.load)
            self._pseudo_check(pseudo_files.soft_problem(lpsoft.shape, lpsoft.dtype, self.n_classes)
                               or pseudo_files.soft_value_problem(lpsoft), path, soft)
            return None, lpsoft
        lp = np.array(read_label_png(path, "pseudo labels", self._pseudo_hint(soft=False)))
        self._pseudo_check(pseudo_files.hard_value_problem(lp, self.n_classes), path, soft)
        if conf_path is not None:  # a threshold <= 0 ignores nothing: confidences are positive
            conf = read_file(conf_path, "pseudo-label confidences", self._pseudo_hint(soft=False), np.load)
            if conf.shape != lp.shape:
                raise DatasetError(f"pseudo-label confidences {conf_path} have shape {conf.shape}, "
                                   f"the label {path} has {lp.shape} ({self._pseudo_hint(soft=False)})")
            self._pseudo_check(pseudo_files.finite_problem(conf), conf_path, soft)
            lp[conf <= self.pseudo_labels.threshold] = IGNORE_INDEX
        return resize_label(lp, self.img_size), None
