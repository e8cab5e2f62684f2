"""Source models: robustbench's model zoo, the paper's own (ResNet-26: resnet26.py; pycls's ResNet-50:
pycls_resnet.py, visda.py), or the offline benchmark's small batch-norm CNN.

The offline benchmarks' CNNs ship in tent/weights/ (like robustbench's published models): a run
whose training settings equal a shipped model's loads it (sha256-checked, weights-only); any other
setting, or MNISTC.SOURCE_WEIGHTS train, trains its own model and caches it under CKPT_DIR.

A checkpoint that is missing and cannot be downloaded raises MissingResourceError with one
sentence naming the expected path and where to get the file.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from dacommon.errors import one_line

from . import mnistc
from .conf import ConfigError
from .data import MissingResourceError
from .errors import CorruptFileError, UnsafeCheckpointError
from .safe_load import load_checkpoint, third_party_loads

logger = logging.getLogger(__name__)

MNIST_ARCH = "MnistCNN"
# torchvision's ImageNet ResNet-50 weights, which robustbench's `Standard_R50` downloads
R50_FILE = "resnet50-0676ba61.pth"
R50_URL = f"https://download.pytorch.org/models/{R50_FILE}"


def _conv_bn_relu(c_in: int, c_out: int) -> list:
    """3x3 convolution (no bias: batch norm's shift replaces it), batch norm, ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class MnistCNN(nn.Sequential):
    """Small batch-norm CNN for 32x32 RGB digits: 5 conv-BN-ReLU layers, 2 max-pools, GAP, linear.

    Like the CIFAR WideResNets it takes unnormalised [0, 1] inputs and relies on batch norm
    after every convolution, so its features shift with the input statistics.
    """

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        w = width
        super().__init__(
            *_conv_bn_relu(3, w), *_conv_bn_relu(w, w), nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w), *_conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn_relu(2 * w, 4 * w), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, num_classes))


def train_mnist_cnn(x: torch.Tensor, y: torch.Tensor, width: int, epochs: int, batch_size: int,
                    lr: float, seed: int, device: torch.device) -> MnistCNN:
    """Train MnistCNN on clean images with Adam and a one-cycle schedule.

    On the CPU it trains on one thread: multi-threaded gradient reductions change the weights in
    the last bits with the core count, so the checkpoint (and the table) would depend on it.
    """
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG state untouched
        torch.manual_seed(seed)
        model = MnistCNN(width).to(device)
        generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        _train(model, x, y, epochs, batch_size, lr, generator, device)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, batch_size: int, lr: float,
           generator: torch.Generator, device: torch.device) -> None:
    """The training loop: cross-entropy, Adam, one-cycle learning rate, shuffled batches."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(x) // batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=epochs * steps_per_epoch)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        logger.info("source training epoch %d/%d: last batch loss %.4f", epoch + 1, epochs, loss.item())


@torch.no_grad()
def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                   device: torch.device) -> float:
    """Accuracy of an eval-mode model on clean images."""
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i in range(0, len(x), batch_size):
        correct += (model(x[i:i + batch_size].to(device)).max(1)[1] == y[i:i + batch_size].to(device)).sum()
    return correct.item() / len(x)


# the settings of the shared default checkpoint MnistCNN.pt (conf.py's MNISTC defaults, source MNIST)
DEFAULT_TRAIN_CFG: Dict[str, Any] = dict(num_train=3000, seed=0, width=16, epochs=8, batch_size=64, lr=3e-3,
                                         train_seed=0, source="mnist")
CHECKPOINT_KEYS = {"state_dict", "train_cfg", "clean_acc"}


def mnist_cnn_path(ckpt_dir: str, train_cfg: Dict[str, Any] | None = None) -> Path:
    """Checkpoint path, in robustbench's <dir>/<dataset>/corruptions/<arch>.pt layout, keyed by its settings.

    The default settings keep the name MnistCNN.pt; any other setting gets its own file
    (MnistCNN_seed<S>_<hash>.pt), so a one-off run never replaces the shared model.
    """
    train_cfg = dict(DEFAULT_TRAIN_CFG if train_cfg is None else train_cfg)
    folder = Path(ckpt_dir) / train_cfg["source"] / "corruptions"
    if train_cfg == DEFAULT_TRAIN_CFG:
        return folder / f"{MNIST_ARCH}.pt"
    digest = hashlib.sha1(json.dumps(train_cfg, sort_keys=True).encode()).hexdigest()[:10]
    return folder / f"{MNIST_ARCH}_seed{train_cfg['train_seed']}_{digest}.pt"


def read_checkpoint(path: Path, train_cfg: Dict[str, Any], trust: bool = False) -> Dict[str, Any] | None:
    """The cached checkpoint if it is readable and was trained with `train_cfg`, else None (log why).

    Loaded weights-only (tent/safe_load.py): a file that would run code is refused, as every
    checkpoint is, while a truncated or foreign file is only a stale cache and is retrained.
    """
    if not path.is_file():
        return None
    try:
        checkpoint = load_checkpoint(path, trust)
        if not (isinstance(checkpoint, dict) and CHECKPOINT_KEYS <= checkpoint.keys()):
            raise ValueError("not an MnistCNN checkpoint")
        if checkpoint["train_cfg"] == train_cfg:  # the weights must fit the architecture too
            MnistCNN(train_cfg["width"]).load_state_dict(checkpoint["state_dict"])
    except UnsafeCheckpointError:
        raise
    except Exception as e:  # truncated, not a checkpoint, wrong tensors
        logger.warning("cache file %s is unreadable (%s); retraining it", path, type(e).__name__)
        return None
    if checkpoint["train_cfg"] != train_cfg:
        logger.info("%s was trained with %s; retraining with %s", path, checkpoint["train_cfg"], train_cfg)
        return None
    return checkpoint


# The offline benchmarks' source models, shipped like robustbench's zoo models are published:
# state_dicts made by scripts/ship_source_models.py, listed with their training settings and sha256
WEIGHTS_DIR = Path(__file__).with_name("weights")
MANIFEST_FILE = WEIGHTS_DIR / "manifest.json"


def shipped_manifest() -> Dict[str, Any]:
    """tent/weights/manifest.json: how the shipped models were made, and one entry per file."""
    if not MANIFEST_FILE.is_file():
        return {"models": []}
    try:
        return json.loads(MANIFEST_FILE.read_text())
    except (OSError, ValueError) as e:
        raise CorruptFileError(f"{MANIFEST_FILE} is unreadable ({type(e).__name__}); reinstall the package") from None


def shipped_entry(train_cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The shipped model trained with exactly `train_cfg` (every setting equal), or None."""
    return next((m for m in shipped_manifest()["models"] if m["train_cfg"] == train_cfg), None)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_shipped(entry: Dict[str, Any]) -> Dict[str, Any]:
    """A shipped model as a checkpoint dict; its sha256 is checked before torch.load (weights-only)."""
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise MissingResourceError(f"shipped source model {path} is missing; reinstall the package, "
                                   "or set MNISTC.SOURCE_WEIGHTS train to train it")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise CorruptFileError(f"shipped source model {path} has sha256 {digest}, not the recorded "
                               f"{entry['sha256']}; reinstall the package, or set MNISTC.SOURCE_WEIGHTS train")
    state_dict = load_checkpoint(path)  # never trusted: the file is a plain dict of tensors
    return {"state_dict": state_dict, "train_cfg": dict(entry["train_cfg"]), "clean_acc": entry["clean_acc"]}


def source_split(data_dir: str, source: str, num_train: int, seed: int) -> tuple:
    """(x_train, y_train, x_test, y_test) of the source domain, uint8 NHWC 32x32 / int64."""
    if source == "digits":
        from . import digits
        return digits.load_split(num_train, seed)
    return mnistc.load_split(data_dir, num_train, seed)


def train_checkpoint(data_dir: str, train_cfg: Dict[str, Any], device: torch.device) -> Dict[str, Any]:
    """Train MnistCNN on the clean source training split; the checkpoint dict with its clean test accuracy."""
    c = train_cfg
    x_tr, y_tr, x_te, y_te = source_split(data_dir, c["source"], c["num_train"], c["seed"])
    logger.info("training the %s source model on %d clean %s images (seed %d)",
                MNIST_ARCH, len(x_tr), c["source"], c["train_seed"])
    model = train_mnist_cnn(mnistc.to_tensor(x_tr), torch.from_numpy(y_tr), c["width"], c["epochs"],
                            c["batch_size"], c["lr"], c["train_seed"], device)
    acc = clean_accuracy(model, mnistc.to_tensor(x_te), torch.from_numpy(y_te), 500, device)
    return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "train_cfg": dict(c),
            "clean_acc": acc}


def load_mnist_cnn(ckpt_dir: str, data_dir: str, num_train: int = 3000, seed: int = 0, width: int = 16,
                   epochs: int = 8, batch_size: int = 64, lr: float = 3e-3,
                   device: torch.device = torch.device("cpu"), train_seed: int | None = None,
                   source: str = "mnist", trust_checkpoint: bool = False,
                   source_weights: str = "shipped") -> nn.Module:
    """The offline source model: the shipped one if its settings match (`source_weights` shipped),
    else trained once on the clean training split and loaded from CKPT_DIR.

    `seed` fixes the split, `train_seed` (default: `seed`) the initialisation and batch order;
    `source` is the training domain (mnist, or digits for the digits -> MNIST shift).
    """
    train_cfg: Dict[str, Any] = dict(num_train=num_train, seed=seed, width=width, epochs=epochs,
                                     batch_size=batch_size, lr=lr,
                                     train_seed=seed if train_seed is None else train_seed, source=source)
    entry = shipped_entry(train_cfg) if source_weights == "shipped" else None
    if entry is not None:
        path, checkpoint = WEIGHTS_DIR / entry["file"], load_shipped(entry)
    else:
        path = mnist_cnn_path(ckpt_dir, train_cfg)
        checkpoint = read_checkpoint(path, train_cfg, trust_checkpoint)
    if checkpoint is None:
        checkpoint = train_checkpoint(data_dir, train_cfg, device)
        mnistc.atomic_write(path, lambda f: torch.save(checkpoint, f))
    model = MnistCNN(width)
    model.load_state_dict(checkpoint["state_dict"])
    logger.info("source model %s (%s, seed %d): clean test accuracy %.2f %% (error %.2f %%), checkpoint %s",
                MNIST_ARCH, source, train_cfg["train_seed"], 100 * checkpoint["clean_acc"],
                100 * (1 - checkpoint["clean_acc"]), path)
    return model.eval()


# Downloads: robustbench fetches its zoo files from Google Drive (gdown) and torchvision its ResNet-50 from
# download.pytorch.org; offline, that fails inside the weights-only load, whose wrapper would call any error a
# corrupt file. download_failed says what happened instead, and UPLOAD_NAMES the name a browser gives a file:
# robustbench zoo files whose Google Drive name (what a browser saves) differs from the name robustbench reads
UPLOAD_NAMES = {("cifar10", "Standard"): "natural.pt.tar"}


def download_failed(url: str, path: Path, error: BaseException, upload_name: Optional[str] = None) -> str:
    """One sentence for a checkpoint that could not be downloaded: from where, to where, why, what to do."""
    cause = error.__context__ if getattr(error, "__suppress_context__", False) and error.__context__ else error
    reason = one_line(cause)
    reason = type(cause).__name__ + (f": {reason[:120]}" if reason and reason != type(cause).__name__ else "")
    named = f" (a browser saves it as {upload_name})" if upload_name else ""
    return f"could not download {url} to {path} ({reason}); download it by hand{named} and save it at that path"


def html_instead_of_checkpoint(path: Path) -> bool:
    """Whether a file is a web page (Google Drive's confirmation page, saved by older downloaders), not a checkpoint."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _robustbench_checkpoint(arch: str, entry: Dict[str, Any], ckpt_dir: str, dataset: str) -> tuple:
    """(expected path, download URL) of a robustbench corruptions model, given its model-zoo entry."""
    if dataset == "imagenet" and "Standard" in arch:
        # built by torchvision with pretrained weights from the torch hub cache
        return Path(torch.hub.get_dir()) / "checkpoints" / R50_FILE, R50_URL
    gdrive_id = entry.get("gdrive_id")
    url = (f"https://drive.google.com/uc?id={gdrive_id}" if isinstance(gdrive_id, str) and gdrive_id
           else "the RobustBench model zoo (https://github.com/RobustBench/robustbench)")
    return robustbench_path(arch, ckpt_dir, dataset), url


def robustbench_path(arch: str, ckpt_dir: str, dataset: str) -> Path:
    """Where robustbench reads (and downloads to) a zoo model: <CKPT_DIR>/<dataset>/corruptions/<arch>.pt."""
    return Path(ckpt_dir) / dataset / "corruptions" / f"{arch}.pt"


def load_robustbench_model(arch: str, ckpt_dir: str, dataset: str, trust_checkpoint: bool = False) -> nn.Module:
    """robustbench's load_model for the corruptions threat model, weights-only, with one-line errors."""
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    from robustbench.utils import load_model

    known = model_dicts[BenchmarkDataset(dataset)][ThreatModel.corruptions]
    if arch not in known:
        raise ConfigError(
            f"config key MODEL.ARCH: {arch} is not a robustbench corruptions model for {dataset}; "
            f"choose from {sorted(known)}")
    path, url = _robustbench_checkpoint(arch, known[arch], ckpt_dir, dataset)
    upload_name = UPLOAD_NAMES.get((dataset, arch))
    if upload_name and not path.is_file() and path.with_name(upload_name).is_file():
        raise MissingResourceError(f"{path.with_name(upload_name)} is robustbench's {arch} checkpoint under its "
                                   f"Google Drive name; rename it to {path.name}, the name robustbench reads")
    try:
        with third_party_loads(path, trust_checkpoint):
            return load_model(arch, ckpt_dir, dataset, ThreatModel.corruptions)
    except Exception as e:  # requests / urllib / gdown errors when offline
        if path.is_file() and html_instead_of_checkpoint(path):
            raise CorruptFileError(f"{path} is a web page, not a checkpoint (a failed download); delete it, then "
                                   f"download {url} by hand and save it at that path") from None
        if path.is_file():
            raise  # the file is there, so the failure is not a missing download
        raise MissingResourceError(download_failed(url, path, e, upload_name)) from None


def load_source_model(arch: str, ckpt_dir: str, dataset: str, data_dir: str = "./data",
                      mnist_cfg: Dict[str, Any] | None = None,
                      device: torch.device = torch.device("cpu"), trust_checkpoint: bool = False) -> nn.Module:
    """The source model for a dataset, in eval mode on the CPU (trust: see tent/safe_load.py)."""
    if dataset in ("mnist", "mnist2digits", "digits2mnist"):
        settings = {k: v for k, v in (mnist_cfg or {}).items() if k != "params"}  # params: test data only
        if dataset == "digits2mnist":
            from . import digits
            settings.update(source="digits", num_train=digits.NUM_TRAIN)
        return load_mnist_cnn(ckpt_dir, data_dir, device=device, trust_checkpoint=trust_checkpoint, **settings)
    if dataset == "visda":  # pycls's ResNet-50 with VisDA-C's 12 classes, fine-tuned on the synthetic split
        from . import visda
        return visda.load_source_model(arch, ckpt_dir, trust_checkpoint)
    if arch == "ResNet26":  # the tent paper's R-26 (Sun et al.'s TTT), trained by `python -m tent.train_source`
        from .resnet26 import load_resnet26
        return load_resnet26(ckpt_dir, dataset, trust_checkpoint)
    from . import pycls_resnet
    if arch == pycls_resnet.ARCH:  # the tent paper's ImageNet model
        return pycls_resnet.load_pycls_resnet(pycls_resnet.checkpoint_path(ckpt_dir), trust=trust_checkpoint).eval()
    return load_robustbench_model(arch, ckpt_dir, dataset, trust_checkpoint)


def source_checkpoint(arch: str, ckpt_dir: str, dataset: str) -> Path:
    """The file load_source_model reads for `arch` on `dataset` (MNIST's CNNs aside: see mnist_cnn_path)."""
    from . import pycls_resnet, resnet26, visda
    if dataset == "visda":
        return visda.checkpoint_path(ckpt_dir)
    if arch == resnet26.ARCH:
        return resnet26.checkpoint_path(ckpt_dir, resnet26.source_of(dataset))
    if arch == pycls_resnet.ARCH:
        return pycls_resnet.checkpoint_path(ckpt_dir)
    return robustbench_path(arch, ckpt_dir, dataset)
