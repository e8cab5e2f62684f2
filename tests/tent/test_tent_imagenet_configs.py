"""The ImageNet-C configs: the tent paper's protocol pinned (model, all corruptions and severities, all
50,000 images, SGD settings, batch 64), and the robust-trained AugMix model's config run end to end."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tent import cifar10c, conf, imagenetc
from tent.conf import ROBUSTBENCH_CORRUPTIONS, cfg

REPO = Path(__file__).resolve().parents[2]
PAPER = [f"cfgs/imagenet/pycls_r50_{m}.yaml" for m in ("source", "norm", "tent", "tent_offline")]
AUGMIX = [f"cfgs/imagenet/augmix_r50_{m}.yaml" for m in ("source", "norm", "tent")]

pytestmark = pytest.mark.usefixtures("fresh_cfg")


def load(path: str) -> None:
    """The shipped config, merged and checked."""
    conf.reset_cfg()
    conf.merge_from_file(str(REPO / path))
    conf.assert_and_infer_cfg()


@pytest.mark.parametrize("path", PAPER + AUGMIX)
def test_imagenet_configs_hold_the_papers_protocol(path):
    """15 corruptions x 5 severities, every image (NUM_EX -1), batch 64; tent: SGD, momentum 0.9, lr 0.00025."""
    load(path)
    assert cfg.MODEL.ARCH == ("pycls_R50" if "pycls" in path else "Hendrycks2020AugMix")
    assert (cfg.CORRUPTION.DATASET, cfg.CORRUPTION.NUM_EX, cfg.TEST.BATCH_SIZE) == ("imagenet", -1, 64)
    assert list(cfg.CORRUPTION.TYPE) == list(ROBUSTBENCH_CORRUPTIONS)
    assert sorted(cfg.CORRUPTION.SEVERITY) == [1, 2, 3, 4, 5]
    assert not cfg.MODEL.EPISODIC and cfg.SETTING == ("offline" if "offline" in path else "reset_each_shift")
    if cfg.MODEL.ADAPTATION == "tent":
        assert (cfg.OPTIM.METHOD, cfg.OPTIM.LR, cfg.OPTIM.MOMENTUM, cfg.OPTIM.STEPS) == ("SGD", 0.00025, 0.9, 1)


def test_standard_r50_configs_say_which_model_they_use():
    """The robustbench torchvision configs are named as such, beside the paper's."""
    for method in ("source", "norm", "tent"):
        head = (REPO / "cfgs" / "imagenet" / f"{method}.yaml").read_text().splitlines()[0]
        assert "Standard_R50" in head and f"pycls_r50_{method}.yaml" in head
        load(f"cfgs/imagenet/{method}.yaml")
        assert cfg.MODEL.ARCH == "Standard_R50"


@pytest.mark.slow
def test_augmix_config_runs_from_robustbenchs_file(tmp_path):
    """augmix_r50_source.yaml end to end: robustbench's Hendrycks2020AugMix file (a torchvision ResNet-50 state
    dict) from CKPT_DIR, weights-only, on a tiny ImageNet-C tree; its ImageNet labels reach the error."""
    import torchvision

    from tent import models

    ckpt = tmp_path / "ckpt" / "imagenet" / "corruptions" / "Hendrycks2020AugMix.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": torchvision.models.resnet50().state_dict()}, ckpt)
    model = models.load_robustbench_model("Hendrycks2020AugMix", str(tmp_path / "ckpt"), "imagenet")
    wnids = sorted(imagenetc.imagenet_classes())
    rng = np.random.default_rng(0)
    images = (rng.random((3, 224, 224, 3)) * 255).astype(np.uint8)
    with torch.no_grad():
        predicted = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1).tolist()
    for i, (image, label) in enumerate(zip(images, predicted)):
        path = tmp_path / "data" / "ImageNet-C" / "snow" / "2" / wnids[label] / f"{i}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, format="PNG")
    results = cifar10c.evaluate("ImageNet-C", [
        "--cfg", str(REPO / "cfgs" / "imagenet" / "augmix_r50_source.yaml"), "CORRUPTION.TYPE", "[snow]",
        "CORRUPTION.SEVERITY", "[2]", "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(tmp_path / "ckpt"),
        "SAVE_DIR", str(tmp_path / "out"), "DEVICE", "cpu"])
    assert results["source"][2]["snow"] == 0.0
