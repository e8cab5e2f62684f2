"""LOG_DIR covers every step's run log: training, and the pseudo-label and prototype steps."""
import os

from proda import pipeline

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "configs", "demo")
BEST = "from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl"


def planned_commands(capsys, stage, environ):
    """The commands a dry run of `stage` prints."""
    pipeline.main([stage, "--dry_run"], environ={"CFG_DIR": DEMO, "PYTHON": "python", "CUDA_VISIBLE_DEVICES": "",
                                                  **environ})
    return [line[2:].split() for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")]


def logdir_of(command):
    """The --logdir a command passes (None when it passes none)."""
    return command[command.index("--logdir") + 1] if "--logdir" in command else None


def test_log_dir_covers_the_pseudo_label_and_prototype_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo" / "logs" / "gta2citylabv2_warmup").mkdir(parents=True)
    (tmp_path / "demo" / "logs" / "gta2citylabv2_warmup" / BEST).write_bytes(b"warm-up")
    (tmp_path / "demo" / "logs" / "gta2citylabv2_stage1Denoise").mkdir(parents=True)
    (tmp_path / "demo" / "logs" / "gta2citylabv2_stage1Denoise" / BEST).write_bytes(b"stage 1")
    runs = tmp_path / "runs"
    for stage, steps in (("stage1", ["generate_pseudo_label", "calc_prototype", "train"]),
                         ("stage2", ["generate_pseudo_label", "train"])):
        commands = planned_commands(capsys, stage, {"LOG_DIR": str(runs)})
        assert [c[2].split(".")[-1] for c in commands] == steps
        for command in commands:
            name = pipeline.options(command[3:]).name
            assert logdir_of(command) == str(runs / name), command
    # without LOG_DIR no step is given a --logdir: each logs to the config's logs/<name>, as before
    assert all(logdir_of(c) is None for c in planned_commands(capsys, "stage1", {}))
