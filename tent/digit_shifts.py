"""The tent paper's source-free digit adaptation: SVHN -> MNIST / MNIST-M / USPS (Table 3) and MNIST -> SVHN.

`CORRUPTION.DATASET svhn2mnist | svhn2mnistm | svhn2usps`: a ResNet-26 trained on SVHN's training
split is evaluated on the whole test split of the target (MNIST 10,000, MNIST-M 10,000, USPS 2,007
images, the paper's counts). `mnist2svhn` (the failure case of the paper's Section 4.2 text): a
ResNet-26 trained on MNIST's training split, evaluated on SVHN's 26,032 test images. As with the
offline digit shifts (tent/digits.py), the one "corruption" is the target's clean test set
(CORRUPTION.TYPE clean, the severity unused).

Files under DATA_DIR, in the layouts their usual downloaders write (nothing is downloaded here):
- MNIST: torchvision's `DATA_DIR/MNIST/raw/t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`,
  read with torchvision's idx readers.
- USPS: torchvision's `DATA_DIR/usps.t.bz2` (libsvm's file), read by `torchvision.datasets.USPS`.
- MNIST-M: `DATA_DIR/MNIST-M/keras_mnistm.pkl.gz`, the file the UDA-SS code (Sun et al., whose
  numbers Table 3 compares with) downloads: its 10,000 test images are MNIST's test digits in
  order, so their labels are MNIST's test labels. The pickle is read by an unpickler that builds
  numpy arrays only, so it cannot run code.
- SVHN (mnist2svhn's target, and the svhn2* source's own test set, CORRUPTION.TYPE none):
  torchvision's `DATA_DIR/test_32x32.mat`, read as torchvision reads it (label 10 is the digit 0)
  but without its md5 check. mnist2svhn's CORRUPTION.TYPE none reads MNIST's test files.

Preprocessing, as the UDA-SS loaders (`transforms.Resize(32)` on PIL images, then grey repeated to
three channels): MNIST / MNIST-M (28 px) and USPS (16 px) are resized to 32 x 32 with PIL's
bilinear filter; the result is uint8 NHWC, handed on as float NCHW in [0, 1] like every loader of
this package (the source model normalises). The test order is shuffled once with a fixed seed
(MNISTC.SEED) and shared by every method, as the paper controls for order.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path
from typing import Tuple

import numpy as np
import torch

from .errors import CorruptFileError, MissingResourceError
from .mnistc import to_tensor

SHIFTS = ("svhn2mnist", "svhn2mnistm", "svhn2usps", "mnist2svhn")
TYPES = ("clean",)  # the one "corruption": the target domain's clean test set
SVHN_TEST_SIZE = 26032
TEST_SIZES = {"svhn2mnist": 10000, "svhn2mnistm": 10000, "svhn2usps": 2007, "mnist2svhn": SVHN_TEST_SIZE}
IMAGE_SIZE = 32  # SVHN's size, to which the targets are resized

MNIST_FILES = ("MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte")
USPS_FILE = "usps.t.bz2"
MNISTM_FILE = "MNIST-M/keras_mnistm.pkl.gz"
SVHN_FILE = "test_32x32.mat"
WHERE = {  # where each file comes from
    MNIST_FILES[0]: "torchvision.datasets.MNIST(DATA_DIR, download=True), or "
                    "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz (gunzip it)",
    MNIST_FILES[1]: "torchvision.datasets.MNIST(DATA_DIR, download=True), or "
                    "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz (gunzip it)",
    USPS_FILE: "torchvision.datasets.USPS(DATA_DIR, train=False, download=True), or "
               "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass/usps.t.bz2",
    MNISTM_FILE: "https://github.com/VanushVaswani/keras_mnistm/releases/download/1.0/keras_mnistm.pkl.gz",
    SVHN_FILE: "torchvision.datasets.SVHN(DATA_DIR, split='test', download=True), or "
               "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
}
TARGET_FILES = {"svhn2mnist": MNIST_FILES, "svhn2mnistm": (MNISTM_FILE, MNIST_FILES[1]), "svhn2usps": (USPS_FILE,),
                "mnist2svhn": (SVHN_FILE,)}


def expected_files(dataset: str, data_dir: str) -> Tuple[Path, ...]:
    """The files a target test set is read from."""
    return tuple(Path(data_dir) / name for name in TARGET_FILES[dataset])


def require(data_dir: str, name: str) -> Path:
    """The path of a data file; MissingResourceError naming it and its source when it is absent."""
    path = Path(data_dir) / name
    if not path.is_file():
        raise MissingResourceError(f"data file {path} is missing; get it with {WHERE[name]}")
    return path


def resize_grey_or_rgb(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) grey or (N, H, W, 3) images -> (N, 32, 32, 3) uint8, resized by PIL's bilinear filter."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    resized = np.stack([np.asarray(TF.resize(Image.fromarray(image), [IMAGE_SIZE, IMAGE_SIZE]))
                        for image in images])
    return np.repeat(resized[..., None], 3, axis=-1) if resized.ndim == 3 else resized


def read_idx(path: Path, labels: bool) -> np.ndarray:
    """An MNIST idx file through torchvision's reader; CorruptFileError naming it when it cannot be parsed."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    try:
        return (read_label_file if labels else read_image_file)(str(path)).numpy()
    except (AssertionError, RuntimeError, ValueError, IndexError) as e:
        raise CorruptFileError(f"data file {path} is not an MNIST idx file ({type(e).__name__}); "
                               "download it again") from None


def mnist_test(data_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """MNIST's test images (N, 28, 28) uint8 and labels, in file order."""
    images = read_idx(require(data_dir, MNIST_FILES[0]), labels=False)
    return images, mnist_test_labels(data_dir)


def mnist_test_labels(data_dir: str) -> np.ndarray:
    """MNIST's test labels (MNIST-M's too), int64 in file order."""
    return read_idx(require(data_dir, MNIST_FILES[1]), labels=True).astype(np.int64)


def usps_test(data_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """USPS's test images (N, 16, 16) uint8 and labels 0-9, as torchvision.datasets.USPS reads them."""
    from torchvision.datasets import USPS

    path = require(data_dir, USPS_FILE)
    try:
        usps = USPS(data_dir, train=False, download=False)
    except (OSError, EOFError, ValueError) as e:
        raise CorruptFileError(f"data file {path} is not USPS's libsvm file ({type(e).__name__}); "
                               "download it again") from None
    return usps.data, np.asarray(usps.targets, dtype=np.int64)


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts and lists only: any other global is refused, so no code runs."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        """The allowed numpy constructors; UnpicklingError for anything else."""
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a numpy array")
        return super().find_class(module, name)


def mnistm_test(data_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """MNIST-M's test images (N, 28, 28, 3) uint8 (keras_mnistm's 'test') and MNIST's test labels."""
    path = require(data_dir, MNISTM_FILE)
    try:
        with gzip.open(path, "rb") as f:
            arrays = ArrayUnpickler(f, encoding="bytes").load()  # written by Python 2: str keys are bytes
        images = arrays.get(b"test", arrays.get("test")) if isinstance(arrays, dict) else None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise CorruptFileError(f"data file {path} cannot be read as keras_mnistm's arrays "
                               f"({' '.join(str(e).split()) or type(e).__name__}); download it again") from None
    labels = mnist_test_labels(data_dir)
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.shape[1:] == (28, 28, 3)
            and len(images) == len(labels)):
        raise CorruptFileError(f"data file {path} holds no 'test' array of {len(labels)} 28x28 RGB images "
                               f"(one per MNIST test label); download it again")
    return images, labels


def svhn_test(data_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """SVHN's test images (N, 32, 32, 3) uint8 and labels 0-9 (its label 10 is the digit 0)."""
    import scipy.io as sio

    path = require(data_dir, SVHN_FILE)
    try:
        mat = sio.loadmat(str(path))
        images, labels = mat["X"], mat["y"].astype(np.int64).reshape(-1)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(f"data file {path} is not SVHN's test_32x32.mat ({type(e).__name__}); "
                               "download it again") from None
    labels[labels == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2)), labels  # stored (H, W, 3, N)


def target_images(dataset: str, data_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """A target's whole test set: (N, 32, 32, 3) uint8 images and int64 labels, in file order."""
    read = {"svhn2mnist": mnist_test, "svhn2mnistm": mnistm_test, "svhn2usps": usps_test,
            "mnist2svhn": svhn_test}[dataset]
    images, labels = read(data_dir)
    return resize_grey_or_rgb(images), labels


def shuffled_first(images: np.ndarray, labels: np.ndarray, n_examples: int, seed: int
                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first n_examples of a fixed shuffle (the same for every method) as (x, y) tensors."""
    order = np.random.RandomState(seed).permutation(len(labels))[:n_examples]
    return to_tensor(images[order]), torch.from_numpy(labels[order])


def load_target(dataset: str, n_examples: int, data_dir: str = "./data", seed: int = 0,
                **unused: object) -> Tuple[torch.Tensor, torch.Tensor]:
    """First n_examples of the shuffled target test set, x float NCHW in [0, 1], like load_cifar10c."""
    images, labels = target_images(dataset, data_dir)
    return shuffled_first(images, labels, n_examples, seed)


def load_source_test(data_dir: str, n_examples: int, dataset: str = "svhn2mnist") -> Tuple[torch.Tensor, torch.Tensor]:
    """First n_examples of the source's test set in file order (CORRUPTION.TYPE none), as load_cifar10.

    SVHN's for the svhn2* shifts; MNIST's, prepared as the digit targets are (32 x 32, RGB), for mnist2svhn.
    """
    images, labels = mnist_test(data_dir) if dataset == "mnist2svhn" else svhn_test(data_dir)
    images = images[:n_examples]
    if dataset == "mnist2svhn":
        images = resize_grey_or_rgb(images)
    return to_tensor(images), torch.from_numpy(labels[:n_examples])
