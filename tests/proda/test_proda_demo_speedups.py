"""The offline demo's speed-ups change no number: each result equals, bit for bit, the one of the
slower path it replaces, computed in the same run.

* calc_prototype.py computes the target class means of its first pass once and replays them
  in the other three passes (the passes see the same images): the prototypes equal four full
  passes of the network.
* proda.demo.test_rows runs several test.py command lines in one process: each results file
  equals the one of the same command run on its own.
"""
import json
import os

import pytest
import torch

from proda import calc_prototype, runner, test as proda_test
from proda.data import create_dataset
from proda.demo import test_rows
from proda.models.builders import build_student
from proda.models.prototypes import Prototypes
from proda.options import parse_opt
from proda_helpers import save_tiny_checkpoint


@pytest.fixture(scope="module")
def tree(synthetic_tree):
    """Tiny synthetic GTA5 / Cityscapes trees, a random one-block-per-stage checkpoint, shared flags."""
    root = synthetic_tree("demo_speedups", n_source=2, n_target_train=4, n_target_val=2, size=(64, 32))
    ckpt = root / "model" / "model.pkl"
    save_tiny_checkpoint(ckpt, seed=0)
    common = ["--src_rootpath", str(root / "data" / "GTA5"), "--tgt_rootpath", str(root / "data" / "cityscapes"),
              "--src_img_size", "64,32", "--tgt_img_size", "64,32", "--backbone_layers", "1,1,1,1",
              "--bs", "2", "--num_workers", "0", "--bn", "bn", "--device", "cpu", "--student_init", "random",
              "--resume_path", str(ckpt)]
    return root, common, str(ckpt)


def four_full_passes(argv):
    """The prototypes of calc_prototype's loop before the replay: the network on every pass."""
    opt = parse_opt(argv, entry="calc_prototype", overrides=runner.INFERENCE_OPTIONS)
    runner.seed_everything(opt.seed)
    datasets = create_dataset(opt, None)
    net = build_student(opt).eval()
    prototypes = Prototypes(opt.n_class, torch.device("cpu"))
    for _ in range(calc_prototype.PROTOTYPE_EPOCHS):
        for target in datasets.target_train_loader:
            vectors, ids = calc_prototype.batch_prototypes(net, prototypes, target["img"])
            prototypes.update(vectors, ids, opt.proto_momentum, name="mean")
    return prototypes.vectors


def test_prototypes_from_the_replayed_passes_equal_four_network_passes(tree):
    root, common, ckpt = tree
    argv = common + ["--logdir", str(root / "logs" / "proto")]
    calc_prototype.main(argv)
    saved = torch.load(os.path.join(os.path.dirname(ckpt), "prototypes_on_cityscapes_from_deeplabv2"),
                       weights_only=True)
    expected = four_full_passes(argv)
    assert (expected.abs().sum(1) > 0).any()  # some class was seen: the comparison means something
    assert torch.equal(saved, expected)


def results_without_timing(path):
    """A results file without what depends on the clock (seconds per image)."""
    results = json.loads(open(path).read())
    results.pop("seconds_per_image")
    return results


def test_rows_in_one_process_equal_each_row_on_its_own(tree):
    root, common, _ = tree
    rows = {"plain": [], "tent": ["--tta", "tent", "--tta_episodic", "--tta_steps", "2", "--bs", "1",
                                  "--tta_lr", "1e-2"]}

    def args(name, folder):
        return common + rows[name] + ["--logdir", str(root / "logs" / folder),
                                      "--results_json", str(root / folder / f"{name}.json")]

    proda_test.main(args("tent", "alone"))  # the command on its own (a fresh process runs exactly this)
    test_rows.main(args("plain", "together") + [test_rows.SEPARATOR] + args("tent", "together"))
    assert (root / "together" / "plain.json").exists()
    alone = results_without_timing(root / "alone" / "tent.json")
    assert alone == results_without_timing(root / "together" / "tent.json")  # after another row: the same
    assert json.loads((root / "together" / "tent.json").read_text())["tta"]["steps"] == 2


def test_rows_split_on_the_separator_and_refuse_an_empty_command():
    assert test_rows.split_runs(["-a", "1", ":::", "-b", ":::", "-c"]) == [["-a", "1"], ["-b"], ["-c"]]
    with pytest.raises(SystemExit):
        test_rows.main(["-a", ":::", ":::", "-b"])
