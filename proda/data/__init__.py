"""ProDA data: the Cityscapes, GTA5 and SYNTHIA loaders, joint augmentations that record what
they drew, RandAugment for the strong view, the replays of those records on label maps
(replay.py), and `create_dataset`, which builds the source and target loaders of one training run.

    datasets = create_dataset(opt, logger)
    for target in datasets.target_train_loader:       # one epoch over the target domain
        source = datasets.source_train_loader.next()  # the source never runs out
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.utils.data

from proda.data.DataProvider import DataProvider
from proda.data.augmentations import Compose, RandomCrop, RandomHorizontallyFlip, RandomSized
from proda.data.base_dataset import IGNORE_INDEX, BaseDataset, DatasetError
from proda.data.cityscapes_dataset import Cityscapes_loader
from proda.data.gta5_dataset import GTA5_loader
from proda.data.randaugment import RandAugmentMC, affine_sample
from proda.data.sampling import SOURCE_STREAM, TARGET_STREAM, SeededItems, seeded_loader_kwargs
from proda.data.synthia_dataset import Synthia_loader
from proda.files import OptionError
from proda.pseudo_labels import PseudoLabels, saved_pseudo_labels

__all__ = ["create_dataset", "find_dataset_using_name", "saved_pseudo_labels", "PseudoLabels", "DATASETS",
           "get_composed_augmentations", "worker_init_fn",
           "CustomDatasetDataLoader", "BaseDataset", "DatasetError", "IGNORE_INDEX", "Cityscapes_loader",
           "GTA5_loader", "Synthia_loader", "DataProvider", "Compose", "RandomSized", "RandomCrop",
           "RandomHorizontallyFlip", "RandAugmentMC", "affine_sample"]


# --src_dataset / --tgt_dataset name -> loader class
DATASETS: Dict[str, type] = {"cityscapes": Cityscapes_loader, "gta5": GTA5_loader, "synthia": Synthia_loader}


def find_dataset_using_name(name: str) -> type:
    """The loader class of a dataset name (any case), as the reference's lookup of '<name>_loader'."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise NotImplementedError(f"no dataset {name!r}: known are {', '.join(DATASETS)}") from None


def get_composed_augmentations(opt: Any) -> Compose:
    """The weak view: random resize, random crop, random horizontal flip."""
    return Compose([RandomSized(opt.resize), RandomCrop(opt.rcrop), RandomHorizontallyFlip(opt.hflip)])


def worker_init_fn(worker_id: int) -> None:
    """Seed `random` and NumPy from the worker's torch seed: augmentations differ per worker
    and per epoch, yet repeat under the same torch.manual_seed."""
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)


def loader_kwargs(opt: Any, dataset: torch.utils.data.Dataset, shuffle: bool, drop_last: bool) -> Dict[str, Any]:
    """DataLoader arguments of the validation loader (the training loaders: resumable_loader_kwargs)."""
    return dict(batch_size=opt.bs, shuffle=shuffle, num_workers=int(opt.num_workers), drop_last=drop_last,
                pin_memory=torch.cuda.is_available(), worker_init_fn=worker_init_fn)


def resumable_loader_kwargs(opt: Any, dataset: torch.utils.data.Dataset, shuffle: bool, drop_last: bool,
                            stream: int) -> Dict[str, Any]:
    """Training DataLoader arguments for SeededItems(dataset): order and augmentations follow
    from --seed, the epoch and the position alone (see proda/data/sampling.py), so an interrupted run
    resumes bit for bit with any --num_workers; a distributed run shards as DistributedSampler."""
    return dict(batch_size=opt.bs, num_workers=int(opt.num_workers), pin_memory=torch.cuda.is_available(),
                **seeded_loader_kwargs(dataset, opt.seed, stream, shuffle, drop_last))


def check_batchable(dataset: torch.utils.data.Dataset, batch_size: int, drop_last: bool) -> None:
    """With drop_last, a dataset smaller than one batch would yield nothing: say so."""
    if drop_last and len(dataset) < batch_size:
        raise ValueError(f"{type(dataset).__name__} has {len(dataset)} images, fewer than the batch size "
                         f"{batch_size}: lower --bs or add images")


class CustomDatasetDataLoader:
    """The datasets and loaders of a run: source_train(_loader), target_train(_loader), target_valid(_loader)."""

    def __init__(self, opt: Any, logger: Optional[logging.Logger]) -> None:
        self.opt = opt
        self.logger = logger or logging.getLogger(__name__)
        if opt.src_dataset == "gta5" and opt.n_class != 19:  # the model would meet label ids >= n_class
            raise OptionError(f"--n_class {opt.n_class} does not fit --src_dataset gta5: GTA5 labels are "
                              "19-class only (use --n_class 19)")

        source_cls = find_dataset_using_name(opt.src_dataset)
        self.source_train = source_cls(opt, logger, augmentations=None if opt.noaug else get_composed_augmentations(opt))
        self._created(self.source_train, "source")
        target_cls = find_dataset_using_name(opt.tgt_dataset)
        self.target_train = target_cls(opt, logger, augmentations=None if opt.noaug else get_composed_augmentations(opt),
                                       split="train", pseudo_labels=saved_pseudo_labels(opt))
        self._created(self.target_train, "target")

        check_batchable(self.source_train, opt.bs, drop_last=True)
        check_batchable(self.target_train, opt.bs, drop_last=not opt.no_droplast)
        self.source_train_loader = DataProvider(
            SeededItems(self.source_train),
            **resumable_loader_kwargs(opt, self.source_train, not opt.noshuffle, True, SOURCE_STREAM))
        self.target_train_loader = torch.utils.data.DataLoader(
            SeededItems(self.target_train),
            **resumable_loader_kwargs(opt, self.target_train, not opt.noshuffle, not opt.no_droplast, TARGET_STREAM))

        self.source_valid = None         # compatibility: the reference's slots for a source val split,
        self.source_valid_loader = None  # always None there too; nothing in proda/ reads them
        self.target_valid = target_cls(opt, logger, augmentations=None, split="val")
        self.logger.info("%s target_valid dataset has been created", type(self.target_valid).__name__)
        self.target_valid_loader = torch.utils.data.DataLoader(
            self.target_valid, **loader_kwargs(opt, self.target_valid, False, False))

    def _created(self, dataset: BaseDataset, role: str) -> None:
        """Log the dataset and read its first item, as the reference does (fails early on bad data)."""
        self.logger.info("%s %s dataset has been created", type(dataset).__name__, role)
        dataset[0]

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Give the target sampler the epoch (each epoch shuffles anew) and, on resume, the
        number of batches of it already trained on."""
        self.target_train_loader.sampler.set_epoch(epoch, skip_batches * self.opt.bs)

    def load_data(self) -> "CustomDatasetDataLoader":
        """The reference's accessor: the object itself."""
        return self


def create_dataset(opt: Any, logger: Optional[logging.Logger]) -> CustomDatasetDataLoader:
    """Build the source / target datasets and loaders of a run from the options."""
    return CustomDatasetDataLoader(opt, logger).load_data()
