"""Compute the initial class prototypes (feature centroids) that stage 1 starts from.

    python -m proda.calc_prototype --resume_path logs/gta2city_warmup/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl
    python -m proda.calc_prototype --resume_path ... --source     # source prototypes from source labels

Target prototypes average the 256-d features of each predicted class over the target training
images; source prototypes use the pixels where prediction and label agree. The file is written
beside --resume_path as prototypes_on_{dataset}_from_deeplabv2, where train.py looks for it,
with its inputs (checkpoint content hash, options) in <file>.json: a rerun with the same inputs
does nothing, one with other inputs is refused with the `rm` command to run (--restart: recompute).
"""
from __future__ import annotations

import argparse
import logging
import os

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dacommon.device import get_device
from proda import manifest, paths, runner
from proda.data import create_dataset
from proda.models.builders import build_student
from proda.models.prototypes import Prototypes
from proda.utils import atomic_save

PROTOTYPE_EPOCHS = 4  # the reference always averages over four passes of the loader


@torch.no_grad()
def batch_prototypes(net: torch.nn.Module, prototypes: Prototypes, images: torch.Tensor, labels=None):
    """Per-image class mean features of one batch (restricted to labelled pixels when labels are given)."""
    out = net(images, ssl=True)
    if labels is not None:
        labels = F.interpolate(labels.unsqueeze(1).float(), size=out["feat"].shape[2:], mode="nearest")
    return prototypes.class_means(out["feat"], out["out"], labels)


def replay_pass(prototypes: Prototypes, batches, momentum: float, desc: str) -> None:
    """A later pass over the target images from the first pass's class means, without the network.

    The passes see the same images in the same order (the inference options force noaug and
    noshuffle, and the loader's epoch is never advanced), so the network's outputs repeat bit
    for bit: only the 'mean' updates differ from pass to pass, and they are applied as before.
    """
    for vectors, ids in tqdm(batches, desc=desc):
        prototypes.update(vectors, ids, momentum, name="mean")


def calc_prototype(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Accumulate class means over the data with the 'mean' update and save them."""
    runner.seed_everything(opt.seed)
    device = get_device(opt.device)
    path = paths.prototype_file(opt, opt.src_dataset if opt.source else opt.tgt_dataset)
    if manifest.prototypes_done(opt, path):
        logger.info("prototypes in %s are up to date: nothing to do", path)
        return
    datasets = create_dataset(opt, logger)
    net = build_student(opt).eval()
    prototypes = Prototypes(opt.n_class, device)
    first_pass = []  # target batches: the (vectors, ids) of the first pass, which every later pass repeats
    for epoch in range(PROTOTYPE_EPOCHS):
        if epoch and not opt.source:
            replay_pass(prototypes, first_pass, opt.proto_momentum, f"prototypes {epoch + 1}/{PROTOTYPE_EPOCHS}")
            continue
        for target in tqdm(datasets.target_train_loader, desc=f"prototypes {epoch + 1}/{PROTOTYPE_EPOCHS}"):
            if opt.source:
                source = datasets.source_train_loader.next()
                vectors, ids = batch_prototypes(net, prototypes, source["img"].to(device), source["label"].to(device))
            else:
                vectors, ids = batch_prototypes(net, prototypes, target["img"].to(device))
                first_pass.append((vectors, ids))
            prototypes.update(vectors, ids, opt.proto_momentum, name="mean")
    record = manifest.prototype_manifest(path)
    if os.path.exists(record):  # a kill before the new record is written leaves no record, never a wrong one
        os.remove(record)
    atomic_save(prototypes.vectors.detach().cpu(), path)
    manifest.write_json(record, manifest.prototype_inputs(opt))
    seen = int((prototypes.counts > 0).sum())
    logger.info("saved %d x %d prototypes (%d classes seen) to %s", *prototypes.vectors.shape, seen, path)


def main(argv=None) -> None:
    """Command-line entry point."""
    runner.run(calc_prototype, description=__doc__.splitlines()[0], argv=argv, entry="calc_prototype",
               overrides=runner.INFERENCE_OPTIONS)


if __name__ == "__main__":
    main()
