"""Train the ResNet26 source model on a clean source training set, with the recipe of Sun et al.'s TTT.

    python -m tent.train_source --dataset cifar10|cifar100|svhn [--data_dir ./data] [--ckpt_dir ./ckpt]

The tent paper adapts a ResNet-26 (R-26) trained on the source data but ships no checkpoint; the
defaults below are the recipe of TTT's code (yueatsprograms/ttt_cifar_release: main.py's defaults,
which script_baseline.sh runs for its batch-norm model): SGD with momentum 0.9 and weight decay
5e-4 on every parameter, learning rate 0.1 divided by 10 after epochs 50 and 65, 75 epochs, batch
128, cross-entropy, random 32 x 32 crops of the 4-pixel zero-padded image and horizontal flips. TTT
trains on CIFAR-10 only; CIFAR-100 and SVHN get the same recipe, except that SVHN's digits are not
flipped (a mirrored digit is another glyph).

The data are torchvision's datasets under --data_dir (CIFAR10 / CIFAR100: cifar-10-batches-py /
cifar-100-python, SVHN: train_32x32.mat and test_32x32.mat), never downloaded here. The checkpoint
(tent/resnet26.py's checkpoint_path under --ckpt_dir) is written atomically with what produced it:
the recipe and the clean test accuracy. Errors a user can fix end in one line and a non-zero exit.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from dacommon.device import get_device
from dacommon.files import atomic_write

from . import errors
from .errors import CorruptFileError, MissingResourceError
from .models import clean_accuracy
from .resnet26 import ARCH, NUM_CLASSES, ResNet26, checkpoint_path

logger = logging.getLogger(__name__)

DATASETS = tuple(NUM_CLASSES)  # cifar10, cifar100, svhn
AUGMENTATIONS = ("crop_flip", "crop", "none")
# where torchvision's dataset classes read each source set under --data_dir, and where it comes from
FILES = {"cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
         "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
         "svhn": ("train_32x32.mat and test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/")}
TORCHVISION_CLASS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN"}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line: the source dataset, folders, and TTT's recipe as defaults."""
    p = argparse.ArgumentParser(prog="python -m tent.train_source", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=DATASETS, help="source training set")
    p.add_argument("--data_dir", default="./data", help="folder holding torchvision's dataset files")
    p.add_argument("--ckpt_dir", default="./ckpt", help="the checkpoint goes to <ckpt_dir>/<dataset>/.../ResNet26.pt")
    p.add_argument("--epochs", type=int, default=75, help="TTT: 75")
    p.add_argument("--milestones", type=int, nargs="*", default=[50, 65],
                   help="epochs after which the learning rate is divided by 10 (TTT: 50 65)")
    p.add_argument("--lr", type=float, default=0.1, help="TTT: 0.1")
    p.add_argument("--momentum", type=float, default=0.9, help="TTT: 0.9")
    p.add_argument("--weight_decay", type=float, default=5e-4, help="TTT: 5e-4")
    p.add_argument("--batch_size", type=int, default=128, help="TTT: 128")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="crop_flip (TTT's, the CIFAR default), crop (the SVHN default), none")
    p.add_argument("--num_train", type=int, default=-1, help="train on a seeded random subset of this size (-1: all)")
    p.add_argument("--num_test", type=int, default=-1, help="measure the clean accuracy on the first N test images")
    p.add_argument("--seed", type=int, default=0, help="initialisation, subset and batch order")
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    args = p.parse_args(argv)
    check_args(p, args)
    if args.augment is None:
        args.augment = "crop" if args.dataset == "svhn" else "crop_flip"
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible values as argparse does, but in one line: `<prog>: error: <reason>`, exit status 2."""
    problem = value_problem(args)
    if problem:
        print(f"{p.prog}: error: {problem}", file=sys.stderr)
        sys.exit(2)


def value_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the numbers of the command line, or None."""
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            return f"--{name} must be >= 1, got {getattr(args, name)}"
    for name in ("num_train", "num_test"):
        if getattr(args, name) < 1 and getattr(args, name) != -1:
            return f"--{name} must be >= 1, or -1 for all, got {getattr(args, name)}"
    for name in ("lr", "momentum", "weight_decay"):
        if not 0 <= getattr(args, name) < float("inf"):
            return f"--{name} must be a finite number >= 0, got {getattr(args, name)}"
    if args.workers < 0 or not 0 <= args.seed < 2 ** 32:
        return f"--workers must be >= 0 and --seed in [0, 2**32), got {args.workers} and {args.seed}"
    if any(m < 1 for m in args.milestones) or sorted(args.milestones) != list(args.milestones):
        return f"--milestones must be increasing epochs >= 1, got {args.milestones}"
    try:
        device = get_device(args.device)
    except RuntimeError:
        return f"--device {args.device} is not a torch device"
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"--device {args.device}: CUDA is not available here (use --device cpu or auto)"
    return None


def transforms_for(augment: str, train: bool) -> Any:
    """PIL image -> [0, 1] tensor, with TTT's augmentation on training images (ResNet26 normalises itself)."""
    from torchvision import transforms as T

    steps: List[Any] = []
    if train and augment in ("crop", "crop_flip"):
        steps.append(T.RandomCrop(32, padding=4))
    if train and augment == "crop_flip":
        steps.append(T.RandomHorizontalFlip())
    return T.Compose(steps + [T.ToTensor()])


def torchvision_dataset(dataset: str, data_dir: str, train: bool, augment: str) -> Dataset:
    """One split of the source set through torchvision (download=False); one line if it is missing or damaged."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION_CLASS[dataset])
    split = {"split": "train" if train else "test"} if dataset == "svhn" else {"train": train}
    try:
        return cls(data_dir, download=False, transform=transforms_for(augment, train), **split)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise missing_or_corrupt(dataset, data_dir, e) from None


def missing_or_corrupt(dataset: str, data_dir: str, error: BaseException) -> Exception:
    """The one-line error for a source set torchvision refused: missing files, or files failing its checksums."""
    files, url = FILES[dataset]
    names = [f.strip() for f in files.split(" and ")]
    fetch = (f"download it with torchvision (torchvision.datasets.{TORCHVISION_CLASS[dataset]}('{data_dir}', "
             f"download=True{', split=...' if dataset == 'svhn' else ''})) or from {url}")
    if not all((Path(data_dir) / name).exists() for name in names):
        return MissingResourceError(f"{dataset} not found: {files} must be under {data_dir}; {fetch}")
    return CorruptFileError(f"{dataset} under {data_dir} ({files}) is incomplete or corrupt "
                            f"(torchvision: {errors.one_line(error)}); {fetch}")


def subset(data: Dataset, n: int, generator: Optional[torch.Generator]) -> Dataset:
    """n images of `data`: a random subset drawn with `generator`, the first n without one; all for n = -1."""
    if n == -1 or n >= len(data):
        return data
    indices = torch.randperm(len(data), generator=generator)[:n] if generator is not None else torch.arange(n)
    return Subset(data, indices.tolist())


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                device: torch.device) -> Tuple[float, float]:
    """One pass of cross-entropy SGD over the loader; (mean loss, training accuracy) of the epoch."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return loss_sum.item() / seen, correct.item() / seen


def stacked(data: Dataset) -> Tuple[torch.Tensor, torch.Tensor]:
    """A (test) split as one image tensor and one label tensor, for models.clean_accuracy."""
    images, labels = zip(*(data[i] for i in range(len(data))))
    return torch.stack(images), torch.tensor(labels)


def recipe_of(args: argparse.Namespace) -> Dict[str, Any]:
    """What produced the checkpoint (plain values only, so the file loads weights-only)."""
    keys = ("dataset", "epochs", "milestones", "lr", "momentum", "weight_decay", "batch_size", "augment",
            "num_train", "num_test", "seed")
    recipe = {k: getattr(args, k) for k in keys}
    recipe.update(milestones=list(args.milestones), optimizer="SGD", lr_gamma=0.1, loss="cross_entropy",
                  defaults_from="Sun et al.'s TTT, yueatsprograms/ttt_cifar_release main.py")
    return recipe


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Train ResNet26 on the source set and write its checkpoint; returns the checkpoint dict."""
    device = get_device(args.device)
    train_set = torchvision_dataset(args.dataset, args.data_dir, True, args.augment)
    test_set = torchvision_dataset(args.dataset, args.data_dir, False, args.augment)
    torch.manual_seed(args.seed)  # the initialisation
    generator = torch.Generator().manual_seed(args.seed)  # the subset and the batch order
    train_set, test_set = subset(train_set, args.num_train, generator), subset(test_set, args.num_test, None)
    pin = device.type == "cuda"
    torch.backends.cudnn.benchmark = pin  # as TTT: fixed 32 x 32 inputs
    train_loader = DataLoader(train_set, args.batch_size, shuffle=True, generator=generator,
                              num_workers=args.workers, pin_memory=pin, persistent_workers=args.workers > 0)
    model = ResNet26(NUM_CLASSES[args.dataset]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(args.milestones), gamma=0.1)
    path = checkpoint_path(args.ckpt_dir, args.dataset)
    logger.info("training %s on %d %s images (%d test images) on %s; checkpoint %s; recipe %s",
                ARCH, len(train_set), args.dataset, len(test_set), device, path, recipe_of(args))
    for epoch in range(1, args.epochs + 1):
        start, lr = time.time(), optimizer.param_groups[0]["lr"]
        loss, train_acc = train_epoch(model, train_loader, optimizer, device)
        scheduler.step()
        logger.info("epoch %d/%d: lr %g, loss %.4f, training accuracy %.2f %% (%.0f s)",
                    epoch, args.epochs, lr, loss, 100 * train_acc, time.time() - start)
    clean_acc = clean_accuracy(model.eval(), *stacked(test_set), 500, device)
    logger.info("clean %s test accuracy %.2f %% (error %.2f %%)", args.dataset, 100 * clean_acc, 100 * (1 - clean_acc))
    checkpoint = {"model_state": {k: v.cpu() for k, v in model.state_dict().items()}, "arch": ARCH,
                  "num_classes": NUM_CLASSES[args.dataset], "recipe": recipe_of(args),
                  "clean_test_acc": clean_acc, "num_test": len(test_set), "torch_version": str(torch.__version__)}
    atomic_write(path, lambda f: torch.save(checkpoint, f))
    logger.info("wrote %s", path)
    return checkpoint


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (a user error: one line, non-zero)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    return errors.exit_status(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
