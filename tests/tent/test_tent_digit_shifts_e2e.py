"""SVHN -> MNIST / MNIST-M / USPS end to end: the paper's configs with a tiny ResNet-26 checkpoint on tiny target files.

The source model is tent/resnet26.py's ResNet26 at CKPT_DIR/svhn/ResNet26.pt ({"model_state": state_dict}).
"""
from pathlib import Path

import pytest
import torch

from digit_shift_files import write_all
from tent import cifar10c, resnet26

CFG_DIR = Path(__file__).resolve().parents[2] / "cfgs" / "digits"


def save_source_model(ckpt_dir: Path) -> None:
    """A randomly initialised ResNet-26 in the source recipe's checkpoint format, where MODEL.ARCH ResNet26 reads it."""
    torch.manual_seed(0)
    path = ckpt_dir / "svhn" / "ResNet26.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_state": resnet26.ResNet26(num_classes=10).state_dict()}, path)


def overrides(tmp_path: Path, data_dir: Path) -> list:
    """Folders in tmp_path, and batches small enough for 40 target images."""
    return ["DATA_DIR", str(data_dir), "CKPT_DIR", str(tmp_path / "ckpt"), "SAVE_DIR", str(tmp_path / "out"),
            "TEST.BATCH_SIZE", "20"]


@pytest.mark.usefixtures("fresh_cfg")
@pytest.mark.parametrize("dataset", ["svhn2mnist", "svhn2mnistm", "svhn2usps"])
def test_paper_config_runs_source_norm_tent_offline(tmp_path, dataset):
    write_all(tmp_path / "data", 40)
    save_source_model(tmp_path / "ckpt")
    config = str(CFG_DIR / f"{dataset}.yaml")
    results = cifar10c.evaluate("test", ["--cfg", config, *overrides(tmp_path, tmp_path / "data")])
    assert {"source", "norm", "tent", "tent_online"} <= set(results)
    assert all(list(results[m]) == [1] and list(results[m][1]) == ["clean"] and 0 <= results[m][1]["clean"] <= 1
               for m in results)
    assert results["source"][1]["clean"] in [i / 40 for i in range(41)]  # every one of the 40 images is counted


@pytest.mark.usefixtures("fresh_cfg")
def test_missing_target_file_is_one_line_and_a_nonzero_exit(tmp_path, capsys):
    save_source_model(tmp_path / "ckpt")
    status = cifar10c.main(["--cfg", str(CFG_DIR / "svhn2usps.yaml"), *overrides(tmp_path, tmp_path / "data")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert status == 1 and len(errors) == 1 and "Traceback" not in err
    assert str(tmp_path / "data" / "usps.t.bz2") in errors[0] and "https://" in errors[0]
