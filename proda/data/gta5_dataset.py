"""GTA5, a synthetic source domain: images/00001.png, labels/00001.png (Cityscapes label
ids) and split.mat, resized to 1914x1052 (reference) or --src_img_size; always 19 classes.

As the reference, the loader uses the split 'all': the ids 1..N where N is the number of
train + val + test ids in split.mat.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import scipy.io

from proda.data.base_dataset import BaseDataset, DatasetError, read_label_png, require_path, resize_label
from proda.data.cityscapes_dataset import CLASS_NAMES, VALID_CLASSES

IMG_SIZE = (1914, 1052)  # (W, H) of the reference
SPLIT_KEYS = ("trainIds", "valIds", "testIds")
DOWNLOAD_HINT = ("download the images, the labels and split.mat from "
                 "https://download.visinf.tu-darmstadt.de/data/from_games/ into --src_rootpath")


def count_split_ids(split_path: str) -> int:
    """Number of train + val + test ids listed in GTA5's split.mat."""
    try:
        splits = scipy.io.loadmat(split_path)
    except Exception as err:  # a truncated download is the usual cause
        raise DatasetError(f"GTA5 split file {split_path} is unreadable: {err} ({DOWNLOAD_HINT})") from None
    missing = [k for k in SPLIT_KEYS if k not in splits]
    if missing:
        raise DatasetError(f"GTA5 split file {split_path} lacks {', '.join(missing)} ({DOWNLOAD_HINT})")
    return sum(np.asarray(splits[k]).size for k in SPLIT_KEYS)


class GTA5_loader(BaseDataset):
    """GTA5 images and labels mapped to the 19 Cityscapes train ids."""

    download_hint = DOWNLOAD_HINT
    CLASS_PIXEL_COUNTS = (16139327127, 4158369631, 8495419275, 927064742, 318109335, 532432540,
                          67453231, 40526481, 3818867486, 1081467674, 6800402117, 182228033,
                          15360044, 1265024472, 567736474, 184854135, 32542442, 15832619, 2721193)

    def __init__(self, opt: Any, logger: Optional[logging.Logger], augmentations: Any = None) -> None:
        super().__init__(opt, logger, augmentations, VALID_CLASSES[19], CLASS_NAMES[19],
                         opt.src_img_size or IMG_SIZE)
        self.root = opt.src_rootpath
        self.split = "all"
        require_path(self.root, "GTA5 root", DOWNLOAD_HINT, is_dir=True)
        self.image_base_path = require_path(os.path.join(self.root, "images"), "GTA5 image folder",
                                            DOWNLOAD_HINT, is_dir=True)
        self.label_base_path = require_path(os.path.join(self.root, "labels"), "GTA5 label folder",
                                            DOWNLOAD_HINT, is_dir=True)
        n = count_split_ids(require_path(os.path.join(self.root, "split.mat"), "GTA5 split file", DOWNLOAD_HINT))
        self.ids: List[str] = [os.path.join(self.label_base_path, str(i + 1).zfill(5) + ".png") for i in range(n)]
        if not self.ids:
            raise DatasetError(f"No files for style=[{self.split}] found in {self.image_base_path} ({DOWNLOAD_HINT})")
        self.log_found(len(self.ids), self.split)

    def __len__(self) -> int:
        """Number of ids in split.mat."""
        return len(self.ids)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """Item dict: img, label, img_path [, img_strong, params, weak_params]."""
        lbl_path = self.ids[index]
        img_path = os.path.join(self.image_base_path, os.path.basename(lbl_path))
        lbl = read_label_png(lbl_path, "GTA5 label", DOWNLOAD_HINT)
        img = self.load_image(img_path)
        lbl = self.encode_segmap(resize_label(lbl, self.img_size))
        return self.make_item(img, lbl, img_path)
