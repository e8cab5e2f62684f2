"""tent.protocols / window / distributed: stream order, reset points and reported numbers of every SETTING."""
import json
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from dacommon import distributed
from tent import cifar10c, conf, conf_checks, data, evaluation, models, norm, protocols, report, stream
from tent import tent as tent_lib
from tent.conf import cfg
from tent.window import SlidingWindow
import peer_loops
from tent_helpers import TINY_MNIST_CFG

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


# ------------------------------- stream plans against the peers' loops ---------------------- #

LABELS = {c: [(7 * i + k) % 3 for i in range(90)] for k, c in enumerate("abc")}  # 90 samples, 3 classes


def project_stream(setting, types, severities, peer="auto", num_ex=-1, seed=1, delta=0.0):
    """The project's plan and piece order, as peer_loops events (tent / CoTTA: load gives the first num_ex)."""
    events = []
    peer = protocols.peer_of(setting, peer)
    n = 90 if peer == "mariodoebler" or num_ex == -1 else num_ex
    parts = {c: (torch.zeros(n, 1, 1, 1), torch.tensor(LABELS[c][:n])) for c in types}
    for piece in protocols.plan(setting, types, severities, peer):
        if piece.reset:
            events.append(("reset",))
        data = protocols.piece_data(piece, setting, lambda c, s: parts[c], delta, seed, peer, num_ex)
        ids = [(piece.corruptions[d], int(i) - n * d) for d, i in zip(data.domains.tolist(), data.order.tolist())]
        events.append(("piece", piece.corruptions, piece.severity, ids))
    return events


def no_start_reset(events):
    """Events without a reset at the very start (a no-op on the fresh source model)."""
    return events[1:] if events and events[0] == ("reset",) else events


MARIODOEBLER_SETTINGS = ["reset_each_shift", "continual", "gradual", "mixed_domains", "correlated",
                         "mixed_domains_correlated", "gradual_correlated", "reset_each_shift_correlated"]


@pytest.mark.parametrize("setting", MARIODOEBLER_SETTINGS)
@pytest.mark.parametrize("severities", [[5], [5, 3]])
@pytest.mark.parametrize("num_ex, delta", [(-1, 0.0), (25, 0.0), (-1, 0.5), (70, 1e-3)])
def test_mariodoebler_peer_equals_its_loop_and_loader(setting, severities, num_ex, delta):
    peer = list(peer_loops.mariodoebler_stream(setting, ["a", "b", "c"], severities, LABELS, num_ex, 3, delta))
    mine = project_stream(setting, ["a", "b", "c"], severities, "mariodoebler", num_ex, 3, delta)
    assert no_start_reset(mine) == no_start_reset(peer)


@pytest.mark.parametrize("setting", [s for s in MARIODOEBLER_SETTINGS if protocols.peer_of(s) == "mariodoebler"])
def test_settings_named_after_mariodoebler_follow_it_by_default(setting):
    peer = list(peer_loops.mariodoebler_stream(setting, ["a", "b"], [4, 2], LABELS, 70, 1, 0.1))
    assert no_start_reset(project_stream(setting, ["a", "b"], [4, 2], num_ex=70, delta=0.1)) == no_start_reset(peer)


def test_mariodoebler_gradual_runs_1_to_5_to_1_on_every_corruption():
    pieces = protocols.plan("gradual_correlated", [f"c{i}" for i in range(15)], [5])
    assert len(pieces) == 135 and [p.severity for p in pieces[:9]] == list(protocols.GRADUAL_NEXT)
    assert len(protocols.plan("gradual", [f"c{i}" for i in range(15)], [5])) == 131  # CoTTA's


@pytest.mark.parametrize("severities", [[5], [5, 4, 3]])
def test_reset_each_shift_default_is_tents_loop(severities):
    peer = list(peer_loops.tent_stream(["a", "b", "c"], severities, 30))
    assert project_stream("reset_each_shift", ["a", "b", "c"], severities, num_ex=30) == peer
    assert project_stream("offline", ["a", "b", "c"], severities, num_ex=30) == peer


@pytest.mark.parametrize("severities", [[5], [5, 4, 3]])
def test_cotta_peer_equals_cottas_continual_loop(severities):
    peer = list(peer_loops.cotta_stream(["a", "b", "c"], severities, 30))
    mine = project_stream("continual", ["a", "b", "c"], severities, "cotta", num_ex=30)
    assert no_start_reset(mine) == no_start_reset(peer)
    assert sum(e == ("reset",) for e in mine) == len(severities) - 1  # one per later severity's pass


def test_gradual_default_is_cottas_gradual_loop():
    peer = list(peer_loops.cotta_gradual_stream(["a", "b", "c"], 30))
    assert no_start_reset(project_stream("gradual", ["a", "b", "c"], [5], num_ex=30)) == no_start_reset(peer)
    assert [p.severity for p in protocols.plan("gradual", ["a", "b"], [5])] == [5, 4, 3, 2, 1, 1, 2, 3, 4, 5, 4, 3, 2, 1]


def test_peers_without_a_loop_for_the_setting_are_refused():
    for setting, peer in [("mixed_domains", "cotta"), ("continual", "tent"), ("offline", "mariodoebler"),
                          ("reset_each_shift", "cotta")]:
        assert not protocols.peer_allows(setting, peer)
        with pytest.raises(ValueError, match="PROTOCOL.PEER"):
            protocols.plan(setting, ["a"], [5], peer)
        conf.reset_cfg()
        conf.merge_from_list(["SETTING", setting, "PROTOCOL.PEER", peer])
        with pytest.raises(conf.ConfigError, match="PROTOCOL.PEER"):
            conf.assert_and_infer_cfg()


def test_mariodoebler_seed_reshuffles_and_subsamples_every_setting():
    for setting in ("continual", "reset_each_shift_correlated", "mixed_domains"):
        one = project_stream(setting, ["a", "b"], [5], num_ex=30, seed=1)
        two = project_stream(setting, ["a", "b"], [5], num_ex=30, seed=2)
        pieces = [e for e in one if e[0] == "piece"]
        assert one != two and all(len(e[3]) == 30 for e in pieces)  # mixed: NUM_EX in total
        assert all(e[3] != sorted(e[3]) for e in pieces)
    ref = project_stream("reset_each_shift", ["a"], [5], num_ex=30, seed=1)
    assert ref == project_stream("reset_each_shift", ["a"], [5], num_ex=30, seed=2)  # tent: file order


def test_mixed_domains_sees_every_sample_exactly_once_in_a_shuffled_order():
    pieces = protocols.plan("mixed_domains", ["a", "b", "c"], [5, 2])
    assert [(p.corruptions, p.severity, p.reset) for p in pieces] == [(("a", "b", "c"), 5, False),
                                                                      (("a", "b", "c"), 2, False)]
    # sample i of corruption k carries the value 100 k + i, so the stream shows where it came from
    parts = {c: (torch.arange(30).float().view(30, 1, 1, 1) + 100 * k, torch.arange(30) % 10)
             for k, c in enumerate("abc")}
    data = protocols.piece_data(pieces[0], "mixed_domains", lambda c, s: parts[c], 0.0, 1, "mariodoebler")
    seen = torch.cat([x.flatten() for x, _ in data.batches(7)])
    assert sorted(seen.tolist()) == sorted(float(100 * k + i) for k in range(3) for i in range(30))
    assert torch.equal(data.domains, (seen // 100).long())  # each sample keeps its corruption
    assert torch.equal(torch.cat([y for _, y in data.batches(7)]), (seen % 100).long() % 10)
    runs = (data.domains[1:] != data.domains[:-1]).sum().item()
    assert runs > 30  # consecutive samples usually come from different corruptions
    again = protocols.piece_data(pieces[0], "mixed_domains", lambda c, s: parts[c], 0.0, 1, "mariodoebler")
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


def test_dirichlet_order_equals_mariodoeblers_sampler_even_at_tiny_delta():
    labels = np.random.RandomState(0).permutation(np.repeat(np.arange(10), 100))
    samples = [("a", i, int(y)) for i, y in enumerate(labels)]
    state = np.random.get_state()
    try:
        for delta, seeds in ((1e-3, range(1, 21)), (0.1, range(1, 4)), (1.0, range(1, 4))):
            for seed in seeds:
                np.random.seed(seed)  # as its loader: the global generator, seeded RNG_SEED
                peer = [s[1] for s in peer_loops.sort_by_dirichlet(delta, samples)]
                assert protocols.dirichlet_order(labels, delta, seed).tolist() == peer, (delta, seed)
    finally:
        np.random.set_state(state)


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
    window.reset()  # as mariodoebler: the method is reset, the window and its position stay
    assert inner.seen[-1] == "reset" and window.buffer.shape[0] == 4 and window.pointer == 2
    [window(x) for x in xs[:2]]
    assert inner.seen[-1] == 4  # the 12th sample completes the window: an update right away


def test_sliding_window_runs_a_batchnorm1d_model_from_the_first_sample():
    network = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    method = norm.Norm(network, norm_layers=(nn.BatchNorm1d,))
    source = deepcopy(network).eval()
    window = SlidingWindow(method, 3)
    xs = torch.randn(7, 1, 4)
    with torch.no_grad():
        outputs = [window(x) for x in xs]  # a train-mode BatchNorm1d fails on one sample
        assert len(outputs) == 7 and network[2].training  # train mode again once the window holds two
        window.reset()
        window(torch.randn(1, 4))  # after a reset the window still holds 3 samples
        assert torch.allclose(outputs[0], source(xs[0]), atol=1e-6)  # sample 1: the source statistics


class RecordingTent(tent_lib.Tent):
    """A Tent that records its updates (one per step) and its resets."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events, self.batch = [], 0

    def forward(self, x):
        self.events += [("update", self.batch)] * self.steps
        return super().forward(x)

    def reset(self):
        self.events.append(("reset", self.batch))
        super().reset()


def recording_tent(steps: int) -> RecordingTent:
    """A tiny convolutional tent (batch norm 2d) that records what it does."""
    network = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    layers = (nn.BatchNorm2d,)
    network = tent_lib.configure_model(network, layers)
    return RecordingTent(network, torch.optim.SGD(tent_lib.collect_params(network, layers)[0], lr=0.1), steps=steps)


@pytest.mark.parametrize("steps, every, window, sizes, shifts", [
    (2, 3, 1, [4] * 7, (3, 5)),  # a reset between the two steps of a batch; the count outlives shift resets
    (1, 2, 3, [1] * 14, (5, 9)),  # the window and its position outlive shift resets
    (3, 4, 2, [1] * 9, (4,)),
    (1, 5, 1, [4] * 6, ()),
])
def test_periodic_reset_counts_updates_as_mariodoebler(steps, every, window, sizes, shifts):
    method = recording_tent(steps)
    model = stream.wrap_single_sample(stream.wrap_periodic_reset(method, "tent", every), "tent", window)
    with torch.no_grad():
        for b, size in enumerate(sizes):
            method.batch = b
            if b in shifts:
                stream.reset_model(model)
            stream.forward(model, torch.randn(size, 1, 2, 2), adapt=True)
    assert method.events == peer_loops.mariodoebler_updates(sizes, steps, every, window, shifts)


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


def test_mixed_domains_streams_num_ex_samples_in_all_as_mariodoebler(tmp_path, mnist_data_dir, ckpt_dir):
    results, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "mixed_domains",
                               "MODEL.ADAPTATIONS", "[source]")
    (piece,) = stream["pieces"]["source"]
    # NUM_EX 40 drawn from both corruptions' 4,500 test digits together, as mariodoebler's loader
    expected = protocols.mariodoebler_order(2 * 4500, cfg.RNG_SEED, 40) // 4500
    assert piece["name"] == "mixed" and piece["total"] == np.bincount(expected, minlength=2).tolist()
    assert len(piece["batch_errors"]) == 2 and sum(piece["total"]) == 40
    assert "in the mixed stream" in (out / cfg.LOG_DEST).read_text()


def test_correlated_orders_each_piece_by_class(tmp_path, mnist_data_dir, ckpt_dir):
    results, _, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "correlated",
                             "MODEL.ADAPTATIONS", "[source, tent]")
    plain, _, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "continual", "MODEL.ADAPTATIONS",
                      "[source, tent]", out_name="p")
    assert results["source"] == plain["source"]  # the same random subset, another order
    assert results["tent"] != plain["tent"]  # single-class batches change what tent learns


def test_periodic_reset_after_every_update_makes_tent_predict_like_norm(tmp_path, mnist_data_dir, ckpt_dir):
    # reset after each update: every batch meets the source parameters with batch statistics
    results, out, _ = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "continual",
                          "MODEL.RESET_AFTER_NUM_UPDATES", "1", "MODEL.ADAPTATIONS", "[norm, tent]")
    assert results["tent"] == results["norm"]
    assert (out / cfg.LOG_DEST).read_text().count("periodic reset after 1 updates") == 2 * 4


def offline_tent_error(corruption: str, epochs: int) -> float:
    """Tent by hand on one corruption of the loaded config: `epochs` adapting passes, then predict."""
    x, y = data.load_part(cfg, conf_checks.effective_setting(cfg), corruption, 5)
    model = cifar10c.setup_tent(deepcopy(evaluation.load_base_model(cfg, torch.device("cpu"))))
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
    x, y = data.load_part(cfg, conf_checks.effective_setting(cfg), "gaussian_noise", 5)
    model = cifar10c.setup_tent(deepcopy(evaluation.load_base_model(cfg, torch.device("cpu"))))
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


def test_a_sequential_stream_runs_whole_on_rank_0(monkeypatch):
    """Under torchrun independent pieces are split round robin; a sequential stream goes to rank 0 alone."""
    pieces = list(range(6))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, split in (("0", [0, 2, 4]), ("1", [1, 3, 5])):
        monkeypatch.setenv("RANK", rank)
        assert evaluation.my_pieces(cfg, "reset_each_shift", pieces) == split
        assert evaluation.my_pieces(cfg, "continual", pieces) == (pieces if rank == "0" else [])
    # mariodoebler's update counter and window outlive resets; its reset_each_shift_correlated resets per corruption
    for opts in (["MODEL.RESET_AFTER_NUM_UPDATES", "3"], ["TEST.BATCH_SIZE", "1", "TEST.WINDOW_LENGTH", "4"],
                 ["SETTING", "reset_each_shift_correlated", "CORRUPTION.SEVERITY", "[5, 4]"]):
        conf.reset_cfg()
        conf.merge_from_list(opts)
        assert not evaluation.pieces_independent(cfg, conf_checks.effective_setting(cfg))
        assert evaluation.my_pieces(cfg, conf_checks.effective_setting(cfg), pieces) == []  # rank 1
    conf.reset_cfg()
    conf.merge_from_list(["SETTING", "reset_each_shift_correlated", "PROTOCOL.PEER", "tent",
                          "CORRUPTION.SEVERITY", "[5, 4]"])
    assert evaluation.pieces_independent(cfg, "reset_each_shift_correlated")  # tent's loop resets before every piece


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
    for path in sorted((Path(__file__).resolve().parents[2] / "cfgs" / "protocols").glob("*.yaml")):
        conf.reset_cfg()
        conf.merge_from_file(str(path))
        conf.assert_and_infer_cfg()
        assert cfg.SETTING in ("continual", "gradual") and cfg.MODEL.ADAPTATIONS == ["source", "norm", "tent"]


def test_runs_with_other_rng_seeds_average_to_mean_and_std(tmp_path, mnist_data_dir, ckpt_dir, capsys):
    from tent import average

    paths, means = [], []
    for seed in (1, 2):
        _, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "continual", "RNG_SEED", str(seed),
                             "MODEL.ADAPTATIONS", "[source]", out_name=f"rng{seed}")
        paths.append(str(out / f"{Path(cfg.LOG_DEST).stem}_stream.json"))
        means.append(stream["stream_mean_error_percent"]["source"])
    assert average.main(paths) == 0
    printed = capsys.readouterr().out
    assert f"source: {np.mean(means):.2f} ± {np.std(means, ddof=1):.2f} %" in printed and "| source |" in printed
    assert average.main([str(tmp_path / "missing_stream.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing_stream.json" in err[0] and "RNG_SEED" in err[0]


@pytest.mark.slow  # two passes over the 4,500 clean test digits for each method
def test_forgetting_protocol_evaluates_the_clean_test_set_between_corruptions(tmp_path, mnist_data_dir, ckpt_dir):
    results, out, stream = run(tmp_path, mnist_data_dir, ckpt_dir, "SETTING", "continual", "CORRUPTION.TYPE",
                               "[gaussian_noise, none, contrast, none]", "MODEL.ADAPTATIONS", "[source, norm]")
    pieces = stream["pieces"]["norm"]
    assert [p["name"] for p in pieces] == ["gaussian_noise", "none", "contrast", "none"]
    # mariodoebler's loader leaves a torchvision test set whole and in file order; the others get NUM_EX 40
    assert [sum(p["total"]) for p in pieces] == [40, 4500, 40, 4500]
    x, y = data.load_clean(cfg, 4500)
    source = evaluation.load_base_model(cfg, torch.device("cpu")).eval()
    assert results["source"][5]["none"] == pytest.approx(1 - models.clean_accuracy(source, x, y, 500, torch.device("cpu")))


def test_mariodoeblers_imagenet_list_is_shipped_as_an_order_of_the_full_folder(tmp_path):
    from PIL import Image

    from tent import imagenetc
    from tent.data import MissingResourceError

    order = imagenetc.mariodoebler_order()
    assert len(order) == 50000 and np.array_equal(np.sort(order), np.arange(50000))
    root = tmp_path / "ImageNet-C" / "fog" / "5"
    for k, wnid in enumerate(["n01440764", "n01443537"]):
        (root / wnid).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((224, 224, 3), 40 * k + i, np.uint8)).save(root / wnid / f"im{i}.JPEG")
    folder = imagenetc.imagenetc_folder(str(tmp_path), "fog", 5)
    listed = imagenetc.ListedFolder(folder, [3, 0, 2, 1])
    assert listed.targets == [1, 0, 1, 0] and len(listed) == 4
    assert (listed[0][0][0, 0, 0] * 255).round().item() == 41 and listed[0][1] == 1
    with pytest.raises(MissingResourceError, match="50000"):
        imagenetc.imagenetc_listed(str(tmp_path), "fog", 5)  # the list needs every image
    conf.merge_from_list(["CORRUPTION.DATASET", "imagenet", "MODEL.ARCH", "Standard_R50", "SETTING", "continual",
                          "CORRUPTION.NUM_EX", "20000"])
    conf.assert_and_infer_cfg()  # mariodoebler draws from all 50,000
    conf.merge_from_list(["PROTOCOL.PEER", "cotta"])
    with pytest.raises(conf.ConfigError, match="NUM_EX"):
        conf.assert_and_infer_cfg()  # CoTTA reads robustbench's 5,000
