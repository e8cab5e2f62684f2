"""proda.tta: tent and norm on ProDA's DeepLabv2 (test-time adaptation of a segmentation net)."""
import copy
from functools import lru_cache

import pytest
import torch
import torch.nn as nn

from proda.models.deeplabv2 import Deeplab
from proda.tta import build_tta
from proda_helpers import save_tiny_checkpoint

N_CLASS = 4


@lru_cache(maxsize=1)
def _trained_once() -> nn.Module:
    """One block per stage, random weights, source running statistics not the defaults."""
    torch.manual_seed(0)
    net = Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, init="random", layers=[1, 1, 1, 1])
    net.train()
    with torch.no_grad():
        for _ in range(2):   # give the batch norms non-trivial running statistics
            net(torch.randn(2, 3, 16, 16))
    return net.eval()


def tiny_deeplab() -> nn.Module:
    """A fresh copy of the same tiny network (building one takes seconds)."""
    return copy.deepcopy(_trained_once())


def images(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def bn_affine(net: nn.Module):
    return [p.detach().clone() for m in net.modules() if isinstance(m, nn.BatchNorm2d)
            for p in (m.weight, m.bias)]


def test_none_is_the_trained_network_in_eval_mode():
    net = tiny_deeplab()
    x = images()
    expected = net(x)["out"]
    out = build_tta(net, "none")(x)["out"]
    assert torch.equal(out, expected)


def test_norm_predicts_with_batch_statistics_and_no_dropout_noise():
    x = images()
    adapted = build_tta(tiny_deeplab(), "norm")
    first, second = adapted(x)["out"], adapted(x)["out"]
    torch.testing.assert_close(first, second, rtol=0, atol=0)   # dropout off: deterministic
    assert not torch.allclose(first, tiny_deeplab()(x)["out"])    # batch stats, not source stats


def test_tent_updates_only_batch_norm_affine_and_predicts_deterministically():
    net = tiny_deeplab()
    frozen = {k: v.clone() for k, v in net.state_dict().items() if "bn" not in k and "downsample.1" not in k}
    before = bn_affine(net)
    adapted = build_tta(net, "tent", lr=1e-2)
    adapted(images())
    after = bn_affine(net)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    for k, v in net.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k
    # the head's Dropout2d stays in eval mode although tent trains the network
    assert not any(m.training for m in net.modules() if isinstance(m, nn.Dropout2d))


def test_episodic_tent_restores_the_network_before_every_batch():
    x, y = images(seed=1), images(seed=2)
    episodic = build_tta(tiny_deeplab(), "tent", lr=1e-2, steps=2, episodic=True)
    first = episodic(x)["out"]
    episodic(y)
    torch.testing.assert_close(episodic(x)["out"], first, rtol=0, atol=0)
    online = build_tta(tiny_deeplab(), "tent", lr=1e-2, steps=2)
    online(x)
    online(y)
    assert not torch.equal(online(x)["out"], first)


def test_source_statistics_option_keeps_running_stats_and_adapts_affine():
    net = tiny_deeplab()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    adapted = build_tta(net, "tent", lr=1e-2, bn_stats="source")
    x = images()
    adapted(x)
    for k, v in net.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k   # eval-mode batch norm: statistics untouched
    assert all(not m.training for m in net.modules())


def test_bad_method_and_statistics_are_refused():
    with pytest.raises(ValueError, match="unknown test-time adaptation"):
        build_tta(tiny_deeplab(), "cotta")
    with pytest.raises(ValueError, match="batch-norm statistics"):
        build_tta(tiny_deeplab(), "tent", bn_stats="running")


def test_image_miou_and_the_stream_plot(tmp_path):
    from proda.tta import image_miou, plot_stream
    labels = torch.tensor([[[0, 0], [1, 250]], [[2, 2], [2, 2]]]).numpy()
    preds = torch.tensor([[[0, 1], [1, 1]], [[2, 2], [2, 2]]]).numpy()
    # image 1: class 0 IoU 1/2, class 1 IoU 1/2 (the ignored pixel does not count); image 2: 100
    assert image_miou(labels, preds, 3) == [50.0, 100.0]
    plot_stream([50.0, float("nan"), 100.0], "t", str(tmp_path / "curve.png"))
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def target_tree(tmp_path_factory):
    """Two tiny Cityscapes-style val images and a reference-format checkpoint of the tiny net."""
    from proda.demo.synthetic import generate
    root = tmp_path_factory.mktemp("tta")
    generate(str(root / "data"), n_source=1, n_target_train=1, n_target_val=2, size=(64, 32), seed=0)
    ckpt = root / "model.pkl"
    save_tiny_checkpoint(ckpt, seed=0)
    common = ["--tgt_rootpath", str(root / "data" / "cityscapes"), "--tgt_img_size", "64,32",
              "--backbone_layers", "1,1,1,1", "--num_workers", "0", "--bn", "bn", "--device", "cpu",
              "--student_init", "random", "--resume_path", str(ckpt), "--logdir", str(root / "logs")]
    return root, common


@pytest.mark.parametrize("method", ["norm", "tent"])
def test_test_py_adapts_and_writes_results_curve_and_predictions(target_tree, method):
    import json
    from proda import test as proda_test
    root, common = target_tree
    out = root / f"{method}.json"
    proda_test.main(common + ["--tta", method, "--tta_episodic", "--bs", "1", "--tta_lr", "1e-2",
                              "--results_json", str(out), "--save_pred", str(root / f"pred_{method}")])
    results = json.loads(out.read_text())
    assert results["tta"]["method"] == method
    assert len(results["image_miou"]) == 2 and results["seconds_per_image"] > 0
    assert 0 <= results["mIoU"] <= 100
    assert (root / f"{method}_stream.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((root / f"pred_{method}").glob("*_pred.png"))) == 2


def test_test_py_without_adaptation_writes_no_curve(target_tree):
    import json
    from proda import test as proda_test
    root, common = target_tree
    out = root / "plain.json"
    proda_test.main(common + ["--results_json", str(out)])
    assert json.loads(out.read_text())["tta"] == {"method": "none"}
    assert not (root / "plain_stream.png").exists()
