"""tent.conf: reference keys and defaults, file merge, overrides, and one-line errors for bad keys."""
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from tent import conf
from tent.conf import cfg

pytestmark = pytest.mark.usefixtures("fresh_cfg")

REPO = Path(__file__).resolve().parents[2]


def write_cfg(tmp_path: Path, text: str, name: str = "my.yaml") -> str:
    """A config file in tmp_path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_reference_keys_and_defaults():
    assert cfg.MODEL.ARCH == "Standard" and cfg.MODEL.ADAPTATION == "source" and cfg.MODEL.EPISODIC is False
    assert cfg.CORRUPTION.DATASET == "cifar10" and cfg.CORRUPTION.SEVERITY == [5, 4, 3, 2, 1]
    assert len(cfg.CORRUPTION.TYPE) == 15 and cfg.CORRUPTION.NUM_EX == 10000
    assert (cfg.BN.EPS, cfg.BN.MOM) == (1e-5, 0.1)
    assert (cfg.OPTIM.STEPS, cfg.OPTIM.LR, cfg.OPTIM.METHOD, cfg.OPTIM.BETA) == (1, 1e-3, "Adam", 0.9)
    assert (cfg.OPTIM.MOMENTUM, cfg.OPTIM.DAMPENING, cfg.OPTIM.NESTEROV, cfg.OPTIM.WD) == (0.9, 0.0, True, 0.0)
    assert cfg.TEST.BATCH_SIZE == 128 and cfg.CUDNN.BENCHMARK is True
    assert (cfg.DESC, cfg.RNG_SEED, cfg.SAVE_DIR, cfg.DATA_DIR, cfg.CKPT_DIR) == ("", 1, "./output", "./data", "./ckpt")
    assert (cfg.LOG_DEST, cfg.LOG_TIME) == ("log.txt", "")
    # extras keep the reference behaviour by default
    assert cfg.MODEL.NORM_LAYERS == ["BatchNorm2d"] and cfg.MODEL.CONTINUAL is False
    assert cfg.MODEL.COPY_STATE is True and cfg.MODEL.ADAPTATIONS == []
    assert not (cfg.PERF.CHANNELS_LAST or cfg.PERF.AMP or cfg.PERF.COMPILE)
    assert conf.load_cfg_from_args is conf.load_cfg_fom_args


def test_file_and_overrides_merge_with_types(tmp_path):
    path = write_cfg(tmp_path, "MODEL:\n  ADAPTATION: tent\nOPTIM:\n  LR: 1e-4\n  STEPS: 2\n"
                               "CORRUPTION:\n  SEVERITY: [3]\n")
    conf.merge_from_file(path)
    conf.merge_from_list(["OPTIM.LR", "1", "TEST.BATCH_SIZE", "7", "MODEL.EPISODIC", "True",
                          "CORRUPTION.TYPE", "[fog, snow]"])
    conf.assert_and_infer_cfg()
    assert cfg.MODEL.ADAPTATION == "tent" and cfg.OPTIM.STEPS == 2
    assert cfg.OPTIM.LR == 1.0 and isinstance(cfg.OPTIM.LR, float)  # YAML '1e-4' then int 1 both coerced
    assert cfg.TEST.BATCH_SIZE == 7 and cfg.MODEL.EPISODIC is True
    assert cfg.CORRUPTION.SEVERITY == [3] and cfg.CORRUPTION.TYPE == ["fog", "snow"]


@pytest.mark.parametrize("text, opts, key", [
    ("MODEL:\n  ARCHH: Standard\n", [], "MODEL.ARCHH"),
    ("FOO: 1\n", [], "FOO"),
    ("", ["OPTIM.LRR", "0.1"], "OPTIM.LRR"),
    ("OPTIM:\n  STEPS: two\n", [], "OPTIM.STEPS"),
    ("", ["TEST.BATCH_SIZE", "1.5"], "TEST.BATCH_SIZE"),
    ("", ["MODEL.EPISODIC", "1"], "MODEL.EPISODIC"),
    ("", ["CORRUPTION.SEVERITY", "[5, x]"], "CORRUPTION.SEVERITY"),
    ("", ["MODEL.ADAPTATION", "tnet"], "MODEL.ADAPTATION"),
    ("", ["CORRUPTION.SEVERITY", "[6]"], "CORRUPTION.SEVERITY"),
    ("", ["CORRUPTION.TYPE", "[fgo]"], "CORRUPTION.TYPE"),
    ("", ["OPTIM.METHOD", "RMSprop"], "OPTIM.METHOD"),
    ("", ["MODEL.COPY_STATE", "False"], "MODEL.COPY_STATE"),
    ("", ["MODEL.NORM_LAYERS", "[BatchNorm]"], "MODEL.NORM_LAYERS"),
    ("MODEL: 3\n", [], "MODEL"),
])
def test_bad_key_type_or_value_exits_2_with_one_line(tmp_path, capsys, text, opts, key):
    path = write_cfg(tmp_path, text or "MODEL:\n  ADAPTATION: source\n")
    with pytest.raises(SystemExit) as exc:
        conf.load_cfg_fom_args("test", ["--cfg", path, *opts])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0] and "error" in err[0]


def test_odd_overrides_and_missing_file_exit_2(tmp_path, capsys):
    path = write_cfg(tmp_path, "OPTIM:\n  LR: 0.1\n")
    for argv in (["--cfg", path, "OPTIM.LR"], ["--cfg", str(tmp_path / "nope.yaml")]):
        with pytest.raises(SystemExit) as exc:
            conf.load_cfg_fom_args("test", argv)
        assert exc.value.code == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_load_cfg_sets_log_file_and_freezes(tmp_path):
    path = write_cfg(tmp_path, "MODEL:\n  ADAPTATION: norm\n", name="norm.yaml")
    conf.load_cfg_fom_args("test", ["--cfg", path, "SAVE_DIR", str(tmp_path / "out"), "RNG_SEED", "3"])
    assert cfg.MODEL.ADAPTATION == "norm" and cfg.RNG_SEED == 3 and cfg.is_frozen()
    assert cfg.LOG_DEST == f"norm_{cfg.LOG_TIME}.txt"
    logging.getLogger("tent.test").info("hello log")
    log_text = (tmp_path / "out" / cfg.LOG_DEST).read_text()
    assert "PyTorch Version" in log_text and "hello log" in log_text


def test_every_shipped_config_is_valid():
    files = sorted((REPO / "cfgs").rglob("*.yaml"))
    assert len(files) >= 16
    for path in files:
        conf.reset_cfg()
        conf.merge_from_file(str(path))
        conf.assert_and_infer_cfg()
    conf.reset_cfg()
    conf.merge_from_file(str(REPO / "cfgs" / "tent.yaml"))  # the reference example
    assert (cfg.MODEL.ARCH, cfg.TEST.BATCH_SIZE, cfg.OPTIM.METHOD, cfg.OPTIM.LR) == ("Standard", 200, "Adam", 1e-3)


def test_launcher_bad_key_prints_one_line_without_traceback(tmp_path):
    path = write_cfg(tmp_path, "MODEL:\n  ADAPTATION: tent\n  SPEED: 3\n")
    proc = subprocess.run([sys.executable, "cifar10c.py", "--cfg", path], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if "Warning" not in ln and not ln.startswith(" ")]
    assert lines == [f"cifar10c.py: error: unknown config key MODEL.SPEED in {path}"]
    assert "Traceback" not in proc.stderr


def test_deprecated_continual_warns_and_reads_as_setting_continual(caplog):
    with caplog.at_level(logging.WARNING):
        conf.merge_from_list(["MODEL.CONTINUAL", "True"])
    assert [r.getMessage() for r in caplog.records] == [
        "config key MODEL.CONTINUAL in the command-line overrides is deprecated: MODEL.CONTINUAL True means "
        "SETTING continual"]
    conf.assert_and_infer_cfg()
    assert cfg.SETTING == "continual" and cfg.MODEL.CONTINUAL is True
    conf.reset_cfg()  # a later override of the old key still counts: no continual left behind
    conf.merge_from_list(["MODEL.CONTINUAL", "True", "SETTING", "reset_each_shift", "MODEL.CONTINUAL", "False"])
    conf.assert_and_infer_cfg()
    assert cfg.SETTING == "reset_each_shift"
    conf.reset_cfg()
    conf.merge_from_list(["MODEL.CONTINUAL", "True", "SETTING", "gradual"])
    with pytest.raises(conf.ConfigError, match="MODEL.CONTINUAL must be False with a SETTING other than continual"):
        conf.assert_and_infer_cfg()


def test_declaring_the_keys_imports_no_data_or_model_code():
    probe = ("import sys, tent.conf as c\n"
             "assert not [m for m in ('tent.conf_checks', 'tent.mnistc', 'tent.digits', 'tent.preflight')"
             " if m in sys.modules]\n"
             "from tent.conf import load_cfg_fom_args, reset_cfg, assert_and_infer_cfg\n"
             "from tent import launch\n"
             "assert load_cfg_fom_args is launch.load_cfg_fom_args\n")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
