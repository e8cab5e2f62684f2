"""No stale or mixed outputs: pseudo-label folders, prototype files and training runs
record their inputs, and a rerun with other inputs is refused with the `rm` command to run (or
starts over with --restart) instead of reusing or mixing outputs. The stage scripts stop on
every error, a missing config file included.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from proda import calc_prototype, generate_pseudo_label, train
from proda import test as proda_test
from proda.demo.synthetic import generate
from proda.manifest import MANIFEST
from full_disk import FailingFile
from proda_helpers import save_tiny_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"


def checkpoint(path, seed):
    """A tiny random model in the reference checkpoint format."""
    return save_tiny_checkpoint(path, seed=seed, iter=1, best_iou=np.float64(0.1))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny data, two different models A and B, and the shared flags."""
    root = tmp_path_factory.mktemp("proda_outputs")
    generate(str(root / "data"), n_source=2, n_target_train=2, n_target_val=1, size=(64, 32), seed=0)
    a = checkpoint(root / "A" / CKPT.format("best"), 0)
    b = checkpoint(root / "B" / CKPT.format("best"), 1)
    common = ["--src_rootpath", str(root / "data" / "GTA5"), "--tgt_rootpath", str(root / "data" / "cityscapes"),
              "--src_img_size", "64,32", "--tgt_img_size", "64,32", "--resize", "64", "--rcrop", "48,24",
              "--backbone_layers", "1,1,1,1", "--bs", "1", "--num_workers", "0", "--bn", "bn", "--device", "cpu",
              "--logdir", str(root / "logs" / "misc")]
    return root, a, b, common


def refused(capsys, entry, argv, *wanted):
    """The entry point exits 2 with one line holding every `wanted` text."""
    with pytest.raises(SystemExit) as exit_info:
        entry.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    for text in wanted:
        assert text in last, last


def stamps(folder):
    """Modification times of a folder's files."""
    return {name: os.stat(os.path.join(folder, name)).st_mtime_ns for name in os.listdir(folder)}


def test_pseudo_labels_of_another_model_are_refused_then_relabelled_with_restart(world, capsys):
    root, a, b, common = world
    flags = common + ["--soft", "--save_path", str(root / "Pseudo"), "--name", "soft"]
    out = str(root / "Pseudo" / "soft")
    generate_pseudo_label.main(flags + ["--resume_path", a])
    by_a = stamps(out)
    assert json.load(open(os.path.join(out, MANIFEST)))["options"]["soft"] is True
    os.remove(os.path.join(out, ".complete"))  # as if model A's run had been interrupted
    refused(capsys, generate_pseudo_label, flags + ["--resume_path", b], "checkpoint", f"rm -r {out}", "--restart")
    assert {k: v for k, v in stamps(out).items()} == {k: v for k, v in by_a.items() if k != ".complete"}
    refused(capsys, generate_pseudo_label, flags + ["--resume_path", a, "--flip"], "options.flip")
    generate_pseudo_label.main(flags + ["--resume_path", b, "--restart"])
    assert os.path.isfile(os.path.join(out, ".complete"))
    assert all(stamps(out)[name] != by_a[name] for name in by_a if name.endswith(".npy"))


def test_prototypes_record_their_checkpoint(world, capsys):
    root, a, b, common = world
    start = root / "warmup" / CKPT.format("best")
    start.parent.mkdir()
    start.write_bytes(open(a, "rb").read())
    flags = common + ["--resume_path", str(start)]
    calc_prototype.main(flags)
    protos = start.parent / "prototypes_on_cityscapes_from_deeplabv2"
    made = protos.stat().st_mtime_ns
    calc_prototype.main(flags)  # same inputs: nothing to do
    assert protos.stat().st_mtime_ns == made
    start.write_bytes(open(b, "rb").read())  # the warm-up model was retrained
    refused(capsys, calc_prototype, flags, str(protos), f"rm {protos}")
    stage1 = common + ["--stage", "stage1", "--resume_path", str(start), "--ema", "--proto_rectify",
                       "--student_init", "random", "--max_iters", "1", "--logdir", str(root / "logs" / "s1")]
    refused(capsys, train, stage1, "another checkpoint", f"rm {protos}")
    calc_prototype.main(flags + ["--restart"])
    assert protos.stat().st_mtime_ns != made


def test_a_finished_run_with_changed_inputs_is_not_called_finished(world, capsys):
    root, a, b, common = world
    start = root / "warmup2" / CKPT.format("best")
    start.parent.mkdir()
    start.write_bytes(open(a, "rb").read())
    logdir = str(root / "logs" / "run")
    flags = common + ["--stage", "src_only", "--student_init", "random", "--resume_path", str(start),
                      "--max_iters", "1", "--logdir", logdir, "--lr", "1e-3"]
    train.main(flags)
    current = os.path.join(logdir, CKPT.format("current"))
    made = os.stat(current).st_mtime_ns
    train.main(flags + ["--num_workers", "1", "--print_interval", "7"])  # only where/how: still finished
    refused(capsys, train, flags + ["--lr", "2e-3"], "options.lr", f"rm -r {logdir}", "--restart")
    start.write_bytes(open(b, "rb").read())  # the model it started from changed
    refused(capsys, train, flags, "files.resume_path", f"rm -r {logdir}")
    assert os.stat(current).st_mtime_ns == made


def test_scripts_stop_when_a_config_is_missing(tmp_path):
    env = dict(os.environ, SRC="synthia", CFG_DIR=os.path.join(REPO, "configs", "demo"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_stage1.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: config {REPO}/configs/demo/syn2city_stage1.py not found (CFG_DIR={REPO}/configs/demo, SRC=synthia)"]
    assert "+ " not in proc.stdout  # nothing ran


def test_scripts_stop_on_a_bad_config_value(tmp_path):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    for step in ["stage1", "stage1_pseudo", "stage1_prototypes", "warmup"]:
        (cfg / f"gta2city_{step}.py").write_text(f'_base_ = "{REPO}/configs/demo/gta2city_{step}.py"\nbs = 0\n')
    env = dict(os.environ, SRC="gta5", CFG_DIR=str(cfg), PYTHON=sys.executable)
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_stage1.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--bs 0 is out of range" in proc.stderr
    assert "Traceback" not in proc.stderr and "ProDA stage 1" not in proc.stdout


def test_the_shell_helpers_modules_do_not_import_torch():
    """proda.pipeline checks options and manifests several times a stage: no torch import."""
    code = "import sys, proda.options, proda.manifest, proda.files; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- full and read-only disks
# Simulated at the OS boundary, in-process (as root, chmod stops nothing): os.fdopen (the file of
# every atomic write) and io.open (tensorboard's event writer) raise the OSError a full disk or a
# read-only file system raises, for the matching paths only, once the run has written its first
# checkpoint (mid-run), or from the start.

def failing_disk(monkeypatch, pattern, error_number, budget=100, after=None):
    """Writes to files whose path (or target path, for atomic writes) contains `pattern` fail with
    `error_number`, once the file `after` exists (None: at once)."""
    import builtins
    import io
    real_fdopen, real_open = os.fdopen, io.open

    def active(path):
        return pattern in str(path) and (after is None or os.path.exists(after))

    def fdopen(fd, *a, **kw):
        f = real_fdopen(fd, *a, **kw)
        path = os.readlink(f"/proc/self/fd/{fd}")
        return FailingFile(f, error_number, budget) if active(path) else f

    def open_(file, mode="r", *a, **kw):
        if isinstance(file, (str, bytes, os.PathLike)) and any(m in mode for m in "wax+") and active(file):
            raise OSError(error_number, os.strerror(error_number), str(file))
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(builtins, "open", open_)


def no_temp_or_empty_files(folder):
    """Nothing half-written under `folder`: no temporary file of an atomic write, no 0-byte file
    (the lock file, which is rewritten in place, excepted)."""
    bad = []
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if name.startswith(".tmp_") or (os.path.getsize(path) == 0 and name != ".lock"):
                bad.append(path)
    return bad


def test_a_full_disk_during_a_checkpoint_write_names_the_path_and_the_space(tmp_path, monkeypatch):
    """torch.save turned ENOSPC into "RuntimeError: [enforce fail at inline_container.cc] unexpected
    pos"; atomic_write reports the OSError it got, the space, and leaves the previous file intact."""
    from proda.utils import atomic_save
    path = str(tmp_path / "ckpt.pkl")
    atomic_save({"w": torch.arange(10_000.0)}, path)
    before = open(path, "rb").read()
    failing_disk(monkeypatch, "ckpt.pkl", 28, budget=4096)
    with pytest.raises(OSError) as info:
        atomic_save({"w": torch.zeros(10_000)}, path)
    text = str(info.value)
    assert info.value.errno == 28 and path in text and f"it needs about {os.path.getsize(path) / 1e3:.1f} kB" in text and " free in " in text
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["ckpt.pkl"]


# (name, entry, file pattern, errno, mid-run, text of the last line)
DISK_CASES = [
    ("checkpoint-disk-full", "train", "current_model.pkl", 28, False, "no space left on the device to write"),
    ("checkpoint-disk-full-mid-run", "train", "current_model.pkl", 28, True, "B free in"),
    ("checkpoint-read-only-mid-run", "train", "_model.pkl", 30, True, "is on a read-only file system"),
    ("tensorboard-read-only-mid-run", "train", "events.out.tfevents", 30, True, "Read-only file system"),
    ("save-pred-disk-full", "test", "_pred.png", 28, False, "no space left on the device to write"),
]


SLOW_DISK_CASES = {"tensorboard-read-only-mid-run"}  # its writer flushes at the end: a whole run


@pytest.mark.parametrize("name, entry, pattern, error_number, mid_run, text",
                         [pytest.param(*c, id=c[0], marks=pytest.mark.slow if c[0] in SLOW_DISK_CASES else ())
                          for c in DISK_CASES])
def test_full_and_read_only_disks_end_in_one_line(world, capsys, monkeypatch, name, entry, pattern,
                                                  error_number, mid_run, text):
    root, a, _, common = world
    logdir = str(root / "logs" / f"disk_{name}")
    flags = common + ["--logdir", logdir]
    after = os.path.join(logdir, CKPT.format("current")) if mid_run else None
    if entry == "train":
        flags += ["--stage", "src_only", "--student_init", "random", "--resume_path", a, "--max_iters", "2",
                  "--val_interval", "1"]
        run, out = train, logdir
    else:
        out = str(root / f"preds_{name}")
        flags += ["--resume_path", a, "--save_pred", out]
        run = proda_test
    failing_disk(monkeypatch, pattern, error_number, after=after)
    with pytest.raises(SystemExit) as exit_info:
        run.main(flags)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and "Traceback" not in err and "Logging error" not in err, err[-3000:]
    assert text in err.strip().splitlines()[-1], err[-1000:]
    assert not no_temp_or_empty_files(out) and not no_temp_or_empty_files(logdir)
    if mid_run and "_model" in pattern:  # the checkpoint written before the disk failed is intact
        assert torch.load(after, weights_only=True)["iter"] >= 1


@pytest.mark.slow  # three starts of a training run: ~15 s on a loaded 2-core machine
def test_a_finished_run_in_a_read_only_folder_is_reported_finished(world, capsys, monkeypatch):
    root, a, _, common = world
    logdir = str(root / "logs" / "finished_ro")
    flags = common + ["--stage", "src_only", "--student_init", "random", "--resume_path", a, "--logdir", logdir,
                      "--max_iters", "1"]
    train.main(flags)
    files = stamps(logdir)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p).startswith(logdir) and mode & os.W_OK
                        else real_access(p, mode, **kw))
    failing_disk(monkeypatch, logdir, 30)  # anything written there fails, as on a read-only mount
    train.main(flags)  # no error: nothing to do
    assert "training already finished" in capsys.readouterr().err
    refused(capsys, train, flags[:-1] + ["2"], f"--logdir {logdir} is not writable")  # more to do: refused
    assert stamps(logdir) == files


# ----------------------------------------------------------------------------- one run per log dir

def test_a_second_run_into_a_busy_logdir_is_refused_and_a_killed_ones_lock_does_not_block(world, capsys):
    """The first run here is a real second process holding the log dir's lock (what train does
    first); the second is this process's train.main. Killing the holder frees the folder."""
    import signal
    import time
    root, a, _, common = world
    logdir = str(root / "logs" / "busy")
    os.makedirs(logdir)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from proda.files import FolderLock; "
         "FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)", logdir],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        flags = common + ["--stage", "src_only", "--student_init", "random", "--resume_path", a, "--max_iters", "1",
                          "--logdir", logdir]
        refused(capsys, train, flags, f"--logdir {logdir} is in use by another run", f"pid {holder.pid} on host",
                f"time.sleep(120)' {logdir}")  # its command line
        assert not os.path.exists(os.path.join(logdir, CKPT.format("current")))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.1)
    train.main(flags)  # the dead holder's lock file is still there; its lock is not
    assert os.path.isfile(os.path.join(logdir, CKPT.format("current")))
