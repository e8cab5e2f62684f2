"""tent.digits: the digits <-> MNIST shift, its common 32x32 layout, splits and the evaluation path."""
from pathlib import Path

import numpy as np
import pytest
import torch

from tent import cifar10c, digits, mnistc
from tent_helpers import TINY_MNIST_CFG


def test_common_layout_puts_the_8x8_digit_in_mnists_20px_box():
    image = np.zeros((1, 8, 8))
    image[0, :, :] = 16  # a full-intensity frame: bilinear resampling keeps a constant constant
    out = digits.to_common_layout(image)
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.uint8
    assert (out[0, 6:26, 6:26] == 255).all() and out[0, :6].max() == 0 and out[0, :, 26:].max() == 0
    half = np.zeros((1, 8, 8))
    half[0, :, :4] = 8  # 8 of 16 levels on the left half -> 127.5 rounded to 128, right half 0
    grey = digits.to_common_layout(half)[0, ..., 0]
    assert grey[16, 6] == 128 and grey[16, 25] == 0
    assert np.array_equal(out[..., 0], out[..., 2])


def test_digit_split_is_stratified_disjoint_and_shuffled():
    x_tr, y_tr, x_te, y_te = digits.load_split(1000, 0)
    assert x_tr.shape == (1000, 32, 32, 3) and len(x_te) == 797
    assert np.bincount(y_tr).tolist() == [100] * 10 and len(set(y_te[:30].tolist())) >= 8
    assert not {r.tobytes() for r in x_tr} & {r.tobytes() for r in x_te}


def test_targets_are_the_other_domain(mnist_data_dir):
    x, y = digits.load_target("digits2mnist", 30, mnist_data_dir, num_train=500, seed=0)
    (x_test, y_test) = mnistc.split_arrays(mnist_data_dir, 500, 0, "x_test", "y_test")
    assert torch.equal(x, mnistc.to_tensor(x_test[:30])) and torch.equal(y, torch.from_numpy(y_test[:30]))
    x, y = digits.load_target("mnist2digits", 5000, mnist_data_dir, num_train=500, seed=0)
    assert x.shape == (1797, 3, 32, 32) and 0 <= x.min() and x.max() <= 1
    assert np.bincount(y.numpy()).min() >= 174 and len(set(y[:20].tolist())) >= 7  # all digits, shuffled


# the shared tiny config on a digit shift: the target's clean images are the one "corruption"
TINY = (TINY_MNIST_CFG.replace("DATASET: mnist", "DATASET: {dataset}").replace("SEVERITY: [5]", "SEVERITY: [1]")
        .replace("TYPE: [gaussian_noise, contrast]", "TYPE: [clean]"))


@pytest.mark.usefixtures("fresh_cfg")
@pytest.mark.parametrize("dataset, source", [("digits2mnist", "digits"), ("mnist2digits", "mnist")])
def test_shift_runs_the_same_evaluation_path(tmp_path, mnist_data_dir, dataset, source):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY.format(dataset=dataset))
    results = cifar10c.evaluate("test", ["--cfg", str(cfg_file), "DATA_DIR", mnist_data_dir,
                                         "CKPT_DIR", str(tmp_path / "ckpt"), "SAVE_DIR", str(tmp_path / "out")])
    assert list(results) == ["source", "norm", "tent"]
    assert all(list(r) == [1] and list(r[1]) == ["clean"] and 0 <= r[1]["clean"] <= 1 for r in results.values())
    assert list((Path(tmp_path) / "ckpt" / source / "corruptions").glob("MnistCNN_seed0_*.pt"))


@pytest.mark.usefixtures("fresh_cfg")
def test_shift_refuses_mnistc_corruption_names(tmp_path, capsys):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY.format(dataset="digits2mnist").replace("[clean]", "[fog]"))
    with pytest.raises(SystemExit) as e:
        cifar10c.main(["--cfg", str(cfg_file), "SAVE_DIR", str(tmp_path)])
    assert e.value.code == 2 and "CORRUPTION.TYPE" in capsys.readouterr().err
