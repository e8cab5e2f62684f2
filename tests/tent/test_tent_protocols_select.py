"""tent.select: a hyperparameter chosen on the 4 held-out corruptions of tiny MNIST-C, written as a snippet."""
import json
from pathlib import Path

import pytest
import yaml

from tent import conf, select
from tent.conf import VALIDATION_CORRUPTIONS, cfg

pytestmark = pytest.mark.usefixtures("fresh_cfg")

TINY = """MODEL:
  ARCH: MnistCNN
  ADAPTATION: tent
TEST:
  BATCH_SIZE: 20
CORRUPTION:
  DATASET: mnist
  NUM_EX: 20
  SEVERITY: [5]
MNISTC:
  NUM_TRAIN: 500
  WIDTH: 4
  EPOCHS: 1
  BATCH_SIZE: 100
"""


def test_select_evaluates_each_value_on_held_out_corruptions_and_writes_the_best(tmp_path, mnist_data_dir, capsys):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    status = select.main(["--cfg", str(cfg_file), "OPTIM.LR", "[1e-5, 5e-1]",
                          "DATA_DIR", mnist_data_dir, "CKPT_DIR", str(tmp_path / "ckpt"), "SAVE_DIR", str(tmp_path / "o")])
    assert status == 0
    out = tmp_path / "o" / "selected_OPTIM.LR.yaml"  # the default: SAVE_DIR/selected_<KEY>.yaml, as --help says
    printed = capsys.readouterr().out
    assert printed.splitlines()[-1].endswith(f"written to {out}")
    assert [p.name for p in (tmp_path / "o").glob("**/selected_*")] == [out.name]
    assert "| OPTIM.LR | mean | speckle_noise | gaussian_blur | spatter | saturate |" in printed
    rows = {}
    for line in printed.splitlines():
        if line.startswith(("| 1e-05", "| 0.5")):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[float(cells[0].split()[0])] = (float(cells[1]), "(chosen)" in cells[0])
    assert set(rows) == {1e-5, 0.5}
    marked = [v for v, (_, is_chosen) in rows.items() if is_chosen]
    assert len(marked) == 1 and rows[marked[0]][0] == min(mean for mean, _ in rows.values())
    chosen = marked[0]
    snippet = yaml.safe_load(out.read_text())
    assert snippet == {"OPTIM": {"LR": chosen}} and isinstance(snippet["OPTIM"]["LR"], float)
    conf.reset_cfg()
    conf.merge_from_file(str(out))
    assert cfg.OPTIM.LR == chosen
    # each candidate ran tent on the held-out corruptions only
    for run_json in (tmp_path / "o" / "select").glob("*/*_results.json"):
        payload = json.loads(run_json.read_text())
        assert payload["methods"] == ["tent"]
        assert set(payload["error_percent"]["tent"]["5"]) == {"mean", *VALIDATION_CORRUPTIONS}


@pytest.mark.parametrize("opts", [["OPTIM.LR", "1e-3"], ["OPTIM.LR", "[]"], ["OPTIM.LR", "[1e-3]", "OPTIM.BETA", "[0.9]"],
                                  ["OPTIM.LRR", "[1e-3]"]])
def test_select_needs_exactly_one_known_swept_key(tmp_path, opts, capsys):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    assert select.main(["--cfg", str(cfg_file), *opts]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


@pytest.mark.parametrize("args, named", [
    (["MODEL.ADAPTATION", "[source, norm]"], "MODEL.ADAPTATION"),  # every candidate would run tent
    (["OPTIM.LR", "[1e-3]", "MODEL.ADAPTATIONS", "[source]"], "MODEL.ADAPTATIONS"),  # would be replaced by tent
    (["OPTIM.LR", "[1e-3, -1]"], "OPTIM.LR"),  # a bad candidate, found before the first runs
    (["OPTIM.LR", "[1e-3]", "MNISTC.WIDTH", "100000"], "MNISTC.WIDTH"),
    (["OPTIM.LR", "[1e-3]", "--out", "{tmp}"], "is a folder"),  # --out after the overrides, and a folder
    (["--out={tmp}", "OPTIM.LR", "[1e-3]"], "is a folder"),
    (["OPTIM.LR", "[1e-3]", "--out", "/sys/selected.yaml"], "cannot be written"),  # read-only even for root
], ids=["adaptation", "adaptations", "bad-candidate", "bad-other-key", "out-folder-after-overrides", "out-equals",
        "out-read-only"])
def test_select_checks_before_the_sweep(tmp_path, capsys, args, named):
    if "/sys/selected.yaml" in args and select.unwritable_reason(Path("/sys")) is None:
        pytest.skip("/sys is writable here")
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    status = select.main(["--cfg", str(cfg_file), *args, "SAVE_DIR", str(tmp_path / "o"),
                          "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(tmp_path / "ckpt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "data").exists()  # no candidate ran
    assert not list(tmp_path.glob("*.tmp*"))
