"""tent.protocols / window / distributed: stream order, reset points and reported numbers of every SETTING."""
import json
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from tent import cifar10c, conf, distributed, protocols, report
from tent.conf import cfg
from tent.window import SlidingWindow
from test_tent_helpers import TINY_MNIST_CFG, fresh_cfg, mnist_data_dir  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("fresh_cfg")

TINY = TINY_MNIST_CFG


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory) -> str:
    """A CKPT_DIR shared by this module's runs, so the tiny source model is trained once."""
    return str(tmp_path_factory.mktemp("ckpt"))


def run(tmp_path: Path, data_dir: str, ckpt_dir: str, *overrides: str, out_name: str = "out"):
    """evaluate() on the tiny config; returns the results, the output folder and the stream JSON."""
    conf.reset_cfg()
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    out = tmp_path / out_name
    results = cifar10c.evaluate("test", ["--cfg", str(cfg_file), "DATA_DIR", data_dir, "CKPT_DIR", ckpt_dir,
                                         "SAVE_DIR", str(out), *overrides])
    stream = json.loads((out / f"{Path(cfg.LOG_DEST).stem}_stream.json").read_text())
    return results, out, stream


# ------------------------------- stream plans ---------------------------------------------- #

def test_reset_each_shift_plan_is_the_reference_loop():
    pieces = protocols.plan("reset_each_shift", ["a", "b"], [5, 3])
    assert [(p.name, p.severity, p.reset) for p in pieces] == [("a", 5, True), ("b", 5, True),
                                                               ("a", 3, True), ("b", 3, True)]
    assert not any(p.reset for p in protocols.plan("continual", ["a", "b"], [5, 3]))
    for setting in ("reset_each_shift_correlated", "offline"):
        assert protocols.plan(setting, ["a", "b"], [5, 3]) == pieces
    assert protocols.plan("correlated", ["a", "b"], [5, 3]) == protocols.plan("continual", ["a", "b"], [5, 3])


def test_gradual_visits_cotta_severity_sequence_without_resets():
    pieces = protocols.plan("gradual", ["a", "b", "c"], [5])
    assert [(p.name, p.severity) for p in pieces] == (
        [("a", s) for s in (5, 4, 3, 2, 1)] + [("b", s) for s in (1, 2, 3, 4, 5, 4, 3, 2, 1)]
        + [("c", s) for s in (1, 2, 3, 4, 5, 4, 3, 2, 1)])
    assert not any(p.reset for p in pieces)
    assert protocols.plan("gradual_correlated", ["a", "b"], [5]) == protocols.plan("gradual", ["a", "b"], [5])


def test_mixed_domains_sees_every_sample_exactly_once_in_a_shuffled_order():
    pieces = protocols.plan("mixed_domains", ["a", "b", "c"], [5, 2])
    assert [(p.corruptions, p.severity, p.reset) for p in pieces] == [(("a", "b", "c"), 5, False),
                                                                      (("a", "b", "c"), 2, False)]
    # sample i of corruption k carries the value 100 k + i, so the stream shows where it came from
    parts = {c: (torch.arange(30).float().view(30, 1, 1, 1) + 100 * k, torch.arange(30) % 10)
             for k, c in enumerate("abc")}
    data = protocols.piece_data(pieces[0], "mixed_domains", lambda c, s: parts[c], 0.0, seed=1)
    seen = torch.cat([x.flatten() for x, _ in data.batches(7)])
    assert sorted(seen.tolist()) == sorted(float(100 * k + i) for k in range(3) for i in range(30))
    assert torch.equal(data.domains, (seen // 100).long())  # each sample keeps its corruption
    assert torch.equal(torch.cat([y for _, y in data.batches(7)]), (seen % 100).long() % 10)
    runs = (data.domains[1:] != data.domains[:-1]).sum().item()
    assert runs > 30  # consecutive samples usually come from different corruptions
    again = protocols.piece_data(pieces[0], "mixed_domains", lambda c, s: parts[c], 0.0, seed=1)
    assert torch.equal(again.x, data.x)  # a fixed seed: every method sees the same stream


def mean_run_length(labels: np.ndarray) -> float:
    """Mean length of the runs of equal consecutive labels."""
    return len(labels) / (1 + np.count_nonzero(labels[1:] != labels[:-1]))


def test_dirichlet_order_tiny_delta_gives_long_single_class_runs():
    labels = np.random.RandomState(0).permutation(np.repeat(np.arange(10), 100))
    for delta in (1e-3, 0.1, 100.0):
        order = protocols.dirichlet_order(labels, delta, seed=1)
        assert sorted(order.tolist()) == list(range(1000))  # a permutation: every sample once
    tiny = mean_run_length(labels[protocols.dirichlet_order(labels, 1e-3, seed=1)])
    large = mean_run_length(labels[protocols.dirichlet_order(labels, 100.0, seed=1)])
    assert tiny > 50 and large < 15 and mean_run_length(labels) < 2
    assert np.array_equal(labels[protocols.dirichlet_order(labels, 0.0, seed=1)], np.sort(labels))


def test_corruption_order_seed_shuffles_reproducibly():
    names = [f"c{i}" for i in range(15)]
    assert protocols.corruption_order(names, -1) == names
    shuffled = protocols.corruption_order(names, 3)
    assert sorted(shuffled) == sorted(names) and shuffled != names
    assert protocols.corruption_order(names, 3) == shuffled != protocols.corruption_order(names, 4)


def test_shard_splits_jobs_round_robin_exactly_once():
    jobs = list(range(75))
    shards = [distributed.shard(jobs, r, 4) for r in range(4)]
    assert sorted(i for s in shards for i in s) == jobs
    assert shards[1][:3] == [1, 5, 9] and max(map(len, shards)) - min(map(len, shards)) <= 1


# ------------------------------- single-sample window -------------------------------------- #

class Counting(nn.Module):
    """A Norm-like wrapper that counts its adapting forwards and what they saw."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2).train(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten())
        self.seen = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        return self.model(x)

    def reset(self):
        self.seen.append("reset")


def test_sliding_window_adapts_once_per_window_on_the_whole_window():
    inner = Counting()
    window = SlidingWindow(inner, 4)
    xs = torch.randn(10, 1, 1, 3, 3)
    outputs = [window(x) for x in xs]
    assert all(o.shape == (1, 2) for o in outputs)
    assert inner.seen == [4, 4]  # adapted after samples 4 and 8, each time on 4 samples
    # sample 3's prediction came from a forward of the first 3 samples (no update)
    assert torch.allclose(outputs[2], inner.model(xs[:3, 0])[2:3], atol=1e-6)
    window.reset()
    assert inner.seen[-1] == "reset" and window.buffer is None


# ------------------------------- end to end on tiny MNIST-C -------------------------------- #

def test_continual_alias_and_setting_give_the_same_numbers(tmp_path, mnist_data_dir, ckpt_dir):
    alias, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "MODEL.CONTINUAL", "True", "MODEL.ADAPTATIONS", "[tent]",
                      out_name="a")
    setting, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "continual",
                               "MODEL.ADAPTATIONS", "[tent]", out_name="b")
    assert alias == setting
    log = (out / cfg.LOG_DEST).read_text()
    assert "resetting model" not in log and "never reset" in log
    assert (out / f"{Path(cfg.LOG_DEST).stem}_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [len(p["batch_errors"]) for p in stream["pieces"]["tent"]] == [2, 2]


def test_reset_each_shift_resets_before_every_piece(tmp_path, mnist_data_dir, ckpt_dir):
    results, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "CORRUPTION.SEVERITY", "[5, 3]",
                               "MODEL.ADAPTATIONS", "[source, tent]")
    log = (out / cfg.LOG_DEST).read_text()
    assert log.count(": resetting model") == 4 and log.count("not resetting model") == 4  # tent; source
    assert not (out / f"{Path(cfg.LOG_DEST).stem}_curve.png").exists()
    tent_pieces = stream["pieces"]["tent"]
    assert [(p["name"], p["severity"]) for p in tent_pieces] == [
        ("gaussian_noise", 5), ("contrast", 5), ("gaussian_noise", 3), ("contrast", 3)]
    for p in tent_pieces:
        assert results["tent"][p["severity"]][p["name"]] == pytest.approx(1 - p["correct"][0] / 40)


def test_gradual_stream_and_pooled_numbers(tmp_path, mnist_data_dir, ckpt_dir):
    results, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "gradual",
                               "MODEL.ADAPTATIONS", "[tent]")
    pieces = stream["pieces"]["tent"]
    assert [p["severity"] for p in pieces] == [5, 4, 3, 2, 1, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert "resetting model" not in (out / cfg.LOG_DEST).read_text()
    # contrast at severity 4 is visited twice: the table pools both visits
    visits = [p for p in pieces if p["name"] == "contrast" and p["severity"] == 4]
    assert len(visits) == 2
    pooled = 1 - sum(v["correct"][0] for v in visits) / 80
    assert results["tent"][4]["contrast"] == pytest.approx(pooled)
    mean = np.mean([1 - p["correct"][0] / p["total"][0] for p in pieces])
    assert stream["stream_mean_error_percent"]["tent"] == pytest.approx(100 * mean)


def test_mixed_domains_reports_per_corruption_and_counts_every_sample(tmp_path, mnist_data_dir, ckpt_dir):
    results, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "mixed_domains")
    (piece,) = stream["pieces"]["source"]
    assert piece["name"] == "mixed" and piece["total"] == [40, 40] and len(piece["batch_errors"]) == 4
    # the source model does not adapt: its per-corruption errors equal the reference protocol's
    assert "in the mixed stream" in (out / cfg.LOG_DEST).read_text()
    reset, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "MODEL.ADAPTATIONS", "[source]", out_name="r")
    assert results["source"] == reset["source"]


def test_correlated_orders_each_piece_by_class(tmp_path, mnist_data_dir, ckpt_dir):
    results, _, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "correlated",
                             "MODEL.ADAPTATIONS", "[source, tent]")
    plain, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "MODEL.ADAPTATIONS", "[source, tent]", out_name="p")
    assert results["source"] == plain["source"]  # same samples, another order
    assert results["tent"] != plain["tent"]  # single-class batches change what tent learns


def test_periodic_reset_after_every_update_makes_tent_predict_like_norm(tmp_path, mnist_data_dir, ckpt_dir):
    # reset after each update: every batch meets the source parameters with batch statistics
    results, out, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "continual",
                          "MODEL.RESET_AFTER_NUM_UPDATES", "1", "MODEL.ADAPTATIONS", "[norm, tent]")
    assert results["tent"] == results["norm"]
    assert (out / cfg.LOG_DEST).read_text().count("periodic reset after 1 updates") == 2 * 4


def offline_tent_error(corruption: str, epochs: int) -> float:
    """Tent by hand on one corruption of the loaded config: `epochs` adapting passes, then predict."""
    x, y = cifar10c.load_part(corruption, 5)
    model = cifar10c.setup_tent(deepcopy(cifar10c.load_base_model(torch.device("cpu"))))
    with torch.no_grad():
        for _ in range(epochs):
            for i in range(0, 40, 20):
                model(x[i:i + 20])
        wrong = sum((model.model(x[i:i + 20]).argmax(1) != y[i:i + 20]).sum().item() for i in range(0, 40, 20))
    return wrong / 40


def test_offline_adapts_on_the_whole_set_before_predicting(tmp_path, mnist_data_dir, ckpt_dir):
    online, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "MODEL.ADAPTATIONS", "[tent]", out_name="on")
    results, out, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "offline", "OPTIM.EPOCHS", "2",
                          "MODEL.ADAPTATIONS", "[source, tent]", out_name="off")
    assert list(results) == ["source", "tent", "tent_online"]
    assert results["tent_online"] == online["tent"]  # the first pass is the online protocol
    for corruption in ("gaussian_noise", "contrast"):
        assert results["tent"][5][corruption] == pytest.approx(offline_tent_error(corruption, 2))
    assert "| tent_online |" in (out / cfg.LOG_DEST).read_text()


def test_predict_after_update_is_off_by_default_and_takes_a_second_forward(tmp_path, mnist_data_dir, ckpt_dir):
    before, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "MODEL.ADAPTATIONS", "[tent]", out_name="b")
    after, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "MODEL.ADAPTATIONS", "[tent]",
                      "MODEL.PREDICT_AFTER_UPDATE", "True", out_name="a")
    x, y = cifar10c.load_part("gaussian_noise", 5)
    model = cifar10c.setup_tent(deepcopy(cifar10c.load_base_model(torch.device("cpu"))))
    wrong = 0
    with torch.no_grad():
        for i in range(0, 40, 20):
            model(x[i:i + 20])
            wrong += (model.model(x[i:i + 20]).argmax(1) != y[i:i + 20]).sum().item()
    assert after["tent"][5]["gaussian_noise"] == pytest.approx(wrong / 40)
    assert after != before


@pytest.mark.parametrize("window", ["1", "4"])
def test_batch_size_one_runs_for_norm_and_tent(tmp_path, mnist_data_dir, ckpt_dir, window):
    results, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "TEST.BATCH_SIZE", "1",
                               "TEST.WINDOW_LENGTH", window, "CORRUPTION.TYPE", "[contrast]",
                               "CORRUPTION.NUM_EX", "12", "MODEL.ADAPTATIONS", "[norm, tent]", out_name=f"w{window}")
    assert set(results) == {"norm", "tent"}
    assert len(stream["pieces"]["tent"][0]["batch_errors"]) == 12
    assert ("sliding window of 4" in (out / cfg.LOG_DEST).read_text()) == (window == "4")


def test_full_imagenet_folder_is_read_with_robustbench_classes(tmp_path):
    from PIL import Image

    from tent.imagenetc import imagenetc_folder

    root = tmp_path / "ImageNet-C" / "fog" / "5"
    for k, wnid in enumerate(["n01440764", "n01443537"]):
        (root / wnid).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((224, 224, 3), 40 * k + i, np.uint8)).save(root / wnid / f"im{i}.JPEG")
    folder = imagenetc_folder(str(tmp_path), "fog", 5)
    data = protocols.piece_data(protocols.Piece(("fog",), 5, True), "reset_each_shift",
                                lambda c, s: folder, 0.0, 1)
    (x, y), = list(data.batches(10, workers=0))
    assert x.shape == (6, 3, 224, 224) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert y.tolist() != [0, 0, 0, 1, 1, 1]  # shuffled: the folder lists images class by class
    # every image once, with its folder's class (pixel value 40 k + i)
    values = (x[:, 0, 0, 0] * 255).round().long()
    assert sorted(values.tolist()) == [0, 1, 2, 40, 41, 42] and torch.equal(values // 40, y)
    from tent.data import MissingResourceError
    with pytest.raises(MissingResourceError, match="ImageNet-C"):
        imagenetc_folder(str(tmp_path), "snow", 5)


def test_sequential_setting_refuses_several_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(conf.ConfigError, match="one process"):
        cifar10c.check_processes("continual")
    cifar10c.check_processes("reset_each_shift")


@pytest.mark.parametrize("opts, key", [
    (["SETTING", "sideways"], "SETTING"),
    (["SETTING", "gradual", "MODEL.CONTINUAL", "True"], "MODEL.CONTINUAL"),
    (["TEST.WINDOW_LENGTH", "4"], "TEST.WINDOW_LENGTH"),
    (["MODEL.RESET_AFTER_NUM_UPDATES", "-1"], "MODEL.RESET_AFTER_NUM_UPDATES"),
    (["CORRUPTION.NUM_EX", "0"], "CORRUPTION.NUM_EX"),
    (["SETTING", "reset_each_shift", "MODEL.COPY_STATE", "False"], "MODEL.COPY_STATE"),
])
def test_bad_protocol_keys_are_one_line_errors(opts, key):
    conf.merge_from_list(opts)
    with pytest.raises(conf.ConfigError, match=key):
        conf.assert_and_infer_cfg()


def test_protocol_defaults_are_the_reference():
    assert cfg.SETTING == "reset_each_shift" and cfg.MODEL.RESET_AFTER_NUM_UPDATES == 0
    assert cfg.MODEL.PREDICT_AFTER_UPDATE is False and cfg.CORRUPTION.ORDER_SEED == -1
    assert cfg.TEST.WINDOW_LENGTH == 1 and cfg.OPTIM.EPOCHS == 1 and cfg.TEST.DELTA_DIRICHLET == 0.0
    conf.merge_from_list(["SETTING", "continual", "MODEL.COPY_STATE", "False", "CORRUPTION.NUM_EX", "-1"])
    conf.assert_and_infer_cfg()
    assert report.stream_mean([report.PieceResult("a", 5, ["a"], [3], [4])]) == pytest.approx(0.25)


def test_published_anchor_configs_are_valid():
    for path in sorted((Path(__file__).resolve().parents[1] / "cfgs" / "protocols").glob("*.yaml")):
        conf.reset_cfg()
        conf.merge_from_file(str(path))
        conf.assert_and_infer_cfg()
        assert cfg.SETTING in ("continual", "gradual") and cfg.MODEL.ADAPTATIONS == ["source", "norm", "tent"]
