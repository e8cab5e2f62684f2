"""ProDA's ablation (Table 3) as configs: each row resolves to its components, and a row runs end to end."""
import glob
import os

import pytest

from proda import generate_pseudo_label, train
from proda.options import parse_opt
from proda.pseudo_labels import saved_pseudo_labels
from proda.utils import load_checkpoint
from proda_helpers import save_tiny_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ABLATION = os.path.join(REPO, "configs", "ablation")
CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"

ST = dict(stage="stage1", used_save_pseudo=True, proto_rectify=False, moving_prototype=False, ema=False,
          rce=False, proto_consistW=0.0, regular_w=0.0, threshold=0.95)
STAGE1 = dict(stage="stage1", used_save_pseudo=True, proto_rectify=True, moving_prototype=True, ema=True, rce=True,
              proto_consistW=10.0, regular_w=0.1)
DISTILL = dict(stage="stage2", used_save_pseudo=True, distillation=1.0, S_pseudo=1.0, threshold=0.95, finetune=True,
               lr=6e-4, student_init="simclr", bn_clr=True, no_resume=True)
# row -> the options that switch its components (the flags of docs/proda.md's ablation table)
ROWS = {
    "gta2city_source_only": dict(stage="src_only", student_init="imagenet", no_resume=True, adv=0.01),
    "gta2city_warmup": dict(stage="warm_up", student_init="imagenet", no_resume=True, adv=0.01, gan="LS"),
    "gta2city_st_pseudo": dict(name="gta2citylabv2_warmup", soft=False, flip=False, no_droplast=True),
    "gta2city_st": ST,
    "gta2city_st_sce": {**ST, "rce": True},
    "gta2city_st_sce_pd": {**STAGE1, "proto_consistW": 0.0, "regular_w": 0.0},
    "gta2city_st_sce_pd_sl": STAGE1,
    "gta2city_no_regular": {**STAGE1, "regular_w": 0.0},
    "gta2city_distill_imagenet": {**DISTILL, "student_init": "imagenet", "bn_clr": False},
    "gta2city_distill_simclr": DISTILL,
    "gta2city_distill_simclr_twice": {**DISTILL, "stage": "stage3", "no_resume": False, "ema_bn": True},
}


def test_every_ablation_config_is_in_the_table():
    files = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ABLATION, "*.py")))
    assert files == sorted(ROWS)


@pytest.mark.parametrize("row", sorted(ROWS))
def test_an_ablation_config_resolves_to_its_components(row):
    opt = parse_opt(["--config", os.path.join(ABLATION, f"{row}.py")])
    got = {key: getattr(opt, key) for key in ROWS[row]}
    assert got == ROWS[row]
    assert (opt.src_dataset, opt.tgt_dataset, opt.n_class) == ("gta5", "cityscapes", 19)


def test_each_training_row_logs_under_its_own_name_and_reads_the_intended_labels():
    opts = {row: parse_opt(["--config", os.path.join(ABLATION, f"{row}.py")]) for row in ROWS}
    trained = [opt.name for row, opt in opts.items() if row != "gta2city_st_pseudo"]
    assert len(set(trained)) == len(trained)
    warmup_labels = os.path.join("Pseudo", opts["gta2city_st_pseudo"].name)  # hard labels of the warm-up model
    for row in ("gta2city_st", "gta2city_st_sce"):
        assert saved_pseudo_labels(opts[row]).kind == "hard" and saved_pseudo_labels(opts[row]).folder == warmup_labels
    for row in ("gta2city_st_sce_pd", "gta2city_st_sce_pd_sl"):  # the warm-up's soft labels, denoised online
        assert saved_pseudo_labels(opts[row]) == saved_pseudo_labels(opts["gta2city_st_sce_pd_sl"])
        assert saved_pseudo_labels(opts[row]).kind == "soft"


@pytest.fixture(scope="module")
def tree(synthetic_tree, tmp_path_factory):
    """A tiny synthetic GTA5 / Cityscapes pair, a tiny warm-up checkpoint, and the flags that shrink a run."""
    root = synthetic_tree("proda_ablation", n_source=2, n_target_train=2, n_target_val=2, size=(64, 32))
    warmup = save_tiny_checkpoint(root / "pretrained" / "warmup.pkl", seed=0)
    tiny = ["--src_rootpath", str(root / "data" / "GTA5"), "--tgt_rootpath", str(root / "data" / "cityscapes"),
            "--src_img_size", "64,32", "--tgt_img_size", "64,32", "--resize", "64", "--rcrop", "48,24",
            "--backbone_layers", "1,1,1,1", "--bs", "2", "--num_workers", "0", "--bn", "bn", "--device", "cpu",
            "--print_interval", "1", "--resume_path", warmup, "--save_path", str(root / "Pseudo")]
    return root, tiny


@pytest.mark.slow
def test_the_self_training_row_runs_end_to_end(tree):
    """Hard pseudo labels of the warm-up model, then two iterations of ST + SCE with no prototype file."""
    root, tiny = tree
    generate_pseudo_label.main(["--config", os.path.join(ABLATION, "gta2city_st_pseudo.py"), *tiny,
                                "--logdir", str(root / "logs" / "pseudo")])
    labels = root / "Pseudo" / "gta2citylabv2_warmup"
    assert len([f for f in os.listdir(labels) if f.endswith("_conf.npy")]) == 2
    logdir = root / "logs" / "st_sce"
    train.main(["--config", os.path.join(ABLATION, "gta2city_st_sce.py"), *tiny, "--path_LP", str(labels),
                "--threshold", "-1", "--max_iters", "2", "--val_interval", "2", "--logdir", str(logdir)])
    state = load_checkpoint(str(logdir / CKPT.format("current")))  # weights-only, as the trainer reads it
    assert state["resume"]["iter"] == 2 and "ema" not in state["resume"]
    assert not os.path.exists(root / "pretrained" / "prototypes_on_cityscapes_from_deeplabv2")
