"""Bad input ends in one clear line, never a traceback, and changes no existing file.

One parametrised row per bad option value, config file, output path, data file and
checkpoint: the entry point exits with the expected status (2: bad option or config, found
before any data or model is touched; 1: a bad file), its last stderr line is the message and
names the culprit, no "Traceback" is printed, and every file that existed before is unchanged.
"""
import os
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from proda import calc_prototype, generate_pseudo_label, test, train
from proda.demo.synthetic import generate
from proda_helpers import save_tiny_checkpoint

CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"
ENTRIES = {"train": train, "test": test, "gen": generate_pseudo_label, "proto": calc_prototype}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny data, a genuine tiny checkpoint, an earlier run's files, and the shared flags."""
    root = tmp_path_factory.mktemp("proda_inputs")
    generate(str(root / "data"), n_source=2, n_target_train=2, n_target_val=1, size=(32, 16), seed=0)
    save_tiny_checkpoint(root / "warmup" / CKPT.format("best"), iter=1, best_iou=0.1)
    (root / "logs").mkdir()
    (root / "logs" / "earlier.log").write_text("an earlier run's log\n")
    (root / "a_file").write_text("not a folder\n")
    return root


def common(root, data="data"):
    """Flags of a tiny CPU run on `root/data`."""
    return ["--src_rootpath", str(root / data / "GTA5"), "--tgt_rootpath", str(root / data / "cityscapes"),
            "--src_img_size", "32,16", "--tgt_img_size", "32,16", "--resize", "32", "--rcrop", "24,12",
            "--backbone_layers", "1,1,1,1", "--bs", "1", "--num_workers", "0", "--bn", "bn", "--device", "cpu",
            "--stage", "src_only", "--student_init", "random", "--logdir", str(root / "logs"),
            "--resume_path", str(root / "warmup" / CKPT.format("best")), "--max_iters", "1"]


def config(root, name, text):
    """A config file with `text`; returns the --config flags."""
    path = root / "cfg" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return ["--config", str(path)]


def truncate(path):
    """Cut a file to half its size (a crash while copying the data)."""
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


def own_data(root, name):
    """A private copy of the data for a row that corrupts it."""
    shutil.copytree(root / "data", root / name)
    return root / name


def first(folder, suffix):
    """First file (sorted) under `folder` ending in `suffix`: the one read first."""
    return sorted(str(p) for p in folder.rglob(f"*{suffix}"))[0]


def corrupt_image(root):
    data = own_data(root, "data_img")
    path = first(data / "cityscapes" / "leftImg8bit" / "train", ".png")
    truncate(path)
    return common(root, "data_img"), path


def corrupt_label(root):
    data = own_data(root, "data_lbl")
    path = first(data / "GTA5" / "labels", ".png")
    truncate(path)
    return common(root, "data_lbl"), path


def corrupt_soft_labels(root):
    soft = root / "soft"
    soft.mkdir()
    for img in (root / "data" / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"):
        np.save(soft / img.name.replace(".png", ".npy"), np.full((19, 2, 4), 1 / 19, np.float32))
        truncate(soft / img.name.replace(".png", ".npy"))
    args = common(root) + ["--stage", "stage1", "--used_save_pseudo", "--proto_rectify", "--ema",
                           "--path_soft", str(soft)]
    return args, str(soft)


def target_images(root):
    """The target training images of the shared data, in the loader's order."""
    return sorted((root / "data" / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))


def soft_labels(name, make):
    """A row: a soft pseudo-label folder whose k-th file holds make(k) (stage-1 flags)."""
    def row(root):
        soft = root / name
        soft.mkdir()
        for k, img in enumerate(target_images(root)):
            np.save(soft / img.name.replace(".png", ".npy"), make(k))
        first = soft / target_images(root)[0].name.replace(".png", ".npy")
        return common(root) + ["--stage", "stage1", "--used_save_pseudo", "--proto_rectify", "--ema",
                               "--path_soft", str(soft)], str(soft if name == "soft_mixed" else first)
    return ("train", row, 1)


def hard_labels(name, value):
    """A row: hard pseudo labels of `value` everywhere with confidence 1, threshold 0.95 (stage-2 flags)."""
    def row(root):
        folder = root / name
        folder.mkdir()
        for img in target_images(root):
            Image.fromarray(np.full((16, 32), value, np.uint8)).save(folder / img.name)
            np.save(folder / img.name.replace(".png", "_conf.npy"), np.ones((16, 32), np.float16))
        return common(root) + ["--used_save_pseudo", "--path_LP", str(folder), "--threshold", "0.95"], \
            str(folder / target_images(root)[0].name)
    return ("train", row, 1)


PROBS = np.full((19, 2, 4), 1 / 19, np.float32)


def bad_checkpoint(root, kind):
    path = root / f"bad_{kind}.pkl"
    if kind == "truncated":
        shutil.copy(root / "warmup" / CKPT.format("best"), path)
        truncate(path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "folder":
        path.mkdir()
    return common(root) + ["--resume_path", str(path)], str(path)


def corrupt_current(root):
    logdir = root / "logs_current"
    logdir.mkdir()
    path = logdir / CKPT.format("current")
    shutil.copy(root / "warmup" / CKPT.format("best"), path)
    truncate(path)
    return common(root) + ["--logdir", str(logdir)], str(path)


def wrong_prototypes(root):
    start = root / "proto_warmup"
    start.mkdir()
    shutil.copy(root / "warmup" / CKPT.format("best"), start / CKPT.format("best"))
    torch.save(torch.zeros(7, 256), start / "prototypes_on_cityscapes_from_deeplabv2")
    args = common(root) + ["--stage", "stage1", "--resume_path", str(start / CKPT.format("best")), "--ema",
                           "--proto_rectify"]
    return args, "prototypes_on_cityscapes_from_deeplabv2"


def flag(*extra, entry="train", code=2, names=None):
    """A row: flags appended to the common ones; the message must name `names` (default: the flag)."""
    return (entry, lambda root: (common(root) + list(extra), names or extra[0]), code)


def cfg_row(text, names, entry="train"):
    """A row: a config file with `text`."""
    return (entry, lambda root: (common(root) + config(root, str(abs(hash(text))), text), names), 2)


ROWS = {
    # options: exit 2 with the allowed range
    "bs0": flag("--bs", "0"), "bs-3": flag("--bs", "-3"), "lr-1": flag("--lr", "-1"), "lr_nan": flag("--lr", "nan"),
    "max_iters-1": flag("--max_iters", "-1"), "val_interval0": flag("--val_interval", "0"),
    "print_interval0": flag("--print_interval", "0"), "num_workers-1": flag("--num_workers", "-1"),
    "rcrop0": flag("--rcrop", "0,0"), "resize0": flag("--resize", "0"), "device_foo": flag("--device", "foo"),
    "device_tpu": flag("--device", "meta"), "device_cuda_index": flag("--device", "cuda:99"),
    "n_class16_gta5": flag("--n_class", "16"), "hflip2": flag("--hflip", "2"),
    "temperature0": flag("--proto_temperature", "0"), "epochs-1": flag("--epochs", "-1"),
    "train_iters0": flag("--train_iters", "0"), "tgt_img_size0": flag("--tgt_img_size", "0,16"),
    "threshold5": flag("--threshold", "5"), "momentum-0.1": flag("--proto_momentum", "-0.1"),
    "seed-1": flag("--seed", "-1"), "bs_text": flag("--bs", "abc"), "rcrop_text": flag("--rcrop", "abc"),
    "stage_foo": flag("--stage", "foo", names="--stage"), "layers0": flag("--backbone_layers", "0,1,1,1"),
    "unknown_flag": flag("--no_such_flag", names="--no_such_flag"),
    "test_bs0": flag("--bs", "0", entry="test"), "gen_device": flag("--device", "nonsense", entry="gen"),
    "proto_lr": flag("--lr", "-5", entry="proto"),
    # values legal to parse and fatal to a run
    "lr_inf": flag("--lr", "inf"), "lr_-inf": flag("--lr", "-inf"),
    "proto_temperature_inf": flag("--proto_temperature", "inf"),
    "test_tta_lr_inf": flag("--tta", "tent", "--tta_lr", "inf", entry="test", names="--tta_lr"),
    "test_tta_lr-1": flag("--tta", "tent", "--tta_lr", "-1", entry="test", names="--tta_lr"),
    "test_tta_lr_nan": flag("--tta", "tent", "--tta_lr", "nan", entry="test", names="--tta_lr"),
    "test_tta_steps0": flag("--tta", "tent", "--tta_steps", "0", entry="test", names="--tta_steps"),
    "test_tta_steps-1": flag("--tta", "tent", "--tta_steps", "-1", entry="test", names="--tta_steps"),
    "seed_2**32": flag("--seed", "4294967296"), "gen_seed_2**32": flag("--seed", "4294967296", entry="gen"),
    "bn_clr_without_simclr": flag("--bn_clr", "--student_init", "imagenet"),
    "test_bn_clr_without_simclr": flag("--bn_clr", "--student_init", "stage1", entry="test", names="--bn_clr"),
    # config files: exit 2 naming the file or the key
    "cfg_name_error": cfg_row("lr = undefined_name\n", "NameError"),
    "cfg_import_error": cfg_row("import no_such_module_xyz\n", "No module named"),
    "cfg_zero_division": cfg_row("lr = 1 / 0\n", "ZeroDivisionError"),
    "cfg_base_int": cfg_row("_base_ = 5\n", "_base_"),
    "cfg_base_list_int": cfg_row("_base_ = [1]\n", "_base_"),
    "cfg_syntax": cfg_row("lr = = 1\n", "not valid Python"),
    "cfg_unknown_key": cfg_row("no_such_option = 1\n", "no_such_option"),
    "cfg_wrong_type": cfg_row('bs = "two"\n', "'bs'"),
    "cfg_bad_value": cfg_row("lr = -1.0\n", "--lr"),
    "cfg_exit": cfg_row("raise SystemExit(3)\n", "SystemExit"),
    "cfg_missing_base": cfg_row('_base_ = "absent.py"\n', "absent.py"),
    "cfg_lr_inf": cfg_row("lr = float('inf')\n", "--lr"),
    "cfg_lambda": cfg_row("lr = lambda: 0.1\n", "'lr'"),
    "cfg_keyboard_interrupt": cfg_row("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
    "cfg_missing": ("train", lambda root: (common(root) + ["--config", str(root / "absent.py")], "absent.py"), 2),
    # outputs that cannot be written: exit 2 before any work
    "logdir_under_file": ("train", lambda root: (common(root) + ["--logdir", str(root / "a_file" / "logs")],
                                                 "--logdir"), 2),
    "save_path_under_file": ("gen", lambda root: (common(root) + ["--save_path", str(root / "a_file" / "P")],
                                                  "--save_path"), 2),
    "results_json_under_file": ("test", lambda root: (common(root) + ["--results_json",
                                                                      str(root / "a_file" / "r.json")],
                                                      "--results_json"), 2),
    "save_pred_under_file": ("test", lambda root: (common(root) + ["--save_pred", str(root / "a_file" / "p")],
                                                   "--save_pred"), 2),
    # data files: exit 1 naming the file
    "truncated_image": ("train", corrupt_image, 1),
    "truncated_label": ("train", corrupt_label, 1),
    "truncated_soft_npy": ("train", corrupt_soft_labels, 1),
    "missing_data_root": ("train", lambda root: (common(root, "absent_data"), "absent_data"), 1),
    "missing_soft_folder": ("train", lambda root: (common(root) + [
        "--stage", "stage1", "--used_save_pseudo", "--proto_rectify", "--ema", "--path_soft",
        str(root / "absent_soft")], "absent_soft"), 1),
    # pseudo labels that lie, refused when the run starts, naming the file
    "hard_label_100": hard_labels("lp_100", 100),
    "soft_label_5x3x3": soft_labels("soft_5x3x3", lambda k: np.full((5, 3, 3), 0.2, np.float32)),
    "soft_label_nan": soft_labels("soft_nan", lambda k: np.full_like(PROBS, np.nan)),
    "soft_label_inf": soft_labels("soft_inf", lambda k: np.where(np.arange(8).reshape(1, 2, 4) == 3, np.inf, PROBS)),
    "soft_label_negative": soft_labels("soft_neg", lambda k: PROBS - 1),
    "soft_label_int": soft_labels("soft_int", lambda k: np.zeros((19, 2, 4), np.int64)),
    "soft_label_shapes_differ": soft_labels("soft_mixed", lambda k: np.full((19, 2 + k, 4), 1 / 19, np.float32)),
    # checkpoints: exit 1 naming the file
    "truncated_checkpoint": ("train", lambda root: bad_checkpoint(root, "truncated"), 1),
    "tensor_checkpoint": ("train", lambda root: bad_checkpoint(root, "tensor"), 1),
    "folder_checkpoint": ("train", lambda root: bad_checkpoint(root, "folder"), 1),
    "missing_checkpoint": ("test", lambda root: (common(root) + ["--resume_path", str(root / "absent.pkl")],
                                                 "absent.pkl"), 1),
    "truncated_current": ("train", corrupt_current, 1),
    "prototypes_wrong_shape": ("train", wrong_prototypes, 2),
    # a schedule the run outlives, a loss gone NaN
    "max_iters_past_train_iters": flag("--max_iters", "6", "--train_iters", "2", names="--train_iters 2"),
    "diverging_lr": ("train", lambda root: (common(root) + ["--lr", "1e30", "--max_iters", "4", "--val_interval", "1",
                                                            "--logdir", str(root / "logs_diverge")], "diverged"), 2),
}


def snapshot(root):
    """Size and modification time of every file under root (but the rows' own run logs, which
    a run started in the same second appends to)."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("run_")}


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
ROWS_NO_CUDA = {"device_cuda": flag("--device", "cuda"), "gen_device_cuda": flag("--device", "cuda:0", entry="gen")}
ROWS.update(ROWS_NO_CUDA)


@pytest.mark.parametrize("row", [pytest.param(r, marks=NO_CUDA) if r in ROWS_NO_CUDA else r for r in ROWS])
def test_bad_input_ends_in_one_line(world, capsys, row):
    entry, make, code = ROWS[row]
    argv, names = make(world)
    before = snapshot(world)
    with pytest.raises(SystemExit) as exit_info:
        ENTRIES[entry].main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err[-2000:]
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert "error" in message and names in message, err[-2000:]
    after = snapshot(world)
    assert {p: v for p, v in after.items() if p in before} == before


def run_train(argv, capsys):
    """train.main(argv): (exit status, last stderr line); 0 when it returns."""
    return run_entry("train", argv, capsys)


def test_divergence_stops_before_a_checkpoint_and_keeps_the_last_good_one(world, capsys):
    """lr 1e6: one step leaves finite weights (gradients here are far below 1e30), so iteration 1 is
    checkpointed; a later loss or weight turns NaN or inf within 8 iterations: one line, exit 2, and the
    current checkpoint on disk is a finite one of an earlier iteration."""
    logdir = world / "logs_diverge_keep"
    code, line = run_train(common(world) + ["--lr", "1e6", "--max_iters", "8", "--val_interval", "1",
                                            "--logdir", str(logdir)], capsys)
    assert code == 2 and "diverged" in line and str(logdir) in line, line
    diverged_at = int(line.split("diverged at iteration ")[1].split()[0])
    current = torch.load(logdir / CKPT.format("current"), weights_only=False)
    assert current["iter"] <= diverged_at  # 'iter' is the next iteration: the diverged one was never saved
    assert all(torch.isfinite(v).all() for v in current["ResNet101"]["model_state"].values() if v.is_floating_point())


def test_continuing_a_finished_run_past_its_schedule_is_refused_with_the_command(world, capsys):
    """A run ended at --train_iters 2: --max_iters 4 would train at learning rate 0, refused with the command
    that trains 4 iterations of one schedule; that command works."""
    base = common(world)[:-2] + ["--logdir", str(world / "logs_continue")]
    assert run_train(base + ["--max_iters", "2", "--train_iters", "2"], capsys)[0] == 0
    code, line = run_train(base + ["--max_iters", "4", "--train_iters", "2"], capsys)
    assert code == 2 and "--train_iters 4 --max_iters 4 --restart" in line and "_last_model.pkl" in line, line
    code, line = run_train(base + ["--max_iters", "4", "--train_iters", "4"], capsys)
    assert code == 2 and "train_iters" in line and "--restart" in line, line
    assert run_train(base + ["--train_iters", "4", "--max_iters", "4", "--restart"], capsys)[0] == 0
    assert torch.load(world / "logs_continue" / CKPT.format("current"), weights_only=False)["iter"] == 5


def test_a_bad_pseudo_label_outside_the_start_sample_is_refused_when_read(world, capsys, monkeypatch):
    """Values are checked on a sample at the start and on every file when the loader reads it: with a
    sample of one file, the NaN file read in the first epoch ends the run in one line naming it."""
    from proda.data import pseudo_files
    monkeypatch.setattr(pseudo_files, "START_SAMPLE", 1)
    soft = world / "soft_late_nan"
    soft.mkdir()
    images = target_images(world)
    for k, img in enumerate(images):
        np.save(soft / img.name.replace(".png", ".npy"), np.full_like(PROBS, np.nan) if k == len(images) - 1 else PROBS)
    bad = str(soft / images[-1].name.replace(".png", ".npy"))
    code, line = run_train(common(world) + ["--stage", "src_only", "--used_save_pseudo", "--proto_rectify",
                                            "--path_soft", str(soft), "--max_iters", str(len(images)),
                                            "--logdir", str(world / "logs_late_nan")], capsys)
    assert code == 1 and bad in line and "[0, 1]" in line, line


def run_entry(entry, argv, capsys):
    """ENTRIES[entry].main(argv): (exit status, last stderr line); 0 when it returns."""
    try:
        ENTRIES[entry].main(argv)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    return code, (err.strip().splitlines() or [""])[-1]


@pytest.mark.parametrize("soft", [True, False], ids=["soft", "hard"])
def test_rerun_of_an_interrupted_folder_relabels_damaged_files(world, capsys, soft):
    """A cut .npy / .png left in the folder (a copy, a crash of an older version) is found by its header
    and relabelled; the intact files are kept as they are; the folder is complete again."""
    save = world / f"pseudo_rerun_{soft}"
    argv = common(world) + ["--save_path", str(save), "--name", "lp"] + (["--soft"] if soft else [])
    assert run_entry("gen", argv, capsys)[0] == 0
    folder = save / "lp"
    stems = [img.name[:-4] for img in target_images(world)]
    main = ".npy" if soft else ".png"
    damaged = [folder / (stems[0] + main)] + ([] if soft else [folder / (stems[0] + "_conf.npy")])
    kept = folder / (stems[1] + main)
    whole = {p: p.read_bytes() for p in damaged}
    kept_stat = kept.stat().st_mtime_ns
    for p in damaged:
        truncate(p)
    (folder / ".complete").unlink()  # interrupted
    assert run_entry("gen", argv, capsys)[0] == 0
    assert all(p.read_bytes() == whole[p] for p in damaged)  # relabelled by the same model: same bytes
    assert (folder / ".complete").exists() and kept.stat().st_mtime_ns == kept_stat


def test_failed_start_leaves_no_manifest_that_refuses_the_right_checkpoint(world, capsys):
    """A run that failed on a corrupt --resume_path before its first label left .manifest.json; the rerun
    with the right checkpoint was refused ('holds pseudo labels of other inputs') though no label existed."""
    save = world / "pseudo_bad_start"
    bad = world / "cut_for_gen.pkl"
    shutil.copy(world / "warmup" / CKPT.format("best"), bad)
    truncate(bad)
    argv = common(world) + ["--save_path", str(save), "--name", "lp"]
    code, line = run_entry("gen", argv[:-2] + ["--resume_path", str(bad), "--max_iters", "1"], capsys)
    assert code == 1 and str(bad) in line
    assert run_entry("gen", argv, capsys)[0] == 0
    assert (save / "lp" / ".complete").exists()


@pytest.mark.parametrize("lr, steps", [(float("inf"), 1), (float("nan"), 1), (-1.0, 1), (1e-3, 0)])
def test_build_tta_refuses_what_adapts_to_nonsense(lr, steps):
    """The library call behind --tta tent: an infinite rate adapted every batch norm to NaN without an error."""
    from proda.tta import build_tta
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="finite learning rate"):
        build_tta(net, "tent", lr=lr, steps=steps)


def test_a_nan_loss_with_finite_weights_trains_on_and_nan_weights_stop():
    """An all-ignored pseudo-label batch has a NaN cross-entropy and zero gradient (the reference logs nan
    and trains on): not a divergence. NaN weights are, on the next suspect or checkpointing iteration."""
    from types import SimpleNamespace
    from proda.guards import TrainingDiverged, check_step
    from proda.models.losses import cross_entropy2d
    logits = torch.randn(1, 19, 4, 4, requires_grad=True)
    loss = cross_entropy2d(input=logits, target=torch.full((1, 4, 4), 250, dtype=torch.long))
    loss.backward()
    assert torch.isnan(loss) and torch.equal(logits.grad, torch.zeros_like(logits))
    net = nn.Linear(2, 2)
    model, opt = SimpleNamespace(iter=5, nets=[net]), SimpleNamespace(val_interval=1000, lr=1e-4, logdir="L")
    check_step(model, opt, {"loss": loss.item()})  # finite weights: trains on
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    check_step(model, opt, {"loss": 1.0})  # finite loss, not a checkpointing iteration: not tested
    with pytest.raises(TrainingDiverged, match="diverged at iteration 5"):
        check_step(model, opt, {"loss": float("inf")})
    with pytest.raises(TrainingDiverged):
        check_step(SimpleNamespace(iter=999, nets=[net]), opt, {"loss": 1.0})  # checkpointing iteration
