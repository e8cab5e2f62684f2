"""Where every starting checkpoint of ProDA's stages comes from: one table, read by the errors and the docs.

Each `WeightSource` names a file a stage starts from (the reference's folder and file name), what it
is, the published mIoU where it is a released model, and where to download it: microsoft/ProDA's
README (Google Drive links, the released models), torchvision's model zoo (ImageNet ResNet-101) and
google-research/simclr's bucket (the TensorFlow SimCLRv2 checkpoint that scripts/convert_simclrv2.py
converts). The reference states no size or hash for its files; torchvision's file name carries the
first 8 hex digits of its SHA-256 (torch.hub checks them when it downloads the file).

`missing_hint(path)` is what a "not found" error adds: the matching source's download line, or
the README's list of released models for a checkpoint not in the table. Torch-free.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional

PRODA_README = "https://github.com/microsoft/ProDA#training"  # the released models, by stage
GTA_FILE = "from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
SYN_FILE = "from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl"


def drive(file_id: str) -> str:
    """A Google Drive download page, as the reference README links its files."""
    return f"https://drive.google.com/file/d/{file_id}/view"


@dataclass(frozen=True)
class WeightSource:
    """One starting checkpoint: its reference folder and file name, what it is, its URL, and a check
    the reference states (size or hash; empty where it states none)."""

    folder: str
    file: str
    what: str
    url: str
    check: str = ""

    @property
    def path(self) -> str:
        """Where the reference's commands expect the file (relative to the working directory)."""
        return os.path.join(self.folder, self.file)

    def download_line(self) -> str:
        """How to get the file, for an error message: what it is, its URL and the file name to save it as."""
        check = f"; {self.check}" if self.check else ""
        return f"download {self.what} from {self.url} as {self.file}{check}"


SOURCES: Dict[str, WeightSource] = {
    "imagenet": WeightSource(
        "<torch hub dir>/checkpoints", "resnet101-5d3b4d8f.pth", "torchvision's ImageNet ResNet-101 (V1)",
        "https://download.pytorch.org/models/resnet101-5d3b4d8f.pth", "SHA-256 starts with 5d3b4d8f"),
    "simclr": WeightSource(
        "pretrained/simclr", "r101_1x_sk0.pth", "the converted SimCLRv2 ResNet-101 (ProDA's README)",
        drive("1IHT-n-ko2DRWXNaW8OvvYktn_5VQYd2C"),
        "or convert gs://simclr-checkpoints/simclrv2/pretrained/r101_1x_sk0 with scripts/convert_simclrv2.py, "
        "docs/simclr.md"),
    "gta2city_warmup": WeightSource(
        "pretrained/gta2citylabv2_warmup", GTA_FILE, "the released GTA5 warm-up model (43.3 mIoU)",
        drive("1X7AyDtm4DC2WET-xX2b39x8aSkrD266f")),
    "gta2city_stage1": WeightSource(
        "pretrained/gta2citylabv2_stage1Denoise", GTA_FILE, "the released GTA5 stage-1 model (53.7 mIoU)",
        drive("15masr_JcYk6nj73ySiY8HJw__pQEyBfV")),
    "gta2city_stage2": WeightSource(
        "pretrained/gta2citylabv2_stage2", GTA_FILE, "the released GTA5 stage-2 model (56.9 mIoU)",
        drive("1Putk_jWqKpYwh1liTZyYxREnqBQhGNDo")),
    "gta2city_stage3": WeightSource(
        "pretrained/gta2citylabv2_stage3", GTA_FILE, "the released GTA5 stage-3 model (57.5 mIoU)",
        drive("1MTtbLKtqhNI1Ec6GGfBLnqQP2u9igKWn")),
    "syn2city_warmup": WeightSource(
        "pretrained/syn2citylabv2_warmup", SYN_FILE, "the released SYNTHIA warm-up model (41.4 mIoU, 16 classes)",
        drive("1RpjnA8ncHqR90LeWEHE4p9wSI251KLW_")),
    "syn2city_stage1": WeightSource(
        "pretrained/syn2citylabv2_stage1Denoise", SYN_FILE,
        "the released SYNTHIA stage-1 model (51.9 mIoU, 16 classes)", drive("180buGBRRnj5eNa0MW-GuKH6n5zS-eQSA")),
    "syn2city_stage2": WeightSource(  # the README says ./pretrained/stn2citylabv2_stage2, a typo of this folder
        "pretrained/syn2citylabv2_stage2", SYN_FILE, "the released SYNTHIA stage-2 model (54.6 mIoU, 16 classes)",
        drive("1ERemuuQ0LZ7CphXMNyHAPBuVIkV2RCQH")),
    "syn2city_stage3": WeightSource(
        "pretrained/syn2citylabv2_stage3", SYN_FILE,
        "the released SYNTHIA stage-3 model (55.5 mIoU, 16 classes; 62.0 on 13)", drive("1oiGPe6c4WfYi-5pYaejOa6L4WA98Ds63")),
}


def source_of(path: str) -> Optional[WeightSource]:
    """The table's entry for a checkpoint path: same file name and same experiment folder name (so
    logs/<name>/ and pretrained/<name>/ both match), or the same file name alone for the weight
    files a stage reads from anywhere (ImageNet, SimCLR); None for any other file."""
    name, folder = os.path.basename(path), os.path.basename(os.path.dirname(os.path.normpath(path)))
    for source in SOURCES.values():
        if name == source.file and (folder == os.path.basename(source.folder) or not source.file.endswith(".pkl")):
            return source
    return None


def missing_hint(path: str, fallback: str = "a ProDA checkpoint") -> str:
    """What to do about a missing checkpoint: its source's download line, else where the released models are."""
    source = source_of(path)
    if source is not None:
        return source.download_line()
    return f"{fallback}: train it, or download a released model listed at {PRODA_README}"


def released(prefix: str, stage: str) -> WeightSource:
    """The released model of a dataset pair's stage: released('gta2city', 'stage1')."""
    return SOURCES[f"{prefix}_{stage}"]
