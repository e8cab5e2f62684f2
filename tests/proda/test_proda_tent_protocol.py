"""Tent on segmentation as the tent paper ran it: source / BN / tent configs, one image at a time."""
import json
import os

import pytest

from proda import test as proda_test
from proda.options import parse_opt
from proda_helpers import save_tiny_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TTA = os.path.join(REPO, "configs", "tta")
SOURCE = "logs/gta2citylabv2_src_only/from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
ROWS = {
    "gta2city_source": dict(tta="none", bs=1, resume_path=SOURCE),
    "gta2city_norm": dict(tta="norm", bs=1, resume_path=SOURCE),
    "gta2city_tent": dict(tta="tent", bs=1, resume_path=SOURCE, tta_episodic=True, tta_steps=10, tta_optim="adam",
                          tta_lr=1e-3, tta_bn_stats="batch"),
}


@pytest.mark.parametrize("row", sorted(ROWS))
def test_a_tent_protocol_config_resolves_to_its_settings(row):
    opt = parse_opt(["--config", os.path.join(TTA, f"{row}.py")], entry="test")
    assert {key: getattr(opt, key) for key in ROWS[row]} == ROWS[row]
    assert (opt.src_dataset, opt.tgt_dataset, opt.n_class, opt.bn_clr) == ("gta5", "cityscapes", 19, False)
    assert opt.results_json == f"logs/gta2city_tta/{row.split('_')[-1]}.json"


def test_every_protocol_config_is_in_the_table():
    assert sorted(f[:-3] for f in os.listdir(TTA) if f.endswith(".py")) == sorted(ROWS)


@pytest.mark.slow
def test_the_tent_config_runs_episodically_on_each_image(synthetic_tree, tmp_path):
    root = synthetic_tree("tent_protocol", n_source=1, n_target_train=1, n_target_val=2, size=(64, 32))
    ckpt = save_tiny_checkpoint(tmp_path / "src_only.pkl", seed=0)
    out = tmp_path / "tent.json"
    proda_test.main(["--config", os.path.join(TTA, "gta2city_tent.py"), "--resume_path", ckpt,
                     "--tgt_rootpath", str(root / "data" / "cityscapes"), "--tgt_img_size", "64,32",
                     "--backbone_layers", "1,1,1,1", "--bn", "bn", "--device", "cpu", "--num_workers", "0",
                     "--tta_steps", "2", "--results_json", str(out), "--logdir", str(tmp_path / "log")])
    results = json.loads(out.read_text())
    assert results["tta"] == {"method": "tent", "lr": 1e-3, "steps": 2, "optim": "adam", "episodic": True,
                              "bn_stats": "batch", "batch_size": 1}
    assert len(results["image_miou"]) == 2  # one adaptation episode per val image
