"""Write pseudo labels for the target training images with a trained model.

    python -m proda.generate_pseudo_label --name gta2city_warmup_soft --soft --resume_path WARMUP.pkl
    python -m proda.generate_pseudo_label --name gta2city_stage1 --flip --resume_path STAGE1_BEST.pkl

--soft (stage 1 input): the class probabilities of each image at the network's output
resolution, <image>.npy (C x h x w, float32). Otherwise (stage 2/3 input): hard labels at image
resolution, <image>.png, their confidences <image>_conf.npy (float16) and a colour image
<image>_color.png; --flip averages the probabilities with those of the mirrored image.
Files go to <save_path>/<name>/. Images whose files all exist and pass a header check (complete,
of the expected shape: proda/data/pseudo_files.py) are skipped, so an interrupted run continues
where it stopped and relabels any damaged file; a `.complete` marker is written when every image
is done. The
folder's `.manifest.json` records the checkpoint (content hash) and the options that change
labels; a rerun with other inputs is refused with the `rm` command to run (--restart: relabel).
"""
from __future__ import annotations

import argparse
import io
import logging
import os
from collections import Counter
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from dacommon.device import get_device
from dacommon.files import atomic_write
from proda import manifest, runner
from proda.data import find_dataset_using_name, pseudo_files
from proda.models.builders import build_student
from proda.utils import fliplr

COMPLETE_MARKER = ".complete"


def output_files(out_dir: str, img_path: str, soft: bool) -> List[str]:
    """The files one image produces."""
    stem = os.path.splitext(os.path.basename(img_path))[0]
    if soft:
        return [os.path.join(out_dir, stem + ".npy")]
    return [os.path.join(out_dir, stem + suffix) for suffix in (".png", "_conf.npy", "_color.png")]


def write_atomic(path: str, data: bytes) -> None:
    """Write bytes atomically: no half-written label survives a crash."""
    atomic_write(path, lambda f: f.write(data))


def npy_bytes(array: np.ndarray) -> bytes:
    """An array serialised as a .npy file."""
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 array (H x W or H x W x 3) encoded as PNG."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@torch.no_grad()
def probabilities(net: torch.nn.Module, images: torch.Tensor, flip: bool) -> torch.Tensor:
    """Softmax at image resolution, averaged with the mirrored image's when `flip` is set."""
    def upsampled_softmax(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(F.softmax(net(x)["out"], dim=1), size=images.shape[2:],
                             mode="bilinear", align_corners=True)

    prob = upsampled_softmax(images)
    if flip:
        prob = (prob + fliplr(upsampled_softmax(fliplr(images)))) / 2
    return prob


@torch.no_grad()
def save_soft(net: torch.nn.Module, batch: dict, files: List[List[str]], device: torch.device) -> None:
    """Write each image's class probabilities at output resolution."""
    prob = F.softmax(net(batch["img"].to(device))["out"], dim=1).cpu().numpy()
    for k, (path,) in enumerate(files):
        write_atomic(path, npy_bytes(prob[k]))


@torch.no_grad()
def save_hard(net: torch.nn.Module, batch: dict, files: List[List[str]], device: torch.device,
              flip: bool, decode_segmap) -> None:
    """Write each image's hard label, confidence and colour visualisation."""
    confidence, label = probabilities(net, batch["img"].to(device), flip).max(1)
    confidence = confidence.cpu().numpy().astype(np.float16)
    label = label.cpu().numpy().astype(np.uint8)
    for k, (png, conf, color) in enumerate(files):
        write_atomic(png, png_bytes(label[k]))
        write_atomic(conf, npy_bytes(confidence[k]))
        write_atomic(color, png_bytes((decode_segmap(label[k]) * 255).astype(np.uint8)))


def remove_file(path: str) -> None:
    """Delete `path` if it exists."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def kept_file_problem(path: str, kind: str, size: Tuple[int, int], n_class: int) -> Optional[str]:
    """Why an existing output file cannot be kept (None: complete and of the expected shape).

    Header checks only (pseudo_files): a cut .npy does not map, a cut PNG fails its CRCs; `size`
    is the images' (W, H), `kind` the file's role: soft | label | conf | color.
    """
    w, h = size
    try:
        if kind in ("soft", "conf"):
            shape, dtype = pseudo_files.npy_header(path)
            if kind == "soft":
                return pseudo_files.soft_problem(shape, dtype, n_class)
            return None if (shape, dtype) == ((h, w), np.float16) else f"shape {shape} {dtype}, not {(h, w)} float16"
        found = pseudo_files.png_header(path)
        wanted = ((w, h), "L" if kind == "label" else "RGB")
        return None if found == wanted else f"size and mode {found}, not {wanted}"
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        return " ".join(str(err).split()) or type(err).__name__


def unfinished(dataset, out_dir: str, opt: argparse.Namespace, logger: logging.Logger) -> List[int]:
    """Indices of the images to label: files missing, or present but cut or of the wrong shape
    (they are rewritten). Soft files must also share one shape (the most common one is kept)."""
    kinds = ["soft"] if opt.soft else ["label", "conf", "color"]
    todo, soft_shapes = [], {}
    for i, img_path in enumerate(dataset.files):
        files = output_files(out_dir, img_path, opt.soft)
        if not all(os.path.isfile(f) for f in files):
            todo.append(i)
            continue
        problems = [(f, why) for f, kind in zip(files, kinds)
                    if (why := kept_file_problem(f, kind, dataset.img_size, opt.n_class))]
        if problems:
            logger.warning("relabelling %s: %s is damaged (%s)", img_path, *problems[0])
            todo.append(i)
        elif opt.soft:
            soft_shapes[i] = pseudo_files.npy_header(files[0])[0]
    if soft_shapes:  # a batch stacks soft labels: a file of another shape is relabelled too
        common = Counter(soft_shapes.values()).most_common(1)[0][0]
        todo += [i for i, shape in soft_shapes.items() if shape != common]
    return sorted(todo)


def generate(opt: argparse.Namespace, logger: logging.Logger) -> None:
    """Label every target training image that has no complete output yet."""
    runner.seed_everything(opt.seed)
    device = get_device(opt.device)
    out_dir = os.path.join(opt.save_path, opt.name)
    os.makedirs(out_dir, exist_ok=True)
    manifest.prepare_pseudo_folder(opt, out_dir)  # refuses a folder of other inputs before any work
    dataset = find_dataset_using_name(opt.tgt_dataset)(opt, logger, augmentations=None, split="train")
    todo = unfinished(dataset, out_dir, opt, logger)
    logger.info("%d of %d images already labelled in %s; labelling %d", len(dataset) - len(todo),
                len(dataset), out_dir, len(todo))
    if todo:
        remove_file(os.path.join(out_dir, COMPLETE_MARKER))  # complete again only once every file is
        net = build_student(opt).eval()
        loader = DataLoader(Subset(dataset, todo), batch_size=opt.bs, shuffle=False,
                            num_workers=opt.num_workers, drop_last=False)
        for batch in tqdm(loader, desc="pseudo labels"):
            files = [output_files(out_dir, path, opt.soft) for path in batch["img_path"]]
            if opt.soft:
                save_soft(net, batch, files, device)
            else:
                save_hard(net, batch, files, device, opt.flip, dataset.decode_segmap)
    write_atomic(os.path.join(out_dir, COMPLETE_MARKER), b"")
    logger.info("pseudo labels complete in %s", out_dir)


def main(argv=None) -> None:
    """Command-line entry point."""
    runner.run(generate, description=__doc__.splitlines()[0], argv=argv, entry="generate_pseudo_label",
               overrides=runner.INFERENCE_OPTIONS, outputs=("save_path",))


if __name__ == "__main__":
    main()
