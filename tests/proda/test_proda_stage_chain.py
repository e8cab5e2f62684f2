"""proda/pipeline.py, the stage chain the scripts run: the planned steps, their commands and file
names (dry runs on the demo configs), skipping finished steps, and its one-line errors."""
import os
import subprocess
import sys

import pytest

from proda import manifest, pipeline
from proda.options import parse_opt
from proda.weight_sources import released

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "demo")
BEST = "from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"
LAST = "from_gta5_to_cityscapes_on_deeplabv2_last_model.pkl"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A working directory with the demo's warm-up checkpoint (the demo configs put everything under demo/)."""
    monkeypatch.chdir(tmp_path)
    warmup = tmp_path / "demo" / "logs" / "gta2citylabv2_warmup" / BEST
    warmup.parent.mkdir(parents=True)
    warmup.write_bytes(b"warm-up weights")
    return tmp_path


def chain(capsys, argv, **environ):
    """Run the pipeline in this process: (exit status, stdout lines, stderr)."""
    env = {"CFG_DIR": DEMO, "PYTHON": "python", "CUDA_VISIBLE_DEVICES": "", **environ}
    status = 0
    try:
        pipeline.main(argv, environ=env)
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_stage1_dry_run_plans_the_three_steps_with_the_reference_file_names(world, capsys):
    status, out, err = chain(capsys, ["stage1", "--dry_run"])
    demo, cfg = world / "demo", os.path.join(DEMO, "gta2city_")
    warmup, soft = demo / "logs" / "gta2citylabv2_warmup" / BEST, demo / "Pseudo" / "gta2citylabv2_warmup_soft"
    stage1 = demo / "logs" / "gta2citylabv2_stage1Denoise"
    assert (status, err) == (0, "")
    assert out == [
        f"ProDA stage 1 (gta5, configs in {DEMO}) from the warm-up model {warmup}",
        "", f"==> [stage 1, step 1/3] soft pseudo labels of the warm-up model -> {soft}",
        f"+ python -m proda.generate_pseudo_label --config {cfg}stage1_pseudo.py --resume_path {warmup}",
        "", f"==> [stage 1, step 2/3] target prototypes of the warm-up model -> "
            f"{warmup.parent / 'prototypes_on_cityscapes_from_deeplabv2'}",
        f"+ python -m proda.calc_prototype --config {cfg}stage1_prototypes.py --resume_path {warmup}",
        "", f"==> [stage 1, step 3/3] train stage 1 -> {stage1 / BEST}",
        f"+ python -m proda.train --config {cfg}stage1.py --resume_path {warmup} --path_soft {soft}",
        "stage 1 done:",
        f"  best model (selected on the target val set): {stage1 / BEST}",
        f"  last model (final iteration):                {stage1 / LAST}"]
    assert sorted(p.name for p in demo.rglob("*")) == sorted(["gta2citylabv2_warmup", "logs", BEST])  # nothing written


def test_the_settings_reach_every_command(world, capsys):
    env = dict(WARMUP="train", LOG_DIR="L", PSEUDO_DIR="P", SIMCLR_CKPT="s.pth", SRC_ROOT="src", TGT_ROOT="tgt",
               EXTRA_ARGS="--bs 2  --num_workers 1", NGPU="2")
    status, out, err = chain(capsys, ["all", "--dry_run"], **env)
    assert (status, err) == (0, "")
    common = f"--src_rootpath {world / 'src'} --tgt_rootpath {world / 'tgt'} --bs 2 --num_workers 1"
    launch = "+ python -m proda.launch --standalone --nproc_per_node=2 -m proda.train"
    commands = [line for line in out if line.startswith("+ ")]
    assert commands[0] == f"{launch} --config {DEMO}/gta2city_warmup.py {common} --logdir {world / 'L'}/gta2citylabv2_warmup"
    assert commands[1] == (f"+ python -m proda.generate_pseudo_label --config {DEMO}/gta2city_stage1_pseudo.py {common} "
                           f"--save_path {world / 'P'} --resume_path {world / 'L'}/gta2citylabv2_warmup/{BEST} "
                           f"--logdir {world / 'L'}/gta2citylabv2_warmup_soft")
    stage1_best = f"{world / 'L'}/gta2citylabv2_stage1Denoise/{BEST}"
    assert commands[-1] == (f"{launch} --config {DEMO}/gta2city_stage3.py {common} --logdir {world / 'L'}/gta2citylabv2_stage3 "
                            f"--resume_path {world / 'L'}/gta2citylabv2_stage2/{BEST} --path_LP {world / 'P'}/gta2citylabv2_stage2 "
                            f"--simclr_path {world / 's.pth'}")
    assert f"ProDA stage 2 (gta5, configs in {DEMO}) from the stage1 model {stage1_best}" in out
    assert len(commands) == 8  # warm-up, 3 steps of stage 1, 2 steps each of stages 2 and 3


@pytest.mark.parametrize("visible, launched", [("0, 1,2", "--nproc_per_node=3"), ("-1", None), ("", None), ("3", None)])
def test_more_than_one_visible_gpu_trains_with_torchrun(world, capsys, visible, launched):
    status, out, _ = chain(capsys, ["stage1", "--dry_run"], CUDA_VISIBLE_DEVICES=visible)
    train = [line for line in out if "-m proda.train" in line]
    assert status == 0 and len(train) == 1
    assert train[0].startswith("+ python -m proda.launch --standalone " + launched if launched else "+ python -m proda.train ")


def test_finished_steps_are_skipped_and_steps_of_other_inputs_refused(world, capsys):
    warmup = str(world / "demo" / "logs" / "gta2citylabv2_warmup" / BEST)
    pseudo = parse_opt(["--config", f"{DEMO}/gta2city_stage1_pseudo.py", "--resume_path", warmup])
    folder = os.path.join(pseudo.save_path, pseudo.name)
    os.makedirs(folder)
    manifest.write_json(os.path.join(folder, manifest.MANIFEST), manifest.pseudo_label_inputs(pseudo))
    open(os.path.join(folder, ".complete"), "w").close()
    protos = parse_opt(["--config", f"{DEMO}/gta2city_stage1_prototypes.py", "--resume_path", warmup])
    proto_file = os.path.join(os.path.dirname(warmup), "prototypes_on_cityscapes_from_deeplabv2")
    open(proto_file, "w").close()
    manifest.write_json(manifest.prototype_manifest(proto_file), manifest.prototype_inputs(protos))

    status, out, _ = chain(capsys, ["stage1", "--dry_run"])
    assert status == 0
    assert f"    skipped: {os.path.abspath(folder)} is complete and made from {warmup}" in out
    assert f"    skipped: {proto_file} is made from {warmup}" in out
    assert [line for line in out if line.startswith("+ ")] == [line for line in out if "proda.train" in line]

    open(warmup, "wb").write(b"retrained warm-up")  # its pseudo labels are now of another model
    status, out, err = chain(capsys, ["stage1", "--dry_run"])
    assert status == 1 and not any(line.startswith("+ ") for line in out)
    assert err.startswith(f"error: {folder} holds pseudo labels of other inputs (") and f"rm -r {folder}" in err


def test_bad_settings_end_in_one_line(world, capsys):
    cases = [(["stage1"], {"SRC": "cityscapes"}, 2, "error: SRC must be gta5 or synthia, got 'cityscapes'"),
             (["all"], {"WARMUP": "scratch"}, 2, "error: WARMUP must be pretrained or train, got 'scratch'"),
             (["stage1"], {"SRC": "synthia"}, 2,
              f"error: config {DEMO}/syn2city_stage1.py not found (CFG_DIR={DEMO}, SRC=synthia)"),
             (["train", "--config", "x.py"], {"NGPU": "two"}, 2, "error: NGPU must be a whole number, got 'two'"),
             (["stage2"], {}, 1, f"error: {world}/demo/logs/gta2citylabv2_stage1Denoise/{BEST} not found (the stage1 model: "
                                 "run scripts/proda_stage1.sh, or set STAGE1_CKPT to the released one "
                                 f"({released('gta2city', 'stage1').download_line()}))"),
             (["paths", "checkpoint"], {}, 2, "error: paths: WHAT must be one of " + ", ".join(pipeline.PATHS))]
    for argv, env, status, line in cases:
        got_status, out, err = chain(capsys, argv, **env)
        assert (got_status, err.splitlines()) == (status, [line]), argv
        assert not any(o.startswith("+ ") for o in out)
    status, _, err = chain(capsys, ["stage1"], EXTRA_ARGS="--bs 0")
    assert status == 2 and err.strip() == "proda.pipeline: error: --bs 0 is out of range: must be >= 1"


def test_a_failing_step_stops_the_chain_with_its_status(world, capsys):
    runner = pipeline.Runner(pipeline.Settings.from_environ({}))
    with pytest.raises(pipeline.Stop) as stop:
        runner.run([sys.executable, "-c", "raise SystemExit(3)"])
    assert (stop.value.status, str(stop.value)) == (3, "")
    with pytest.raises(pipeline.Stop) as stop:
        runner.run([str(world / "no_such_python"), "-m", "proda.train"])
    assert stop.value.status == 127
    assert capsys.readouterr().out.splitlines() == [f"+ {sys.executable} -c raise SystemExit(3)",
                                                    f"+ {world / 'no_such_python'} -m proda.train"]


def test_the_shell_helpers_subcommands(world, capsys):
    status, out, _ = chain(capsys, ["flags"], SRC_ROOT="a", EXTRA_ARGS="--bs 2\t--seed 1\nignored")
    assert (status, out) == (0, ["--src_rootpath", str(world / "a"), "--bs", "2", "--seed", "1"])
    status, out, _ = chain(capsys, ["configs", "warmup", "base"])
    assert (status, out) == (0, [f"{DEMO}/gta2city_warmup.py", f"{DEMO}/gta2city_base.py"])
    status, out, _ = chain(capsys, ["paths", "last_model", "--config", f"{DEMO}/src_only.py", "--root", "r"])
    assert (status, out) == (0, [f"{world}/r/logs/demo_src_only/{LAST}"])
    status, out, _ = chain(capsys, ["paths", "simclr_path", "--config", f"{DEMO}/gta2city_stage2.py"])
    assert (status, out) == (0, [f"{world}/demo/pretrained/demo_backbone.pth"])


def test_the_stage_scripts_run_the_pipeline(tmp_path):
    env = dict(os.environ, CFG_DIR=DEMO, PYTHON=sys.executable, STAGE2_CKPT="missing.pkl")
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "proda_stage3.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"error: {tmp_path}/missing.pkl not found (the stage2 model: run "
                                        "scripts/proda_stage2.sh, or set STAGE2_CKPT to the released one "
                                        f"({released('gta2city', 'stage2').download_line()}))"]


def test_the_chain_process_does_not_import_torch():
    """The stage scripts start `python -m proda.pipeline` once a stage and the demo several times a seed."""
    code = "import sys, proda.pipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"
