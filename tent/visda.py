"""VisDA-C (VisDA-2017 classification): the tent paper's synthetic-to-real shift (Section 4.2).

`CORRUPTION.DATASET visda`: a ResNet-50 (pycls's, pretrained on ImageNet) fine-tuned on the 12-class
synthetic renderings of VisDA-C's `train` split is adapted on its real `validation` split (55,388
images, the paper's "validation error"); the one "corruption" is that clean split (CORRUPTION.TYPE
clean, the severity unused).

Files: the challenge's own layout, as SHOT and most source-free code keep it, under
`DATA_DIR/VISDA-C/`: `train/` and `validation/`, each holding `image_list.txt` (one
`<class>/<file> <label>` line per image, labels 0-11 in CLASSES order) and the class folders.
Images are read on demand (55,388 do not fit in memory as one tensor), resized as pycls tests
(shorter side 256, centre crop 224) and handed on as RGB in [0, 1]: `PyclsResNet` normalises.

Source model: MODEL.ARCH pycls_R50 reads `CKPT_DIR/visda/pycls_R50.pt`, a pycls checkpoint
({"model_state": ...}, pycls's keys) of `PyclsResNet(50, num_classes=12)`, loaded weights-only;
`python -m tent.train_source --dataset visda` writes it (this repository's recipe: SHOT's).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .errors import ConfigError, CorruptFileError, MissingResourceError

DATASET = "visda"
TYPES = ("clean",)  # the one "corruption": the real validation split
CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant",
           "skateboard", "train", "truck")
FOLDER = "VISDA-C"
SPLITS = {"train": "http://csr.bu.edu/ftp/visda17/clf/train.tar",
          "validation": "http://csr.bu.edu/ftp/visda17/clf/validation.tar"}
VALIDATION_SIZE = 55388
ARCH = "pycls_R50"  # the tent paper's ResNet-50, in pycls's parameter names (tent/pycls_resnet.py)
RESIZE, CROP = 256, 224  # pycls's TEST.IM_SIZE and TRAIN.IM_SIZE


def list_file(data_dir: str, split: str = "validation") -> Path:
    """DATA_DIR/VISDA-C/<split>/image_list.txt."""
    return Path(data_dir) / FOLDER / split / "image_list.txt"


def read_list(path: Path) -> Tuple[List[str], List[int]]:
    """Relative image paths and labels of an image_list.txt; CorruptFileError naming a bad line."""
    names, labels = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, label = line.strip().rpartition(" ")
        if not name or not label.isdigit() or int(label) >= len(CLASSES):
            raise CorruptFileError(f"{path} line {number} is not '<class>/<file> <label 0-11>': {line.strip()[:80]!r}")
        names.append(name)
        labels.append(int(label))
    if not names:
        raise CorruptFileError(f"{path} lists no images; extract the split again")
    return names, labels


def eval_transform(crop: int = CROP):
    """pycls's test preprocessing: shorter side to 256, centre crop 224 (both scaled with `crop`), RGB in [0, 1]."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(crop * RESIZE // CROP), transforms.CenterCrop(crop),
                               transforms.ToTensor()])


def train_transform(crop: int = CROP):
    """SHOT's source-training augmentation: resize to 256 x 256, random 224 crop, horizontal flip; RGB in [0, 1]."""
    from torchvision import transforms

    size = crop * RESIZE // CROP
    return transforms.Compose([transforms.Resize((size, size)), transforms.RandomCrop(crop),
                               transforms.RandomHorizontalFlip(), transforms.ToTensor()])


class VisdaList:
    """The images of an image_list.txt (optionally a subset), read on demand; `targets` as an ImageFolder's."""

    def __init__(self, root: Path, names: Sequence[str], labels: Sequence[int], transform=None) -> None:
        self.root, self.names, self.targets = Path(root), list(names), list(labels)
        self.transform = transform if transform is not None else eval_transform()
        from torchvision.datasets.folder import default_loader  # torchvision's RGB PIL reader

        self.loader = default_loader

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.transform(self.loader(str(self.root / self.names[index]))), self.targets[index]


def load_split(data_dir: str, split: str = "validation", n_examples: Optional[int] = None,
               seed: int = 0) -> VisdaList:
    """A VisDA-C split: every listed image, or a fixed random n_examples of them (in list order).

    Every listed file is checked first, so that a partly extracted split fails here in one line
    rather than inside a DataLoader worker.
    """
    path = list_file(data_dir, split)
    if not path.is_file():
        raise MissingResourceError(f"VisDA-C list {path} is missing; download {SPLITS[split]} and extract it "
                                   f"into {Path(data_dir) / FOLDER}")
    names, labels = read_list(path)
    if n_examples is not None and n_examples < len(names):
        keep = np.sort(np.random.RandomState(seed).permutation(len(names))[:n_examples])
        names, labels = [names[i] for i in keep], [labels[i] for i in keep]
    missing = [name for name in names if not (path.parent / name).is_file()]
    if missing:
        raise MissingResourceError(f"{len(missing)} of the {len(names)} images listed in {path} are missing "
                                   f"(first: {path.parent / missing[0]}); extract {SPLITS[split]} into "
                                   f"{Path(data_dir) / FOLDER} again")
    return VisdaList(path.parent, names, labels)


def load_target(n_examples: int, data_dir: str = "./data", seed: int = 0, **unused: object) -> VisdaList:
    """The validation split (the real target domain) for the stream, like an ImageNet-C folder."""
    return load_split(data_dir, "validation", n_examples, seed)


def checkpoint_path(ckpt_dir: str) -> Path:
    """CKPT_DIR/visda/pycls_R50.pt: the ResNet-50 fine-tuned on VisDA-C's synthetic train split."""
    return Path(ckpt_dir) / DATASET / f"{ARCH}.pt"


def load_source_model(arch: str, ckpt_dir: str, trust_checkpoint: bool = False):
    """The VisDA-C source model: PyclsResNet(50, 12) from its pycls checkpoint (weights-only, strict)."""
    from .pycls_resnet import R50_URL, load_pycls_resnet

    if arch != ARCH:
        raise ConfigError(f"config key MODEL.ARCH must be {ARCH} for CORRUPTION.DATASET {DATASET}, got {arch!r}")
    path = checkpoint_path(ckpt_dir)
    if not path.is_file():
        raise MissingResourceError(f"VisDA-C source model {path} is missing: fine-tune pycls's ImageNet ResNet-50 "
                                   f"({R50_URL}) on VisDA-C's train split with `python -m tent.train_source "
                                   f"--dataset visda --ckpt_dir {ckpt_dir}`")
    return load_pycls_resnet(path, 50, len(CLASSES), trust_checkpoint).eval()
