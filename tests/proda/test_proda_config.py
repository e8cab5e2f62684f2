"""Config files, the shipped configs, the stage-script helpers and the synthetic demo data."""
import glob
import os
import subprocess
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io as sio
from PIL import Image

from proda.config import Config, ConfigError
from proda.demo import synthetic
from proda.options import parse_opt
from proda.pipeline import Settings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.py"), recursive=True))


def write(folder, name, text):
    """Write a config file and return its path."""
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return str(path)


# ----------------------------------------------------------------------------- config files

def test_base_chain_later_files_win(tmp_path):
    write(tmp_path, "a.py", 'lr = 0.1\nbs = 8\nname = "a"\n')
    write(tmp_path, "b.py", '_base_ = "a.py"\nlr = 0.2\n')
    write(tmp_path, "x.py", 'bs = 2\n')
    c = write(tmp_path, "c.py", '_base_ = ["b.py", "x.py"]\nname = "c"\n_private = 3\nimport os\n')
    cfg = Config.fromfile(c)
    assert dict(cfg) == {"lr": 0.2, "bs": 2, "name": "c"}  # no _private, no module
    assert cfg.lr == 0.2


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.py", '_base_ = "b.py"\n')
    b = write(tmp_path, "b.py", '_base_ = "a.py"\n')
    with pytest.raises(ConfigError, match="cycle"):
        Config.fromfile(b)


def test_override_order_defaults_file_command_line(tmp_path):
    path = write(tmp_path, "c.py", 'lr = 0.5\nrce = True\nrcrop = [64, 32]\n')
    default = parse_opt([])
    assert default.lr == 1e-4 and default.rce is False and default.bs == 4
    from_file = parse_opt(["--config", path])
    assert from_file.lr == 0.5 and from_file.rce is True and from_file.rcrop == [64, 32]
    assert from_file.bs == 4  # untouched options keep their defaults
    flags = parse_opt(["--config", path, "--lr", "0.25", "--rcrop", "32,16"])
    assert flags.lr == 0.25 and flags.rcrop == [32, 16] and flags.rce is True


def bad_config_message(tmp_path, capsys, text):
    """parse_opt on a config with `text`: exit status and the error line it prints."""
    path = write(tmp_path, "bad.py", text)
    with pytest.raises(SystemExit) as exc:
        parse_opt(["--config", path])
    lines = capsys.readouterr().err.strip().splitlines()
    return exc.value.code, lines


def test_unknown_key_exits_2_with_one_line(tmp_path, capsys):
    code, lines = bad_config_message(tmp_path, capsys, 'lr = 0.1\nlearning_rate = 0.1\n')
    assert code == 2
    assert len(lines) == 1 and "learning_rate" in lines[0]


@pytest.mark.parametrize("text, key", [('lr = "fast"\n', "lr"), ('rce = 1\n', "rce"),
                                       ('bs = 2.5\n', "bs"), ('stage = "stage9"\n', "stage")])
def test_wrong_type_names_the_option(tmp_path, capsys, text, key):
    code, lines = bad_config_message(tmp_path, capsys, text)
    assert code == 2
    assert len(lines) == 1 and f"'{key}'" in lines[0]


# ----------------------------------------------------------------------------- shipped configs

@pytest.mark.parametrize("text, names", [
    ("lr = lambda: 0.1\n", ["'lr'", "function"]),
    ("def schedule():\n    return 1\n", ["'schedule'", "function"]),
    ("class Stage:\n    pass\n", ["'Stage'", "type"]),
    ("from math import sqrt\n", ["'sqrt'"]),
    ("rcrop = [64, object()]\n", ["'rcrop'", "list"]),
])
def test_values_that_are_not_data_are_refused_not_dropped(tmp_path, capsys, text, names):
    """A config binding a public name to code was dropped silently and the default used."""
    code, lines = bad_config_message(tmp_path, capsys, text)
    assert code == 2 and len(lines) == 1 and "bad.py" in lines[0]
    assert all(n in lines[0] for n in names), lines


def test_private_helpers_and_modules_stay_allowed(tmp_path):
    path = write(tmp_path, "c.py", "import math\n_half = lambda x: x / 2\nlr = _half(math.pi) * 1e-4\n")
    assert dict(Config.fromfile(path)) == {"lr": 3.141592653589793 / 2 * 1e-4}


@pytest.mark.parametrize("text, name", [("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
                                        ("lr = float('inf')\n", "--lr"), ("lr = float('nan')\n", "--lr")])
def test_config_that_interrupts_or_sets_inf_ends_in_one_line(tmp_path, capsys, text, name):
    code, lines = bad_config_message(tmp_path, capsys, text)
    assert code == 2 and len(lines) == 1 and name in lines[0], lines


def test_every_reference_and_demo_config_is_shipped():
    names = {os.path.relpath(p, os.path.join(REPO, "configs")) for p in SHIPPED}
    steps = ["base", "warmup", "stage1_pseudo", "stage1_prototypes", "stage1",
             "stage2_pseudo", "stage2", "stage3_pseudo", "stage3"]
    for prefix in ("gta2city", "syn2city"):
        assert {f"{prefix}_{s}.py" for s in steps} <= names
    assert {f"demo/gta2city_{s}.py" for s in steps} <= names
    assert {"src_only_gta5.py", "src_only_synthia.py", "src_only_cityscapes.py",
            "demo/src_only.py"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: os.path.relpath(p, REPO))
def test_shipped_config_parses(path):
    opt = parse_opt(["--config", path])
    assert opt.n_class in (19, 16)
    assert ("syn2city" in path or "synthia" in path) == (opt.src_dataset == "synthia")


def load(name):
    """Options of a shipped config."""
    return parse_opt(["--config", os.path.join(REPO, "configs", name)])


def test_reference_stage_settings():
    warm = load("gta2city_warmup.py")
    assert (warm.stage, warm.freeze_bn, warm.gan, warm.lr, warm.adv, warm.no_resume) == \
        ("warm_up", True, "LS", 2.5e-4, 0.01, True)
    s1 = load("gta2city_stage1.py")
    assert s1.used_save_pseudo and s1.ema and s1.proto_rectify and s1.moving_prototype and s1.rce
    assert (s1.proto_consistW, s1.regular_w, s1.path_soft) == (10.0, 0.1, "Pseudo/gta2citylabv2_warmup_soft")
    assert load("syn2city_stage1.py").regular_w == 0  # the README's SYNTHIA command has no --regular_w
    for prefix in ("gta2city", "syn2city"):
        s2, s3 = load(f"{prefix}_stage2.py"), load(f"{prefix}_stage3.py")
        for s in (s2, s3):
            assert (s.S_pseudo, s.threshold, s.distillation, s.lr, s.student_init) == (1.0, 0.95, 1.0, 6e-4, "simclr")
            assert s.finetune and s.bn_clr and s.used_save_pseudo
        assert s2.no_resume and not s2.ema_bn
        assert s3.ema_bn and not s3.no_resume
        p3 = load(f"{prefix}_stage3_pseudo.py")
        assert p3.flip and p3.bn_clr and p3.student_init == "simclr"
        assert load(f"{prefix}_stage1_pseudo.py").soft


def test_synthia_stage2_and_3_use_the_intended_folders():
    """The README points SYNTHIA stage 2 at syn2citylabv2_stage2 where the stage-1 model is meant."""
    s1 = load("syn2city_stage1.py")
    for name in ("syn2city_stage2_pseudo.py", "syn2city_stage2.py"):
        assert os.path.dirname(load(name).resume_path) == os.path.join("logs", s1.name)
    s2 = load("syn2city_stage2.py")
    assert os.path.dirname(load("syn2city_stage3.py").resume_path) == os.path.join("logs", s2.name)
    assert load("syn2city_stage2.py").path_LP == os.path.join("Pseudo", load("syn2city_stage2_pseudo.py").name)
    assert load("syn2city_stage3.py").path_LP == os.path.join("Pseudo", load("syn2city_stage3_pseudo.py").name)


def test_demo_runs_the_reference_losses_under_demo_root():
    for step in ("stage1", "stage2", "stage3"):
        real, demo = load(f"gta2city_{step}.py"), load(f"demo/gta2city_{step}.py")
        for key in ("stage", "rce", "regular_w", "proto_consistW", "ema", "proto_rectify", "S_pseudo",
                    "threshold", "distillation", "bn_clr", "ema_bn", "no_resume", "student_init"):
            assert getattr(demo, key) == getattr(real, key), (step, key)
        assert demo.backbone_layers == [1, 1, 1, 1]
        assert demo.max_iters > 0 and demo.train_iters == demo.max_iters
        for key in ("resume_path", "src_rootpath", "tgt_rootpath", "logdir", "path_soft", "path_LP", "simclr_path"):
            assert getattr(demo, key).startswith("demo" + os.sep), (step, key)


# ----------------------------------------------------------------------------- stage scripts

def bash(script, env=None):
    """Run a bash snippet in the repository with proda_lib.sh sourced."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "NGPU")}
    full_env.update(env or {})
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source scripts/proda_lib.sh; {script}"],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=60)


def test_scripts_are_valid_bash():
    for path in glob.glob(os.path.join(REPO, "scripts", "*.sh")):
        assert subprocess.run(["bash", "-n", path], capture_output=True).returncode == 0, path


@pytest.mark.parametrize("devices, expected", [("0,1,2,3", "4"), ("1", "1"), ("", "0"), ("-1", "0")])
def test_gpu_count_follows_cuda_visible_devices(devices, expected):
    assert str(Settings.from_environ({"CUDA_VISIBLE_DEVICES": devices}).gpu_count()) == expected


def test_config_choice_and_resolved_paths():
    result = bash('pipeline configs stage2; pipeline paths best_model --config "$(pipeline configs stage1)"; '
                  'pipeline paths pseudo_labels --config "$(pipeline configs stage1_pseudo)"',
                  {"SRC": "synthia", "LOG_DIR": ""})
    cfg_file, best, pseudo = result.stdout.split()
    assert cfg_file.endswith("configs/syn2city_stage2.py")
    assert best == os.path.join(os.getcwd(), "logs", "syn2citylabv2_stage1Denoise",
                                "from_synthia_to_cityscapes_on_deeplabv2_best_model.pkl")
    assert pseudo == os.path.join(os.getcwd(), "Pseudo", "syn2citylabv2_warmup_soft")
    assert bash("pipeline configs stage1", {"SRC": "city"}).returncode == 2


def test_stage1_without_warmup_checkpoint_stops_with_one_line(tmp_path):
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_stage1.sh")], cwd=tmp_path,
                            env={**os.environ, "WARMUP_CKPT": "missing/warmup.pkl"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing/warmup.pkl" in lines[0] and "not found" in lines[0]


# ----------------------------------------------------------------------------- synthetic data

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Three source and three + two target scenes of 64x32."""
    out = str(tmp_path_factory.mktemp("synthetic"))
    assert synthetic.generate(out, n_source=3, n_target_train=3, n_target_val=2, size=(64, 32), seed=5)
    return out


def test_generator_writes_the_gta5_layout(tiny_data):
    root = os.path.join(tiny_data, "GTA5")
    names = [f"{i:05d}.png" for i in (1, 2, 3)]
    assert sorted(os.listdir(os.path.join(root, "images"))) == names
    assert sorted(os.listdir(os.path.join(root, "labels"))) == names
    split = sio.loadmat(os.path.join(root, "split.mat"))
    ids = np.concatenate([split[k][:, 0] for k in ("trainIds", "valIds", "testIds")])
    assert sorted(ids.tolist()) == [1, 2, 3]
    img = Image.open(os.path.join(root, "images", names[0]))
    lbl = Image.open(os.path.join(root, "labels", names[0]))
    assert img.mode == "RGB" and img.size == (64, 32) and lbl.mode == "P" and lbl.size == (64, 32)
    ids = set(np.unique(np.asarray(lbl)).tolist())
    assert ids <= set(synthetic.SCENE_LABEL_IDS)  # Cityscapes label ids, no void in the renders
    assert {synthetic.ROAD, synthetic.SKY} <= ids


def test_generator_writes_the_cityscapes_layout(tiny_data):
    root = os.path.join(tiny_data, "cityscapes")
    for split, cities, n in (("train", synthetic.TRAIN_CITIES, 3), ("val", synthetic.VAL_CITIES, 2)):
        images = sorted(glob.glob(os.path.join(root, "leftImg8bit", split, "*", "*_leftImg8bit.png")))
        assert len(images) == n
        assert {os.path.basename(os.path.dirname(p)) for p in images} <= set(cities)
        for path in images:
            city = os.path.basename(os.path.dirname(path))
            stem = os.path.basename(path)[:-len("_leftImg8bit.png")]
            assert stem.startswith(city + "_") and len(stem.split("_")) == 3
            label = os.path.join(root, "gtFine", split, city, stem + "_gtFine_labelIds.png")
            ids = set(np.unique(np.asarray(Image.open(label))).tolist())
            assert ids <= set(synthetic.SCENE_LABEL_IDS) | {synthetic.EGO_VEHICLE}
            assert synthetic.EGO_VEHICLE in ids  # the bonnet, void in Cityscapes


def test_loaders_read_the_synthetic_data_as_train_ids(tiny_data):
    from proda.data import Cityscapes_loader, GTA5_loader
    opt = parse_opt(["--src_rootpath", os.path.join(tiny_data, "GTA5"),
                     "--tgt_rootpath", os.path.join(tiny_data, "cityscapes"),
                     "--src_img_size", "64,32", "--tgt_img_size", "64,32"])
    source = GTA5_loader(opt, None)[0]["label"].numpy()
    target = Cityscapes_loader(opt, None, split="val")[0]["label"].numpy()
    for lbl in (source, target):
        values = set(np.unique(lbl).tolist())
        assert values <= {0, 1, 2, 5, 7, 8, 9, 10, 11, 13, 250} and 0 in values and 10 in values  # road, sky
    assert (target == 250).any()  # the ego vehicle is ignored


def test_generator_is_deterministic_and_skips_a_complete_set(tmp_path, tiny_data):
    again = str(tmp_path / "again")
    synthetic.generate(again, n_source=3, n_target_train=3, n_target_val=2, size=(64, 32), seed=5)
    for rel in ("GTA5/images/00002.png", "GTA5/labels/00002.png"):
        a = np.asarray(Image.open(os.path.join(tiny_data, rel)))
        assert np.array_equal(a, np.asarray(Image.open(os.path.join(again, rel))))
    assert not synthetic.generate(again, n_source=3, n_target_train=3, n_target_val=2, size=(64, 32), seed=5)
    other, _ = synthetic.render_scene((6, 0, 2), (64, 32), synthetic.GAME)
    same, _ = synthetic.render_scene((5, 0, 2), (64, 32), synthetic.GAME)
    assert np.array_equal(same, np.asarray(Image.open(os.path.join(tiny_data, "GTA5/images/00002.png"))))
    assert not np.array_equal(other, same)


def test_target_renders_differ_from_source_renders_of_the_same_scene():
    """The domains share the scene model, not the appearance."""
    src_img, src_lbl = synthetic.render_scene((1, 0, 0), (128, 64), synthetic.GAME)
    tgt_img, tgt_lbl = synthetic.render_scene((1, 0, 0), (128, 64), synthetic.PHOTO)
    assert src_img.shape == tgt_img.shape == (64, 128, 3)
    # photo: sensor noise and grain make neighbouring road pixels differ more
    roughness = []
    for img, lbl in ((src_img, src_lbl), (tgt_img, tgt_lbl)):
        road = (lbl == synthetic.ROAD)[:, 1:] & (lbl == synthetic.ROAD)[:, :-1]
        roughness.append(np.abs(np.diff(img.astype(float), axis=1)).sum(2)[road].mean())
    assert roughness[1] > 1.5 * roughness[0]
