"""Train a source model on a clean source training set: ResNet26 with TTT's recipe, or VisDA-C's ResNet-50.

    python -m tent.train_source --dataset cifar10|cifar100|svhn|mnist|visda [--data_dir ./data] [--ckpt_dir ./ckpt]

The tent paper adapts a ResNet-26 (R-26) trained on the source data but ships no checkpoint; the
defaults below are the recipe of TTT's code (yueatsprograms/ttt_cifar_release: main.py's defaults,
which script_baseline.sh runs for its batch-norm model): SGD with momentum 0.9 and weight decay
5e-4 on every parameter, learning rate 0.1 divided by 10 after epochs 50 and 65, 75 epochs, batch
128, cross-entropy, random 32 x 32 crops of the 4-pixel zero-padded image and horizontal flips. TTT
trains on CIFAR-10 only; CIFAR-100, SVHN and MNIST get the same recipe, except that digits are not
flipped (a mirrored digit is another glyph). MNIST (the source of the paper's MNIST -> SVHN) is
prepared as tent/digit_shifts.py prepares digit targets: resized to 32 x 32 by PIL's bilinear
filter, grey repeated to three channels; its checkpoint is CKPT_DIR/mnist/ResNet26.pt.

VisDA-C (`--dataset visda`): the tent paper fine-tunes an ImageNet ResNet-50 on the synthetic `train`
split but states no recipe. This repository's choice is the source-training recipe of SHOT (Liang et
al., ICML 2020; tim-learn/SHOT, object/image_source.py with run.sh's VisDA-C line), which most
source-free adaptation work on VisDA-C reuses: pycls's ImageNet ResNet-50 (the tent paper's, read
from CKPT_DIR/imagenet/pycls/, see tent/pycls_resnet.py) with its 1000-class head replaced by a
12-class linear one; SGD with Nesterov momentum 0.9 and weight decay 1e-3, learning rate 1e-3 for the
new head and 1e-4 for the pretrained layers, both decayed per iteration as (1 + 10 p)^-0.75 (p: the
fraction of training done), 10 epochs, batch 64, cross-entropy with label smoothing 0.1; images
resized to 256 x 256, a random 224 x 224 crop and a horizontal flip. As SHOT (`--trte val`), a
seeded random 10 % of the train split is held out; the model is evaluated there after every epoch
(SHOT: every tenth of training, the same at its 10 epochs) and the weights of the best mean
per-class accuracy (SHOT's VisDA-C criterion) are kept; the checkpoint stores their overall clean
accuracy. The held-out images get the evaluation's preprocessing (tent/visda.py: pycls's shorter
side 256, where SHOT resizes to 256 x 256). SHOT's bottleneck (a 256-unit layer with batch norm
and a weight-normalised classifier) is not used: the tent paper's model is the plain ResNet-50. The
checkpoint, CKPT_DIR/visda/pycls_R50.pt, is a pycls checkpoint ({"model_state": ...}).

The data are torchvision's datasets under --data_dir (CIFAR10 / CIFAR100: cifar-10-batches-py /
cifar-100-python, SVHN: train_32x32.mat and test_32x32.mat, MNIST: MNIST/raw/), or VisDA-C's
DATA_DIR/VISDA-C/train/, never downloaded here. The checkpoint (tent/resnet26.py's or
tent/visda.py's checkpoint_path under --ckpt_dir) is written atomically with what produced it: the
recipe and the clean test (VisDA-C: held-out) accuracy. Errors a user can fix end in one line and a non-zero exit.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from dacommon.device import get_device
from dacommon.files import atomic_write

from . import errors, pycls_resnet, visda
from .errors import CorruptFileError, MissingResourceError
from .models import clean_accuracy
from .resnet26 import ARCH, DIGIT_SOURCES, NUM_CLASSES, ResNet26, checkpoint_path

logger = logging.getLogger(__name__)

DATASETS = tuple(NUM_CLASSES) + (visda.DATASET,)  # cifar10, cifar100, svhn, mnist; visda
AUGMENTATIONS = ("crop_flip", "crop", "none")
# the defaults of each recipe: TTT's for ResNet26, SHOT's for VisDA-C (lr: the new head's)
TTT = dict(epochs=75, milestones=[50, 65], lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=128)
SHOT = dict(epochs=10, milestones=[], lr=1e-3, backbone_lr=1e-4, momentum=0.9, weight_decay=1e-3, batch_size=64,
            label_smoothing=0.1, crop_size=visda.CROP)
SHOT_ONLY = ("backbone_lr", "label_smoothing", "crop_size")  # options of the VisDA-C recipe only
HELD_OUT = 0.1  # SHOT's --trte val: the fraction of VisDA-C's train split kept for the clean accuracy
# where torchvision's dataset classes read each source set under --data_dir, and where it comes from
FILES = {"cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
         "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
         "svhn": ("train_32x32.mat and test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/"),
         "mnist": ("MNIST/raw/train-images-idx3-ubyte and MNIST/raw/train-labels-idx1-ubyte and "
                   "MNIST/raw/t10k-images-idx3-ubyte and MNIST/raw/t10k-labels-idx1-ubyte",
                   "https://ossci-datasets.s3.amazonaws.com/mnist/ (gunzip the four files)")}
TORCHVISION_CLASS = {"cifar10": "CIFAR10", "cifar100": "CIFAR100", "svhn": "SVHN", "mnist": "MNIST"}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line: the source dataset, folders, and TTT's (VisDA-C: SHOT's) recipe as defaults."""
    p = argparse.ArgumentParser(prog="python -m tent.train_source", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, choices=DATASETS, help="source training set")
    p.add_argument("--data_dir", default="./data", help="folder holding torchvision's dataset files")
    p.add_argument("--ckpt_dir", default="./ckpt",
                   help="the checkpoint goes to <ckpt_dir>/<dataset>/.../ResNet26.pt (visda: <ckpt_dir>/visda/"
                        "pycls_R50.pt, started from <ckpt_dir>/imagenet/pycls/" + pycls_resnet.R50_FILE + ")")
    p.add_argument("--epochs", type=int, default=None, help="TTT: 75; visda (SHOT): 10")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help="epochs after which the learning rate is divided by 10 (TTT: 50 65; visda: none, SHOT's decay)")
    p.add_argument("--lr", type=float, default=None, help="TTT: 0.1; visda (SHOT): 1e-3, the new head's")
    p.add_argument("--backbone_lr", type=float, default=None, help="visda only: the pretrained layers' (SHOT: 1e-4)")
    p.add_argument("--momentum", type=float, default=None, help="TTT: 0.9; visda (SHOT, Nesterov): 0.9")
    p.add_argument("--weight_decay", type=float, default=None, help="TTT: 5e-4; visda (SHOT): 1e-3")
    p.add_argument("--batch_size", type=int, default=None, help="TTT: 128; visda (SHOT): 64")
    p.add_argument("--label_smoothing", type=float, default=None, help="visda only (SHOT: 0.1)")
    p.add_argument("--crop_size", type=int, default=None,
                   help="visda only: the training crop (SHOT: 224 of 256 x 256; other sizes scale both)")
    p.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                   help="crop_flip (TTT's, the CIFAR default), crop (the SVHN and MNIST default), none; "
                        "visda: SHOT's (resize, random crop, flip)")
    p.add_argument("--num_train", type=int, default=-1, help="train on a seeded random subset of this size (-1: all)")
    p.add_argument("--num_test", type=int, default=-1,
                   help="measure the clean accuracy on the first N test (visda: held-out) images")
    p.add_argument("--seed", type=int, default=0, help="initialisation, subset and batch order")
    p.add_argument("--workers", type=int, default=2, help="data loading processes")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    args = p.parse_args(argv)
    check_args(p, with_recipe_defaults(args))
    return args


def with_recipe_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset with the dataset's recipe (TTT's, or SHOT's for visda)."""
    recipe = SHOT if args.dataset == visda.DATASET else TTT
    args.misplaced_options = [name for name in SHOT_ONLY if getattr(args, name) is not None and recipe is TTT]
    for name, value in recipe.items():
        if getattr(args, name) is None:
            setattr(args, name, list(value) if isinstance(value, list) else value)
    if args.augment is None:
        digits = args.dataset in DIGIT_SOURCES  # a mirrored digit is another glyph
        args.augment = "shot" if args.dataset == visda.DATASET else "crop" if digits else "crop_flip"
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible values as argparse does, but in one line: `<prog>: error: <reason>`, exit status 2."""
    problem = value_problem(args)
    if problem:
        print(f"{p.prog}: error: {problem}", file=sys.stderr)
        sys.exit(2)


def value_problem(args: argparse.Namespace) -> Optional[str]:
    """What is wrong with the numbers of the command line, or None."""
    if getattr(args, "misplaced_options", None):
        return f"--{' --'.join(args.misplaced_options)}: options of --dataset visda only"
    if args.dataset == visda.DATASET and (args.milestones or args.augment != "shot"):
        return "--milestones and --augment do not apply to --dataset visda (SHOT's decay and augmentation)"
    if args.dataset == visda.DATASET and not (0 <= args.label_smoothing < 1 and 0 <= args.backbone_lr < float("inf")
                                              and args.crop_size >= 8):
        return (f"--label_smoothing must be in [0, 1), --backbone_lr a finite number >= 0 and --crop_size >= 8, got "
                f"{args.label_smoothing}, {args.backbone_lr} and {args.crop_size}")
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


def transforms_for(augment: str, train: bool, dataset: str = "cifar10") -> Any:
    """PIL image -> [0, 1] tensor, with TTT's augmentation on training images (ResNet26 normalises itself).

    MNIST is first prepared as the digit targets are (tent/digit_shifts.py): 32 x 32 by PIL's bilinear filter, grey
    repeated to RGB.
    """
    from torchvision import transforms as T

    steps: List[Any] = [T.Resize([32, 32]), T.Grayscale(3)] if dataset == "mnist" else []
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
        return cls(data_dir, download=False, transform=transforms_for(augment, train, dataset), **split)
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


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                label_smoothing: float = 0., after_step: Optional[Callable[[], None]] = None) -> Tuple[float, float]:
    """One pass of cross-entropy SGD over the loader (after_step: a per-iteration schedule); (mean loss, accuracy)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
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
    if args.dataset == visda.DATASET:
        recipe.update({k: getattr(args, k) for k in SHOT_ONLY}, lr_gamma=None, nesterov=True, held_out=HELD_OUT,
                      lr_schedule="lr * (1 + 10 p) ** -0.75 per iteration", start=pycls_resnet.R50_FILE,
                      defaults_from="SHOT (Liang et al.), tim-learn/SHOT object/image_source.py and run.sh (VisDA-C)")
    return recipe


def write_checkpoint(path: Path, model: nn.Module, args: argparse.Namespace, arch: str, num_classes: int,
                     clean_acc: float, num_test: int, **extra: Any) -> Dict[str, Any]:
    """Save the weights with what produced them (and `extra` plain values), atomically; returns the checkpoint dict."""
    checkpoint = {"model_state": {k: v.cpu() for k, v in model.state_dict().items()}, "arch": arch,
                  "num_classes": num_classes, "recipe": recipe_of(args), "clean_test_acc": clean_acc,
                  "num_test": num_test, "torch_version": str(torch.__version__), **extra}
    atomic_write(path, lambda f: torch.save(checkpoint, f))
    logger.info("wrote %s", path)
    return checkpoint


def fit(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, args: argparse.Namespace,
        device: torch.device, per_epoch: Any = None, per_step: Any = None,
        after_epoch: Optional[Callable[[int], None]] = None) -> None:
    """args.epochs passes over the loader, logging each; the schedule steps per epoch (TTT) or per iteration (SHOT)."""
    label_smoothing = args.label_smoothing if args.dataset == visda.DATASET else 0.
    for epoch in range(1, args.epochs + 1):
        start, lr = time.time(), optimizer.param_groups[-1]["lr"]
        loss, train_acc = train_epoch(model, loader, optimizer, device, label_smoothing,
                                      per_step.step if per_step is not None else None)
        if per_epoch is not None:
            per_epoch.step()
        logger.info("epoch %d/%d: lr %g, loss %.4f, training accuracy %.2f %% (%.0f s)",
                    epoch, args.epochs, lr, loss, 100 * train_acc, time.time() - start)
        if after_epoch is not None:
            after_epoch(epoch)


def train(args: argparse.Namespace) -> Dict[str, Any]:
    """Train the source model of args.dataset and write its checkpoint; returns the checkpoint dict."""
    if args.dataset == visda.DATASET:
        return train_visda(args)
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
    fit(model, train_loader, optimizer, args, device, per_epoch=scheduler)
    clean_acc = clean_accuracy(model.eval(), *stacked(test_set), 500, device)
    logger.info("clean %s test accuracy %.2f %% (error %.2f %%)", args.dataset, 100 * clean_acc, 100 * (1 - clean_acc))
    return write_checkpoint(path, model, args, ARCH, NUM_CLASSES[args.dataset], clean_acc, len(test_set))


def visda_splits(args: argparse.Namespace) -> Tuple[visda.VisdaList, visda.VisdaList]:
    """VisDA-C's train split as SHOT divides it: a seeded random 90 % to train on (augmented), 10 % held out."""
    full = visda.load_split(args.data_dir, "train")  # every listed image checked: one line if one is missing
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(args.seed)).tolist()
    cut = int((1 - HELD_OUT) * len(full))  # SHOT: tr_size = int(0.9 * dsize)
    train_part, held_part = order[:cut], order[cut:]
    train_part = train_part if args.num_train == -1 else train_part[:args.num_train]
    held_part = held_part if args.num_test == -1 else held_part[:args.num_test]

    def part(indices: List[int], transform: Any) -> visda.VisdaList:
        return visda.VisdaList(full.root, [full.names[i] for i in indices], [full.targets[i] for i in indices],
                               transform)

    return (part(train_part, visda.train_transform(args.crop_size)),
            part(held_part, visda.eval_transform(args.crop_size)))


def visda_source_model(ckpt_dir: str) -> nn.Module:
    """pycls's ImageNet ResNet-50 (weights-only, strict) with its 1000-class head replaced by a new 12-class one."""
    model = pycls_resnet.load_pycls_resnet(pycls_resnet.checkpoint_path(ckpt_dir), 50, 1000)
    model.head.fc = nn.Linear(model.head.fc.in_features, len(visda.CLASSES))
    return model


def held_out_accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> Tuple[float, float]:
    """Overall and mean per-class accuracy of an eval-mode model over a loader (a split too large to stack)."""
    classes = len(visda.CLASSES)
    correct = torch.zeros(classes, dtype=torch.long, device=device)
    seen = torch.zeros(classes, dtype=torch.long, device=device)
    with torch.no_grad():
        for x, y in loader:
            y = y.to(device)
            hit = model(x.to(device)).argmax(1) == y
            seen += torch.bincount(y, minlength=classes)
            correct += torch.bincount(y[hit], minlength=classes)
    present = seen > 0
    return correct.sum().item() / seen.sum().item(), (correct[present] / seen[present]).mean().item()


def train_visda(args: argparse.Namespace) -> Dict[str, Any]:
    """Fine-tune pycls's ResNet-50 on VisDA-C's synthetic split with SHOT's recipe; write the pycls checkpoint."""
    device = get_device(args.device)
    train_set, held_out = visda_splits(args)  # the data first: its check is quicker than loading the start
    model = visda_source_model(args.ckpt_dir)
    torch.manual_seed(args.seed)  # the new head's initialisation and the augmentation
    generator = torch.Generator().manual_seed(args.seed)  # the batch order
    pin = device.type == "cuda"
    torch.backends.cudnn.benchmark = pin  # fixed 224 x 224 inputs
    loader = DataLoader(train_set, args.batch_size, shuffle=True, generator=generator, num_workers=args.workers,
                        pin_memory=pin, persistent_workers=args.workers > 0)
    head = list(model.head.fc.parameters())
    backbone = [p for name, p in model.named_parameters() if not name.startswith("head.fc.")]
    model.head.fc.reset_parameters()  # seeded above: the same seed gives the same head
    model = model.to(device)
    optimizer = torch.optim.SGD([{"params": backbone, "lr": args.backbone_lr}, {"params": head, "lr": args.lr}],
                                momentum=args.momentum, weight_decay=args.weight_decay, nesterov=args.momentum > 0)
    iterations = args.epochs * len(loader)
    # SHOT's lr_scheduler: the decay of iteration i (counted from 1) applies to that iteration's step
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: (1 + 10 * (i + 1) / iterations) ** -0.75)
    path = visda.checkpoint_path(args.ckpt_dir)
    logger.info("fine-tuning %s on %d VisDA-C train images (%d held out) on %s; checkpoint %s; recipe %s",
                visda.ARCH, len(train_set), len(held_out), device, path, recipe_of(args))
    held_loader = DataLoader(held_out, 2 * args.batch_size, num_workers=args.workers, pin_memory=pin)
    best: Dict[str, Any] = {"mean_class_acc": -1.}

    def keep_best(epoch: int) -> None:
        """SHOT's model selection: the weights of the best held-out mean per-class accuracy so far (ties: the later)."""
        acc, mean_class_acc = held_out_accuracy(model.eval(), held_loader, device)
        logger.info("epoch %d: held-out accuracy %.2f %%, mean per-class %.2f %%",
                    epoch, 100 * acc, 100 * mean_class_acc)
        if mean_class_acc >= best["mean_class_acc"]:
            best.update(mean_class_acc=mean_class_acc, acc=acc, epoch=epoch,
                        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})

    fit(model, loader, optimizer, args, device, per_step=schedule, after_epoch=keep_best)
    model.load_state_dict(best["state"])
    logger.info("kept epoch %d: clean accuracy on the %d held-out VisDA-C train images %.2f %% (error %.2f %%)",
                best["epoch"], len(held_out), 100 * best["acc"], 100 * (1 - best["acc"]))
    return write_checkpoint(path, model, args, visda.ARCH, len(visda.CLASSES), best["acc"], len(held_out),
                            held_out_mean_class_acc=best["mean_class_acc"], selected_epoch=best["epoch"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (a user error: one line, non-zero)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    return errors.exit_status(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
