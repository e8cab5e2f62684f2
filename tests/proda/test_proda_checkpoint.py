"""The checkpoint set of a training run (proda/checkpoint.py): the reference's format, the resume
state's layout, which iteration the best file holds, and the repair of a best file a kill left
stale. A tiny CPU model (one block per ResNet stage) and an in-memory source position."""
import logging
import os
from types import SimpleNamespace

import torch

from proda.checkpoint import CheckpointSet, training_state
from proda.models.adaptation_modelv2 import CustomModel
from proda.options import parse_opt
from proda.paths import model_file

LOG = logging.getLogger("test_proda_checkpoint")
REFERENCE_KEYS = ["ResNet101", "iter", "best_iou"]
RESUME_KEYS = ["nets", "optimizers", "schedulers", "objective_vectors", "objective_vectors_num", "iter",
               "best_iou", "stage", "rng", "data", "inputs", "best", "processes"]


class Provider:
    """The source provider's position, as DataProvider keeps it."""

    def __init__(self, iteration=0):
        self.position = {"epoch": 0, "iteration": iteration}

    def state_dict(self):
        return dict(self.position)

    def load_state_dict(self, state):
        self.position = dict(state)


def tiny_run(tmp_path):
    """A tiny source-only model, its data position and the checkpoint set of its log dir."""
    opt = parse_opt(["--device", "cpu", "--backbone_layers", "1,1,1,1", "--student_init", "random",
                     "--no_resume", "--bn", "bn", "--n_class", "13", "--train_iters", "100",
                     "--stage", "src_only", "--logdir", str(tmp_path)])
    datasets = SimpleNamespace(source_train_loader=Provider(iteration=3))
    return CustomModel(opt, LOG), datasets, CheckpointSet(opt, {"options": {"lr": 1}}, LOG)


def load(opt, kind):
    """A file of the set, loaded as the reference would (weights only)."""
    return torch.load(model_file(opt, kind), map_location="cpu", weights_only=True)


def test_the_set_is_in_the_reference_format_and_best_and_last_are_current_without_resume(tmp_path):
    model, datasets, checkpoints = tiny_run(tmp_path)
    model.iter = 4
    checkpoints.save(model, datasets, iou=0.25, last=True)
    current, best, last = (load(model.opt, kind) for kind in ("current", "best", "last"))
    assert list(current) == REFERENCE_KEYS + ["resume"]
    assert list(best) == list(last) == REFERENCE_KEYS
    assert list(current["ResNet101"]) == ["model_state", "objective_vectors"]
    assert current["iter"] == 5 and current["best_iou"] == 0.25  # the reference: next iteration, this mIoU
    assert list(current["resume"]) == RESUME_KEYS
    assert current["resume"]["best"] == {"iter": 5, "best_iou": 0.25}
    assert current["resume"]["data"] == {"source": {"epoch": 0, "iteration": 3}}
    assert len(current["resume"]["processes"]) == 1
    for other in (best, last):
        weights = current["ResNet101"]["model_state"]
        assert all(torch.equal(weights[k], other["ResNet101"]["model_state"][k]) for k in weights)
    assert not hasattr(model, "best_record")  # train state, kept by the set, not the model


def test_a_lower_miou_keeps_the_best_file_and_its_record(tmp_path):
    model, datasets, checkpoints = tiny_run(tmp_path)
    model.iter = 1
    checkpoints.save(model, datasets, iou=0.5)
    model.iter = 3
    checkpoints.save(model, datasets, iou=0.25)
    assert load(model.opt, "best")["iter"] == 2 and load(model.opt, "current")["iter"] == 4
    assert load(model.opt, "current")["resume"]["best"] == {"iter": 2, "best_iou": 0.5}
    assert model.best_iou == 0.5 and not os.path.exists(model_file(model.opt, "last"))


def test_resume_restores_the_state_and_repairs_a_best_file_a_kill_left_stale(tmp_path):
    model, datasets, checkpoints = tiny_run(tmp_path)
    model.iter = 1
    checkpoints.save(model, datasets, iou=0.25)
    stale = load(model.opt, "best")
    model.iter = 3
    checkpoints.save(model, datasets, iou=0.5)
    torch.save(stale, model_file(model.opt, "best"))  # as if killed between the current and best writes

    resumed, datasets2, checkpoints2 = tiny_run(tmp_path)
    datasets2.source_train_loader = Provider(iteration=0)
    checkpoints2.resume(resumed, datasets2)
    assert resumed.iter == 3 and resumed.best_iou == 0.5  # the iteration done; the file's 'iter' is the next
    assert checkpoints2.best == {"iter": 4, "best_iou": 0.5}
    assert datasets2.source_train_loader.position == {"epoch": 0, "iteration": 3}
    assert load(model.opt, "best")["iter"] == 4  # rewritten from the current checkpoint
    saved, restored = training_state(model), training_state(resumed)
    for name, weights in saved["nets"]["ResNet101"].items():
        assert torch.equal(weights, restored["nets"]["ResNet101"][name]), name
