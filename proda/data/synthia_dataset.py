"""SYNTHIA-RAND-CITYSCAPES, a synthetic source domain: RGB/*.png and GT/LABELS/*.png, resized
to 1280x760 (reference) or --src_img_size; 19, 16 or 13 classes.

The label PNGs are 16-bit with several channels; the class id is the first (red) channel.
The reference reads them through imageio's FreeImage plugin, which cannot be installed
offline; Pillow reduces 16-bit colour PNGs to 8 bits, so OpenCV reads them here.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np

from proda.data.base_dataset import BaseDataset, DatasetError, require_path, resize_label

IMG_SIZE = (1280, 760)  # (W, H) of the reference

VALID_CLASSES = {
    19: [3, 4, 2, 21, 5, 7, 15, 9, 6, 16, 1, 10, 17, 8, 18, 19, 20, 12, 11],
    16: [3, 4, 2, 21, 5, 7, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11],
    13: [3, 4, 2, 15, 9, 6, 1, 10, 17, 8, 19, 12, 11],
}
CLASS_NAMES = {
    19: ["unlabelled", "Road", "Sidewalk", "Building", "Wall", "Fence", "Pole", "Traffic_light",
         "Traffic_sign", "Vegetation", "Terrain", "sky", "Pedestrian", "Rider", "Car", "Truck", "Bus",
         "Train", "Motorcycle", "Bicycle"],
    16: ["unlabelled", "Road", "Sidewalk", "Building", "Wall", "Fence", "Pole", "Traffic_light",
         "Traffic_sign", "Vegetation", "sky", "Pedestrian", "Rider", "Car", "Bus", "Motorcycle", "Bicycle"],
    13: ["unlabelled", "Road", "Sidewalk", "Building", "Traffic_light", "Traffic_sign", "Vegetation",
         "sky", "Pedestrian", "Rider", "Car", "Bus", "Motorcycle", "Bicycle"],
}
DOWNLOAD_HINT = ("download SYNTHIA-RAND-CITYSCAPES from https://synthia-dataset.net/downloads/ "
                 "and unzip it into --src_rootpath")


def read_class_channel(path: str) -> np.ndarray:
    """Class ids of a SYNTHIA label PNG: channel 0 (red) of a 16-bit multi-channel image."""
    import cv2  # imported here: only SYNTHIA needs OpenCV

    lbl = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DatasetError(f"SYNTHIA label {path} is not a readable PNG ({DOWNLOAD_HINT})")
    if lbl.ndim == 2:
        return lbl
    # OpenCV orders colour channels BGR(A): red is index 2; grey + alpha keeps grey at 0
    return np.ascontiguousarray(lbl[:, :, 2] if lbl.shape[2] >= 3 else lbl[:, :, 0])


class Synthia_loader(BaseDataset):
    """SYNTHIA-RAND-CITYSCAPES images and labels mapped to 19 / 16 / 13 Cityscapes classes."""

    download_hint = DOWNLOAD_HINT

    def __init__(self, opt: Any, logger: Optional[logging.Logger], augmentations: Any = None) -> None:
        n_class = opt.n_class
        super().__init__(opt, logger, augmentations, VALID_CLASSES[n_class], CLASS_NAMES[n_class],
                         opt.src_img_size or IMG_SIZE)
        self.root = opt.src_rootpath
        require_path(self.root, "SYNTHIA root", DOWNLOAD_HINT, is_dir=True)
        self.image_base_path = require_path(os.path.join(self.root, "RGB"), "SYNTHIA image folder",
                                            DOWNLOAD_HINT, is_dir=True)
        self.label_base_path = require_path(os.path.join(self.root, "GT", "LABELS"), "SYNTHIA label folder",
                                            DOWNLOAD_HINT, is_dir=True)
        names = sorted(f for f in os.listdir(self.image_base_path) if f.endswith(".png"))
        self.ids: List[str] = [os.path.join(self.label_base_path, name) for name in names]
        if not self.ids:
            raise DatasetError(f"No files found in {self.image_base_path} ({DOWNLOAD_HINT})")
        self.log_found(len(self.ids), "SYNTHIA")

    def __len__(self) -> int:
        """Number of RGB images."""
        return len(self.ids)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        """Item dict: img, label, img_path [, img_strong, params, weak_params]."""
        lbl_path = require_path(self.ids[index], "SYNTHIA label", DOWNLOAD_HINT)
        img_path = os.path.join(self.image_base_path, os.path.basename(lbl_path))
        img = self.load_image(img_path)
        lbl = self.encode_segmap(resize_label(read_class_channel(lbl_path), self.img_size))
        return self.make_item(img, lbl, img_path)
