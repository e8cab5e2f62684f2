"""scripts/proda_demo_table.py: the demo's per-seed tables and the mean ± std over seeds."""
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def results(tmp_path, name, miou, seconds=0.1):
    """A tiny results file as proda.test writes it."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"mIoU": miou, "seconds_per_image": seconds}))
    return str(path)


def table(*args):
    """The script's output."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "proda_demo_table.py"), *args],
                          capture_output=True, text=True, check=True)
    return proc.stdout


def test_one_seed_prints_its_table_only(tmp_path):
    out = table("--seed=config", "stage1", results(tmp_path, "b", 24.54), results(tmp_path, "l", 23.0), "--")
    assert "| stage1 | 24.5 | 23.0 | 0.100 |" in out
    assert "mean ± std" not in out


def test_several_seeds_give_mean_and_sample_std_per_row(tmp_path):
    args = []
    for seed, (a, b) in enumerate([(20.0, 10.0), (22.0, 12.0), (24.0, 17.0)]):
        args += ["src", results(tmp_path, f"s{seed}", a), results(tmp_path, f"s{seed}", a),
                 "tent", results(tmp_path, f"t{seed}", b, 0.3), results(tmp_path, f"t{seed}", b, 0.3), "--"]
    out = table("--seed=0", "--seed=1", "--seed=2", *args)
    assert out.count("seed ") >= 3
    assert "| src | 22.0 ± 2.0 | 22.0 ± 2.0 | 20.0 / 22.0 / 24.0 | 0.100 |" in out
    assert "| tent | 13.0 ± 3.6 | 13.0 ± 3.6 | 10.0 / 12.0 / 17.0 | 0.300 |" in out
