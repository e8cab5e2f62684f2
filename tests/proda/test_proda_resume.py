"""Exact resume: a run interrupted after a checkpoint and rerun with the same command
ends bit for bit where an uninterrupted run ends: every tensor of the current and best
checkpoints (weights, EMA network, optimisers, schedules, prototypes and counts, random state)
and every counter (iteration, best mIoU) has max abs diff 0.

The demo configs at tiny size (64x32 images, one block per ResNet stage). Interruptions: a
real SIGINT (exit 130, one line) and a SIGKILL of a subprocess, with --num_workers 0 and 2;
in-process, a run stopped by --max_iters and continued; a kill between the current and best
writes (repaired on resume) and one during a write (its temp file is removed).
"""
import collections
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from dacommon.files import interrupts_deferred
from proda import calc_prototype, generate_pseudo_label, train
from proda.utils import atomic_save
from tiny_configs import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CKPT = "from_gta5_to_cityscapes_on_deeplabv2_{}_model.pkl"


@pytest.fixture(scope="module")
def tree(synthetic_tree):
    """Tiny synthetic data and tiny versions of three demo configs."""
    root = synthetic_tree("proda_resume", n_source=6, n_target_train=6, n_target_val=2, size=(32, 16))
    for name, base in [("src_only", "src_only"), ("warmup", "gta2city_warmup"), ("stage1", "gta2city_stage1")]:
        (root / f"{name}.py").write_text(tiny_config(root, (32, 16), (24, 12), 12, f"{REPO}/configs/demo/{base}.py", bs=2))
    return root


def args(root, config, logdir, *extra):
    """Command-line flags of one run."""
    return ["--config", str(root / f"{config}.py"), "--logdir", str(root / "logs" / logdir), *extra]


def subprocess_train(flags):
    """Start `python -m proda.train` with one thread (bit-exact comparisons need equal threading)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    return subprocess.Popen([sys.executable, "-m", "proda.train", *flags], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_train(flags):
    """Run training to its end in a subprocess; returns it (asserting success)."""
    proc = subprocess_train(flags)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return proc


def interrupt_after_checkpoint(flags, logdir, sig, total=4, tries=3):
    """Start a run, send `sig` once its first current checkpoint exists; returns (status, stderr).

    The signal must land before the last iteration's checkpoint: a run that got it later (this
    test process was not scheduled in time on a loaded machine) tested nothing, so it is started
    again from scratch, up to `tries` times.
    """
    path = os.path.join(logdir, CKPT.format("current"))
    for _ in range(tries):
        shutil.rmtree(logdir, ignore_errors=True)
        proc = subprocess_train(flags)
        deadline = time.time() + 600
        while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
        if os.path.exists(path) and load(logdir, "current")["resume"]["iter"] < total:
            break
    return proc.returncode, err


class InterruptWhenPickled:
    """Pickles as an empty OrderedDict, sending this process a SIGINT on the way (mid torch.save)."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGINT)
        return collections.OrderedDict, ()


def test_ctrl_c_during_a_checkpoint_write_lands_after_it(tmp_path, python_sigint_handler):
    """The reproduced failure: SIGINT inside torch.save's zip writer became a RuntimeError and a
    traceback (exit 1); now the write completes and then the KeyboardInterrupt is raised."""
    path = str(tmp_path / "ckpt.pkl")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"w": torch.arange(3.0), "x": InterruptWhenPickled()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(3.0))
    assert os.listdir(tmp_path) == ["ckpt.pkl"]  # no temp file left
    assert signal.getsignal(signal.SIGINT) is before


class TerminateWhenPickled:
    """Pickles as an empty OrderedDict, sending this process a SIGTERM on the way (a preemption)."""

    def __reduce__(self):
        signal.raise_signal(signal.SIGTERM)
        return collections.OrderedDict, ()


def test_sigterm_during_a_checkpoint_set_lands_after_it(tmp_path):
    """Preemption is SIGTERM: held like Ctrl-C until the set is written, then delivered to the
    handler proda.runner.run installs (Terminated, exit 143), with no temp file left."""
    from proda import signals
    previous = signal.signal(signal.SIGTERM, signals._raise_terminated)
    try:
        with pytest.raises(signals.Terminated):
            with interrupts_deferred():
                atomic_save({"x": TerminateWhenPickled()}, str(tmp_path / "current.pkl"))
                atomic_save({"w": torch.ones(2)}, str(tmp_path / "best.pkl"))
        assert sorted(os.listdir(tmp_path)) == ["best.pkl", "current.pkl"]
        assert signal.getsignal(signal.SIGTERM) is signals._raise_terminated
        assert signals.interrupt_status(signals.Terminated()) == 143
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_waits_for_every_file_of_a_checkpoint_set(tmp_path, python_sigint_handler):
    """Nested holds share the outermost one: the interrupt comes after the last file."""
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            atomic_save({"x": InterruptWhenPickled()}, str(tmp_path / "current.pkl"))
            atomic_save({"w": torch.ones(2)}, str(tmp_path / "best.pkl"))
    assert sorted(os.listdir(tmp_path)) == ["best.pkl", "current.pkl"]
    with interrupts_deferred():  # a new hold starts clean
        pass


def max_abs_diff(a, b, where="checkpoint"):
    """Largest |a - b| over every tensor of two nested checkpoints; other values must be equal."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if a.dtype == torch.bool or not a.is_floating_point():
            return 0.0 if torch.equal(a, b) else float("inf")
        return (a - b).abs().max().item() if a.numel() else 0.0
    if isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        return max([max_abs_diff(a[k], b[k], f"{where}.{k}") for k in a], default=0.0)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        return max([max_abs_diff(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b))], default=0.0)
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0.0


def load(logdir, kind):
    """A checkpoint of a run, loaded safely."""
    return torch.load(os.path.join(logdir, CKPT.format(kind)), map_location="cpu", weights_only=True)


def run_diff(first, second):
    """Max abs diff over the current and the best checkpoints of two runs."""
    return max(max_abs_diff(load(first, "current"), load(second, "current")),
               max_abs_diff(load(first, "best"), load(second, "best")))


@pytest.fixture(scope="module")
def reference(tree):
    """Uninterrupted source-only run: 4 iterations, checkpoints at 1, 3 and 4."""
    flags = args(tree, "src_only", "ref", "--max_iters", "4", "--val_interval", "2")
    run_train(flags)
    return str(tree / "logs" / "ref"), flags


@pytest.mark.parametrize("sig, workers", [("SIGINT", "0"), pytest.param("SIGINT", "2", marks=pytest.mark.slow),
                                          pytest.param("SIGTERM", "0", marks=pytest.mark.slow)])
def test_sigint_then_rerun_equals_uninterrupted(tree, reference, sig, workers):
    """Ctrl-C, and SIGTERM as a cluster preempts (then requeues the same command)."""
    ref_dir, ref_flags = reference
    flags = args(tree, "src_only", f"{sig}{workers}", "--max_iters", "4", "--val_interval", "2",
                 "--num_workers", workers)
    logdir = str(tree / "logs" / f"{sig}{workers}")
    status, err = interrupt_after_checkpoint(flags, logdir, getattr(signal, sig))
    assert status == {"SIGINT": 130, "SIGTERM": 143}[sig], f"exit status {status}; stderr ends: {err[-2000:]}"
    lines = err.strip().splitlines()
    what = {"SIGINT": "interrupted", "SIGTERM": "terminated (SIGTERM)"}[sig]
    assert lines[-1].startswith(f"{what} at iteration ") and lines[-1].endswith(
        "; rerun the same command to resume")
    assert "Traceback" not in err and not [n for n in os.listdir(logdir) if n.startswith(".tmp_")]
    assert load(logdir, "current")["resume"]["iter"] < 4  # it really stopped early
    run_train(flags)
    assert run_diff(ref_dir, logdir) == 0.0


@pytest.mark.slow  # SIGINT's case runs by default; both resume from the same checkpoint files
def test_sigkill_then_rerun_equals_uninterrupted(tree, reference):
    ref_dir, _ = reference
    flags = args(tree, "src_only", "sigkill", "--max_iters", "4", "--val_interval", "2", "--num_workers", "2")
    logdir = str(tree / "logs" / "sigkill")
    status, _ = interrupt_after_checkpoint(flags, logdir, signal.SIGKILL)
    assert status == -signal.SIGKILL
    # a kill during a write leaves a temp file of the target: the rerun removes it
    stale = os.path.join(logdir, f".tmp_{CKPT.format('current')}.killed")
    open(stale, "wb").write(b"half a checkpoint")
    run_train(flags)
    assert not os.path.exists(stale)
    assert run_diff(ref_dir, logdir) == 0.0


def staged_equals_uninterrupted(root, config, extra, stop, total):
    """In-process: run to `stop`, continue to `total`; compare with a run straight to `total`.

    Returns the max abs diff and the path of a copy of the best file the stopped run wrote.
    """
    whole_dir, part_dir = str(root / "logs" / f"{config}_whole"), str(root / "logs" / f"{config}_part")
    train.main(args(root, config, f"{config}_whole", "--max_iters", str(total), *extra))
    part = args(root, config, f"{config}_part", *extra)
    train.main(part + ["--max_iters", str(stop)])
    assert load(part_dir, "current")["resume"]["iter"] == stop
    early_best = str(root / f"{config}_best_at_{stop}.pkl")
    shutil.copy(os.path.join(part_dir, CKPT.format("best")), early_best)
    train.main(part + ["--max_iters", str(total)])
    return run_diff(whole_dir, part_dir), early_best


@pytest.mark.slow
def test_warmup_resume_is_exact(tree):
    """Adversarial warm-up: discriminator, its Adam optimiser and schedule, interrupted mid-epoch."""
    extra = ["--val_interval", "2", "--no_resume", "--student_init", "random", "--num_workers", "0"]
    diff, _ = staged_equals_uninterrupted(tree, "warmup", extra, stop=3, total=6)
    assert diff == 0.0


@pytest.mark.slow
def test_stage1_resume_is_exact_and_repairs_the_best_file(tree):
    """Stage 1: EMA network, moving prototypes and their counts; then a kill between the writes."""
    start = tree / "start"
    start_flags = args(tree, "src_only", "start", "--max_iters", "1", "--val_interval", "5")
    train.main(start_flags)  # one checkpoint, which is also the best one
    warmup = str(tree / "logs" / "start" / CKPT.format("best"))
    common = ["--config", str(tree / "stage1.py"), "--resume_path", warmup]
    generate_pseudo_label.main(common + ["--name", "soft", "--soft", "--save_path", str(start / "Pseudo"),
                                         "--logdir", str(start / "gen")])
    calc_prototype.main(common + ["--logdir", str(start / "proto")])
    # stop at a scheduled checkpoint (3): a run's final validation draws from the random streams
    extra = ["--resume_path", warmup, "--path_soft", str(start / "Pseudo" / "soft"), "--val_interval", "2"]
    diff, early_best = staged_equals_uninterrupted(tree, "stage1", extra, stop=3, total=5)
    assert diff == 0.0
    state = load(str(tree / "logs" / "stage1_whole"), "current")["resume"]
    assert state["objective_vectors_num"].sum() > 0 and "ema" in state
    # a kill between the current and the best write of the start run: its best file is another one
    intact = load(str(tree / "logs" / "start"), "best")
    shutil.copy(early_best, warmup)
    train.main(start_flags)  # "finished", after repairing the best file from the current one
    assert max_abs_diff(intact, load(str(tree / "logs" / "start"), "best")) == 0.0


# ----------------------------------------------------------------------------- torchrun

def launch_train(flags, nproc=2):
    """Start `python -m proda.launch` (torchrun's arguments) with `nproc` CPU processes, in a
    session of its own (so that a Ctrl-C can reach the whole group, as a terminal sends it)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO, CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "proda.launch", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "proda.train", *flags]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def worker_pid(launcher, rank):
    """The pid of the training process of `rank` started by `launcher` (read from /proc)."""
    for _ in range(2000):
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == launcher.pid:
                continue
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"proda.train" in cmdline and f"RANK={rank}".encode() in environ and \
                    f"TORCHELASTIC_RUN_ID".encode() in b" ".join(environ):
                return int(pid)
        time.sleep(0.01)
    raise AssertionError("no worker process found")


def send_to(target):
    """How a test stops a torchrun run: Ctrl-C to the terminal's process group, SIGTERM to the
    launcher (a cluster's preemption), SIGKILL of one process (the OOM killer)."""
    def send(proc):
        if target == "SIGINT":
            os.killpg(proc.pid, signal.SIGINT)
        elif target == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.kill(worker_pid(proc, 1), signal.SIGKILL)
    return send


def stop_after_checkpoint(start, send, logdir, total=4, tries=3):
    """Start a run, stop it with send(proc) once its first current checkpoint exists; returns
    (status, stderr). Retried from scratch when the signal landed after the last checkpoint."""
    path = os.path.join(logdir, CKPT.format("current"))
    for _ in range(tries):
        shutil.rmtree(logdir, ignore_errors=True)
        proc = start()
        deadline = time.time() + 600
        while not os.path.exists(path) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        if proc.poll() is None:
            send(proc)
        _, err = proc.communicate(timeout=600)
        if os.path.exists(path) and load(logdir, "current")["resume"]["iter"] < total:
            break
    return proc.returncode, err


@pytest.fixture(scope="module")
def ddp_reference(tree):
    """Uninterrupted two-process source-only run: 4 iterations, checkpoints at 1, 3 and 4."""
    flags = args(tree, "src_only", "ddp_ref", "--max_iters", "4", "--val_interval", "2", "--num_workers", "0")
    proc = launch_train(flags)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return str(tree / "logs" / "ddp_ref")


# (signal, exit status of the launcher, its last line starts with)
TORCHRUN_STOPS = [("SIGINT", 130, "interrupted at iteration "),
                  ("SIGTERM", 143, "terminated (SIGTERM) at iteration "),
                  ("SIGKILL", 137, "proda.launch: the process of rank 1 (pid ")]


@pytest.mark.slow
@pytest.mark.parametrize("how, status, line", TORCHRUN_STOPS, ids=[s[0] for s in TORCHRUN_STOPS])
def test_torchrun_stop_then_rerun_equals_uninterrupted(tree, ddp_reference, how, status, line):
    """Two processes (gloo): each process's random state (the classifier's dropout draws from
    it), data position and batch-norm statistics are saved and restored, so the rerun ends with
    every tensor of the current and best checkpoints (weights, optimisers, schedules, prototypes,
    best record, each process's state) equal to the uninterrupted run's."""
    name = f"ddp_{how}"
    flags = args(tree, "src_only", name, "--max_iters", "4", "--val_interval", "2", "--num_workers", "0")
    logdir = str(tree / "logs" / name)
    got, err = stop_after_checkpoint(lambda: launch_train(flags), send_to(how), logdir)
    assert got == status, f"exit status {got}; stderr ends: {err[-2000:]}"
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(line), err[-2000:]
    assert not [n for n in os.listdir(logdir) if n.startswith(".tmp_")]
    assert load(logdir, "current")["resume"]["iter"] < 4  # it really stopped early
    proc = launch_train(flags)
    _, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    assert len(load(logdir, "current")["resume"]["processes"]) == 2
    assert run_diff(ddp_reference, logdir) == 0.0


@pytest.mark.slow
def test_torchrun_options_are_checked_before_any_process_starts(tree):
    flags = args(tree, "src_only", "ddp_bs3", "--bs", "3", "--num_workers", "0")
    proc = launch_train(flags)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [
        "train.py: error: --bs 3 is the total batch size and must be divisible by the 2 processes"]
