"""Evaluate a checkpoint on the target val split: per-class IoU and mIoU.

    python -m proda.test --resume_path logs/gta2city_stage3/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl --bn_clr --student_init simclr
    python -m proda.test --n_class 16 --resume_path ... --results_json results.json --save_pred preds/

For SYNTHIA (16 classes) the 13-class mIoU that papers also report is printed as well.
With --tta norm|tent the network adapts at test time while it predicts (proda/tta.py,
docs/proda.md); the results then also hold each image's mIoU in stream order, drawn as a PNG
beside --results_json, and the seconds per image.
"""
from __future__ import annotations

import argparse
import json
import math
import logging
import os

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dacommon.device import get_device
from dacommon.files import atomic_write
from proda import evaluation, runner, tta
from proda.data import find_dataset_using_name
from proda.models.builders import build_student


def prediction_writer(folder: str, decode_segmap):
    """Callback for evaluation.evaluate that saves colour-coded predictions as <image>_pred.png."""
    os.makedirs(folder, exist_ok=True)

    def save(batch: dict, pred: torch.Tensor) -> None:
        for path, label in zip(batch["img_path"], pred.cpu().numpy()):
            stem = os.path.splitext(os.path.basename(path))[0]
            image = Image.fromarray((decode_segmap(label) * 255).astype(np.uint8))
            # atomic: a full disk or a kill never leaves a truncated or 0-byte PNG
            atomic_write(os.path.join(folder, stem + "_pred.png"), lambda f, im=image: im.save(f, format="PNG"))
    return save


def json_safe(value):
    """NaN (the IoU of a class absent from labels and predictions) becomes null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def test(opt: argparse.Namespace, logger: logging.Logger) -> dict:
    """Evaluate --resume_path on the target val split and report the IoU table."""
    runner.seed_everything(opt.seed)
    device = get_device(opt.device)
    dataset = find_dataset_using_name(opt.tgt_dataset)(opt, logger, augmentations=None, split="val")
    loader = DataLoader(dataset, batch_size=opt.bs, shuffle=False, num_workers=opt.num_workers)
    net = tta.build_tta(build_student(opt).eval(), opt.tta, lr=opt.tta_lr, steps=opt.tta_steps,
                        episodic=opt.tta_episodic, bn_stats=opt.tta_bn_stats, optim=opt.tta_optim)
    stream = tta.StreamRecord(opt.n_class)
    writer = prediction_writer(opt.save_pred, dataset.decode_segmap) if opt.save_pred else None

    def on_batch(batch: dict, pred: torch.Tensor) -> None:
        stream(batch, pred)
        if writer is not None:
            writer(batch, pred)

    score = evaluation.evaluate(net, loader, opt.n_class, device, on_batch=on_batch, desc="test")
    table, results = evaluation.iou_table(score, dataset.class_names[1:])
    results.update(checkpoint=opt.resume_path, tta=tta_settings(opt),
                   seconds_per_image=stream.seconds_per_image(), image_miou=stream.miou)
    logger.info("results of %s on %s val (test-time adaptation: %s, %.3f s per image):\n%s",
                opt.resume_path, opt.tgt_dataset, opt.tta, results["seconds_per_image"], table)
    if opt.results_json:
        text = json.dumps(json_safe(results), indent=2)
        atomic_write(opt.results_json, lambda f: f.write(text.encode()))
        if opt.tta != "none":  # the curve shows an adapting run's collapse; matplotlib costs ~3 s to load
            tta.plot_stream(stream.miou, f"{opt.tta}: per-image mIoU over the val stream",
                            os.path.splitext(opt.results_json)[0] + "_stream.png")
    return results


def tta_settings(opt: argparse.Namespace) -> dict:
    """The test-time adaptation options that shaped the results (all of them for tent)."""
    if opt.tta != "tent":
        return {"method": opt.tta}
    return {"method": "tent", "lr": opt.tta_lr, "steps": opt.tta_steps, "optim": opt.tta_optim,
            "episodic": opt.tta_episodic, "bn_stats": opt.tta_bn_stats, "batch_size": opt.bs}


def main(argv=None) -> None:
    """Command-line entry point."""
    runner.run(test, description=__doc__.splitlines()[0], argv=argv, entry="test",
               overrides=runner.INFERENCE_OPTIONS, outputs=("results_json", "save_pred"))


if __name__ == "__main__":
    main()
