"""dacommon.distributed under tent: torchrun with 2 gloo CPU processes gives exactly the single-process table."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacommon import distributed
from tent import cifar10c
from tent.conf import cfg
from tent_helpers import TINY_MNIST_CFG

pytestmark = pytest.mark.usefixtures("fresh_cfg")
REPO = Path(__file__).resolve().parents[2]

TINY = TINY_MNIST_CFG.replace("SEVERITY: [5]", "SEVERITY: [5, 3]").replace(
    "TYPE: [gaussian_noise, contrast]", "TYPE: [gaussian_noise, shot_noise, contrast]")


def test_single_process_gathers_its_own_results():
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gather({"a": 1}) == [{"a": 1}]


@pytest.mark.slow
@pytest.mark.parametrize("setting", ["reset_each_shift", "offline", "continual", "gradual"])  # split; rank 0 alone
def test_two_gloo_processes_give_the_single_process_table(tmp_path, mnist_data_dir, setting):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    common = ["DATA_DIR", mnist_data_dir, "CKPT_DIR", str(tmp_path / "ckpt"), "DEVICE", "cpu", "SETTING", setting]
    single = cifar10c.evaluate("test", ["--cfg", str(cfg_file), *common, "SAVE_DIR", str(tmp_path / "one")])
    one_log = (tmp_path / "one" / cfg.LOG_DEST).read_text()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(REPO / "cifar10c.py"), "--cfg", str(cfg_file), *common, "SAVE_DIR", str(tmp_path / "two")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (two_json,) = (tmp_path / "two").glob("*_results.json")
    two = json.loads(two_json.read_text())["error_percent"]
    assert {m: {s: {c: e for c, e in errs.items() if c != "mean"} for s, errs in per.items()}
            for m, per in two.items()} == {m: {str(s): {c: 100 * e for c, e in errs.items()} for s, errs in per.items()}
                                           for m, per in single.items()}
    # the same Markdown tables in rank 0's log; rank 1 logs to its own file
    (two_log,) = [p for p in (tmp_path / "two").glob("tiny_*.txt") if "_rank" not in p.name]
    assert list((tmp_path / "two").glob("tiny_*_rank1.txt"))
    tables = [line for line in two_log.read_text().splitlines() if line.startswith("| ")]
    assert tables and tables == [line for line in one_log.splitlines() if line.startswith("| ")]


def table_lines(stderr: str):
    """The Markdown table rows a run printed (every seed's table, then the mean ± std)."""
    return [line for line in stderr.splitlines() if line.startswith("| ")]


@pytest.mark.slow
def test_two_gloo_processes_print_every_seeds_table_and_the_mean_std(tmp_path, mnist_data_dir):
    """Several MNISTC.SEEDS under torchrun: the same tables and summary as one process."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY_MNIST_CFG)
    args = ["--cfg", str(cfg_file), "DATA_DIR", mnist_data_dir, "CKPT_DIR", str(tmp_path / "ckpt"), "DEVICE", "cpu",
            "MNISTC.SEEDS", "[0, 1]"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    runs = {}
    for name, launcher in [("one", []), ("two", ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])]:
        proc = subprocess.run([sys.executable, *launcher, str(REPO / "cifar10c.py"), *args, "SAVE_DIR", str(tmp_path / name)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = proc.stderr
    one = table_lines(runs["one"])
    assert len(one) == 3 * 5 and sum(" ± " in line for line in one) == 3  # 2 seeds' tables and the mean ± std
    assert table_lines(runs["two"]) == one
    (one_json,), (two_json,) = [list((tmp_path / n).glob("*_seeds.json")) for n in ("one", "two")]
    assert json.loads(two_json.read_text())["error_percent"] == json.loads(one_json.read_text())["error_percent"]
