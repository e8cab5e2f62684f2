"""tent.launch / evaluation / seeds / select: the command line is read once, and runs take config objects."""
from pathlib import Path

import pytest

from tent import cifar10c, evaluation, launch, select
from tent.conf import VALIDATION_CORRUPTIONS
from tent_helpers import TINY_MNIST_CFG

pytestmark = pytest.mark.usefixtures("fresh_cfg")

# one corruption, 20 images: the cheapest run that still adapts
TINY = TINY_MNIST_CFG.replace("NUM_EX: 40", "NUM_EX: 20").replace("[gaussian_noise, contrast]", "[contrast]")


def tiny_args(tmp_path: Path, data_dir: str) -> list:
    """The command line of a tiny MNIST-C run (its config file written to tmp_path)."""
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    return ["--cfg", str(cfg_file), "DATA_DIR", data_dir, "CKPT_DIR", str(tmp_path / "ckpt")]


def test_a_config_object_runs_as_its_command_line(tmp_path, mnist_data_dir):
    argv = tiny_args(tmp_path, mnist_data_dir)
    by_args = cifar10c.evaluate("test", [*argv, "SAVE_DIR", str(tmp_path / "args")])
    cfg_file, loaded = launch.config_from_args("test", argv)
    c = launch.derived(loaded, [("SAVE_DIR", str(tmp_path / "object"))])
    by_object = evaluation.run(launch.start_run(c, cfg_file))
    assert by_object == by_args and set(by_object) == {"source", "norm", "tent"}
    (csv_args,), (csv_object,) = [list((tmp_path / d).glob("*_results.csv")) for d in ("args", "object")]
    assert csv_args.read_bytes() == csv_object.read_bytes()


def test_several_seeds_read_the_command_line_once(tmp_path, mnist_data_dir, monkeypatch):
    read = []
    merge_from_file = launch.merge_from_file
    monkeypatch.setattr(launch, "merge_from_file", lambda path: (read.append(path), merge_from_file(path))[1])
    argv = tiny_args(tmp_path, mnist_data_dir)
    assert cifar10c.main([*argv, "MODEL.ADAPTATIONS", "[source]", "MNISTC.SEEDS", "[0, 1]",
                          "SAVE_DIR", str(tmp_path / "out")]) == 0
    assert read == [argv[1]]
    for seed in (0, 1):  # each seed's run still has its own folder, log and results
        assert len(list((tmp_path / "out" / f"seed{seed}").glob("*_results.csv"))) == 1
    assert len(list((tmp_path / "out").glob("*_seeds.json"))) == 1


def test_select_derives_each_candidate_from_one_loaded_config(tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY)
    base = launch.merged(str(cfg_file), ["SAVE_DIR", str(tmp_path / "o")]).clone()
    candidates = select.candidate_configs(base, "OPTIM.LR", [1e-4, 1e-3], tmp_path / "o" / "select")
    assert [c.OPTIM.LR for c in candidates.values()] == [1e-4, 1e-3]
    for value, c in candidates.items():
        assert list(c.MODEL.ADAPTATIONS) == ["tent"] and list(c.CORRUPTION.TYPE) == list(VALIDATION_CORRUPTIONS)
        assert c.SAVE_DIR == str(tmp_path / "o" / "select" / f"OPTIM.LR_{value}") and c.TEST.BATCH_SIZE == 20
    assert base.OPTIM.LR == 1e-2 and list(base.CORRUPTION.TYPE) == ["contrast"]  # the loaded config is untouched
