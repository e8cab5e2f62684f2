"""The tent paper's digit adaptation data (SVHN -> MNIST / MNIST-M / USPS) on tiny files in the real layouts."""
import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from digit_shift_files import label_of, levels, write_all, write_mnist, write_mnistm, write_svhn, write_usps
from tent import conf, data, digit_shifts
from tent.conf_checks import assert_and_infer_cfg
from tent.errors import ConfigError, CorruptFileError, MissingResourceError

CFG_DIR = Path(__file__).resolve().parents[2] / "cfgs" / "digits"
LABELS = np.arange(40) % 10


def decoded(x: torch.Tensor, channel: int = 0) -> list:
    """The labels the images' top-left pixels encode."""
    return [label_of(v) for v in (x[:, channel, 0, 0] * 255).tolist()]


@pytest.mark.parametrize("dataset", digit_shifts.SHIFTS)
def test_targets_are_32px_rgb_in_unit_range_with_their_labels(tmp_path, dataset):
    write_all(tmp_path)
    x, y = digit_shifts.load_target(dataset, 25, str(tmp_path))
    assert x.shape == (25, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert decoded(x) == y.tolist()  # labels stay with their images through the shuffle
    assert y.dtype == torch.int64 and set(y.tolist()) <= set(range(10))


@pytest.mark.parametrize("dataset", ["svhn2mnist", "svhn2usps"])
def test_grey_targets_repeat_to_three_equal_channels(tmp_path, dataset):
    write_all(tmp_path)
    x, _ = digit_shifts.load_target(dataset, 40, str(tmp_path))
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])


def test_mnistm_keeps_its_colours_and_takes_mnist_labels(tmp_path):
    write_all(tmp_path)
    x, y = digit_shifts.load_target("svhn2mnistm", 40, str(tmp_path))
    assert torch.allclose(x[:, 1], torch.full_like(x[:, 1], 7 / 255))  # green stays 7, red encodes the label
    assert decoded(x, 0) == y.tolist()


def test_order_is_shuffled_fixed_and_a_prefix_for_fewer_images(tmp_path):
    write_all(tmp_path)
    x, y = digit_shifts.load_target("svhn2mnist", 40, str(tmp_path), seed=0)
    x2, y2 = digit_shifts.load_target("svhn2mnist", 10, str(tmp_path), seed=0)
    assert torch.equal(x[:10], x2) and torch.equal(y[:10], y2)
    assert y.tolist() != LABELS.tolist() and sorted(y.tolist()) == sorted(LABELS.tolist())
    assert not torch.equal(digit_shifts.load_target("svhn2mnist", 40, str(tmp_path), seed=1)[1], y)


def test_resize_is_the_uda_ss_transform(tmp_path):
    """MNIST and USPS pass through Resize(32) on PIL images, then ToTensor, as the UDA-SS loaders."""
    labels = np.arange(10)
    images = write_mnist(tmp_path, labels)
    write_usps(tmp_path, labels)
    uda_ss = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    order = np.random.RandomState(0).permutation(10)
    x, _ = digit_shifts.load_target("svhn2mnist", 10, str(tmp_path))
    assert torch.equal(x[0], uda_ss(Image.fromarray(images[order[0]])).repeat(3, 1, 1))
    x, _ = digit_shifts.load_target("svhn2usps", 10, str(tmp_path))
    usps_image = np.full((16, 16), levels(labels)[order[0]], np.uint8)
    assert torch.allclose(x[0], uda_ss(Image.fromarray(usps_image)).repeat(3, 1, 1), atol=1.5 / 255)


def test_svhn_test_set_maps_label_10_to_zero(tmp_path):
    write_svhn(tmp_path, LABELS)
    x, y = digit_shifts.load_source_test(str(tmp_path), 12)
    assert x.shape == (12, 3, 32, 32) and y.tolist() == LABELS[:12].tolist() and decoded(x) == y.tolist()


@pytest.mark.parametrize("dataset, name", [("svhn2mnist", "t10k-images-idx3-ubyte"),
                                           ("svhn2mnistm", "keras_mnistm.pkl.gz"), ("svhn2usps", "usps.t.bz2")])
def test_missing_target_names_the_file_and_where_to_get_it(tmp_path, dataset, name):
    with pytest.raises(MissingResourceError) as exc:
        data.load_corruption(dataset, 10, 1, str(tmp_path), "clean")
    message = str(exc.value)
    assert "\n" not in message and str(tmp_path / "") in message and name in message and "http" in message


def test_mnistm_pickle_with_a_foreign_global_is_refused_without_running_it(tmp_path):
    write_mnist(tmp_path, LABELS)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    write_mnistm(tmp_path, LABELS, payload={b"test": Payload()})
    with pytest.raises(CorruptFileError, match="keras_mnistm"):
        digit_shifts.load_target("svhn2mnistm", 10, str(tmp_path))
    assert not marker.exists()


def test_mnistm_with_fewer_images_than_mnist_labels_is_refused(tmp_path):
    write_mnist(tmp_path, LABELS)
    write_mnistm(tmp_path, LABELS[:30])
    with pytest.raises(CorruptFileError, match="40"):
        digit_shifts.load_target("svhn2mnistm", 10, str(tmp_path))


def test_truncated_files_are_corrupt_not_tracebacks(tmp_path):
    write_all(tmp_path)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03")
    with pytest.raises(CorruptFileError, match="t10k-images"):
        digit_shifts.load_target("svhn2mnist", 10, str(tmp_path))
    (tmp_path / "MNIST-M" / "keras_mnistm.pkl.gz").write_bytes(gzip.compress(pickle.dumps(b"x")[:3]))
    with pytest.raises(CorruptFileError, match="keras_mnistm"):
        digit_shifts.load_target("svhn2mnistm", 10, str(tmp_path))


@pytest.mark.usefixtures("fresh_cfg")
@pytest.mark.parametrize("dataset", digit_shifts.SHIFTS)
def test_paper_configs_hold_the_papers_settings(dataset):
    conf.merge_from_file(str(CFG_DIR / f"{dataset}.yaml"))
    c = conf.cfg
    assert_and_infer_cfg(c)
    assert (c.CORRUPTION.DATASET, list(c.CORRUPTION.TYPE), c.CORRUPTION.NUM_EX) == (dataset, ["clean"], -1)
    assert (c.MODEL.ARCH, list(c.MODEL.ADAPTATIONS), c.SETTING) == ("ResNet26", ["source", "norm", "tent"], "offline")
    assert (c.OPTIM.METHOD, c.OPTIM.LR, c.TEST.BATCH_SIZE, c.OPTIM.EPOCHS) == ("Adam", 1e-3, 128, 1)
    assert data.num_examples(c) == {"svhn2mnist": 10000, "svhn2mnistm": 10000, "svhn2usps": 2007,
                                    "mnist2svhn": 26032}[dataset]


@pytest.mark.usefixtures("fresh_cfg")
def test_a_corruption_name_is_refused_and_none_loads_svhn(tmp_path):
    conf.merge_from_file(str(CFG_DIR / "svhn2usps.yaml"))
    c = conf.cfg
    c.merge_from_list(["CORRUPTION.TYPE", ["fog"]])
    with pytest.raises(ConfigError, match="CORRUPTION.TYPE"):
        assert_and_infer_cfg(c)
    c.merge_from_list(["CORRUPTION.TYPE", ["clean", "none"], "SETTING", "reset_each_shift", "DATA_DIR", str(tmp_path),
                       "CORRUPTION.NUM_EX", 12])
    assert_and_infer_cfg(c)
    write_svhn(tmp_path, LABELS)
    x, y = data.load_part(c, "reset_each_shift", "none", 1)
    assert y.tolist() == LABELS[:12].tolist() and x.shape == (12, 3, 32, 32)


@pytest.mark.usefixtures("fresh_cfg")
def test_a_data_dir_holding_the_target_files_may_be_read_only(tmp_path):
    from tent import preflight

    conf.merge_from_file(str(CFG_DIR / "svhn2mnistm.yaml"))
    c = conf.cfg
    c.merge_from_list(["DATA_DIR", str(tmp_path)])
    assert not preflight.holds_inputs("DATA_DIR", c)
    write_mnistm(tmp_path, LABELS)
    assert not preflight.holds_inputs("DATA_DIR", c)  # MNIST-M's labels are MNIST's
    write_mnist(tmp_path, LABELS)
    assert preflight.holds_inputs("DATA_DIR", c)
