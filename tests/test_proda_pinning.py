"""Pinning: one step of each ProDA stage on fixed inputs gives the losses, weights, optimiser
state and prototypes that the code before the issue-8 refactor gave, bit for bit.

The golden file tests/data/proda_pinning.pt was written by the code of commit c4f2885 (the last
commit before `proda/models/adaptation_modelv2.py` was split by concept), with this file:

    mkdir /tmp/c4f2885 && git archive c4f2885 | tar -x -C /tmp/c4f2885
    cd /tmp && PYTHONPATH=/tmp/c4f2885 python REPO/tests/test_proda_pinning.py --regenerate

(outside the checkout, so that the `proda` on PYTHONPATH is the one imported). Regenerate it
only when a change of numerics is intended, from the code that makes it, and say so in the commit.
The tiny network still has ~30M parameters, so the file holds, per tensor, its name, a sha256
of its bytes (the bit-identity check) and its float64 sum (how far apart two results are).
Bits depend on torch's CPU kernels: on another torch version or CPU capability than the
recorded one, the sums are compared at rtol 1e-4 instead.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import tempfile
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from proda.models.adaptation_modelv2 import CustomModel
from proda.options import parse_opt
from proda.utils import IGNORE_INDEX, atomic_save

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "proda_pinning.pt")
GOLDEN_COMMIT = "c4f2885"
N_CLASS = 13
SEED = 8
LOG = logging.getLogger("test_proda_pinning")
STAGES = ("src_only", "warm_up", "stage1", "stage2")
FLAGS = {
    "src_only": ["--stage", "src_only"],
    "warm_up": ["--stage", "warm_up", "--S_pseudo_src", "1"],
    "stage1": ["--stage", "stage1", "--ema", "--proto_rectify", "--moving_prototype", "--proto_consistW", "10",
               "--rce", "--regular_w", "0.1", "--S_pseudo", "1", "--train_thred", "0.3", "--proto_momentum", "0.1"],
    "stage2": ["--stage", "stage2", "--S_pseudo", "1", "--distillation", "1", "--rce", "--finetune"],
}


def options(stage: str, *extra: str) -> argparse.Namespace:
    """Tiny CPU options (one block per ResNet stage, random init, 13 classes) for one stage."""
    # 13 classes are SYNTHIA's protocol (GTA5 labels are 19-class only); no data is read here
    return parse_opt(["--src_dataset", "synthia", "--device", "cpu", "--backbone_layers", "1,1,1,1",
                      "--student_init", "random", "--no_resume", "--bn", "bn", "--n_class", str(N_CLASS), "--train_iters", "10", "--lr", "0.01",
                      *FLAGS[stage], *extra])


def fixed_inputs() -> Dict[str, object]:
    """Source and target batches of two 32 x 32 images, a 48 x 48 full target image, pseudo labels, view params."""
    g = torch.Generator().manual_seed(SEED)
    x = {name: torch.randn(2, 3, 32, 32, generator=g) for name in ("source", "source_strong", "target", "target_strong")}
    x["full"] = torch.randn(2, 3, 48, 48, generator=g)
    x["label"] = torch.randint(0, N_CLASS, (2, 32, 32), generator=g)
    x["label"][:, :6] = IGNORE_INDEX
    x["lp"] = torch.randint(0, N_CLASS, (2, 32, 32), generator=g)
    x["lp"][:, -6:] = IGNORE_INDEX
    x["lpsoft"] = F.softmax(torch.randn(2, N_CLASS, 32, 32, generator=g) * 3, dim=1)
    x["prototypes"] = torch.randn(N_CLASS, 256, generator=g)
    unset = 1e4  # RandAugmentMC's "op not drawn"
    x["strong"] = default_collate([
        {"Hflip": True, "ShearX": 0.2, "ShearY": unset, "TranslateX": unset, "TranslateY": 8.0, "Rotate": unset,
         "CutoutAbs": (4, 4, 12, 12)},
        {"Hflip": False, "ShearX": unset, "ShearY": unset, "TranslateX": -8.0, "TranslateY": unset, "Rotate": 20.0,
         "CutoutAbs": (16, 8, 24, 16)}])
    x["weak"] = default_collate([{"RandomSized": (40, 40), "RandomCrop": (4, 36, 8, 40), "RandomHorizontallyFlip": f}
                                 for f in (False, True)])
    return x


def record(model: CustomModel, losses: List[float]) -> Dict[str, torch.Tensor]:
    """Everything one step changed: losses, every network's state, optimiser state, learning rates, prototypes."""
    out = {f"loss/{i}": torch.tensor(v, dtype=torch.float64) for i, v in enumerate(losses)}
    nets = {"student": model.BaseNet, "discriminator": getattr(model, "net_D", None),
            "ema": getattr(model, "BaseNet_ema", None)}  # the teacher is frozen: test_proda_models checks it
    for role, net in nets.items():
        for key, value in (net.state_dict().items() if net is not None else ()):
            out[f"{role}/{key}"] = value
    for i, optimizer in enumerate(model.optimizers):
        for index, state in optimizer.state_dict()["state"].items():
            for key, value in state.items():
                out[f"optimizer{i}/{index}/{key}"] = torch.as_tensor(value)
        out[f"optimizer{i}/lr"] = torch.tensor([g["lr"] for g in optimizer.param_groups], dtype=torch.float64)
    out["prototypes"] = model.objective_vectors
    out["prototype_counts"] = model.objective_vectors_num
    return out


def run_stage(stage: str, x: Dict[str, object],
              teacher_path: str = "") -> Tuple[CustomModel, Dict[str, torch.Tensor]]:
    """Build the stage's model from a fixed seed and take one step (and one schedule step) on `x`."""
    torch.manual_seed(SEED)
    model = CustomModel(options(stage, *(["--resume_path", teacher_path] if teacher_path else [])), LOG)
    model.train()
    model.optimizer_zerograd()
    if stage == "src_only":
        losses = model.step_source(x["source"], x["label"])
    elif stage == "warm_up":
        losses = model.step_adv(x["source"], x["label"], x["target"], x["source_strong"], x["strong"])
    elif stage == "stage1":
        model.objective_vectors = x["prototypes"]
        losses = model.step(x["source"], x["label"], x["target"], x["target_strong"], x["strong"], None,
                            x["lpsoft"], x["full"], x["weak"])
    else:
        losses = model.step_distillation(x["source"], x["label"], x["target"], x["target_strong"], x["strong"],
                                         x["lp"])
    model.scheduler_step()
    return model, record(model, list(losses) if isinstance(losses, tuple) else [losses])


def run_all(folder: str) -> Dict[str, Dict[str, torch.Tensor]]:
    """One step of every stage; stage 2's teacher is the source-only model after its step."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bits of CPU reductions may depend on the thread count
    try:
        x = fixed_inputs()
        results = {}
        for stage in STAGES:
            teacher = os.path.join(folder, "teacher.pkl") if stage == "stage2" else ""
            model, results[stage] = run_stage(stage, x, teacher)
            if stage == "src_only":
                atomic_save(model.reference_checkpoint(iters=1, best_iou=0.5), os.path.join(folder, "teacher.pkl"))
        return results
    finally:
        torch.set_num_threads(threads)


def digest(t: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and bytes."""
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes()).hexdigest()


def sums(t: torch.Tensor) -> torch.Tensor:
    """The float64 sum: how far apart two results are when their bits differ."""
    return t.detach().cpu().double().sum().reshape(1)


def fingerprint() -> Dict[str, str]:
    """What the bits of a CPU run depend on."""
    return {"torch": str(torch.__version__), "cpu": torch.backends.cpu.get_cpu_capability(), "threads": "1"}


def golden_of(results: Dict[str, Dict[str, torch.Tensor]]) -> Dict[str, object]:
    """The golden file's content, per stage: tensor names, their digests and an M x 1 tensor of their sums."""
    return {"commit": GOLDEN_COMMIT, "fingerprint": fingerprint(),
            "names": {s: sorted(r) for s, r in results.items()},
            "digests": {s: [digest(r[k]) for k in sorted(r)] for s, r in results.items()},
            "sums": {s: torch.stack([sums(r[k]) for k in sorted(r)]) for s, r in results.items()}}


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """Today's code, one step per stage."""
    return golden_of(run_all(str(tmp_path_factory.mktemp("pinning"))))


@pytest.fixture(scope="module")
def golden():
    """The golden file written by the pre-refactor commit."""
    return torch.load(GOLDEN, weights_only=True)


@pytest.mark.parametrize("stage", STAGES)
def test_one_step_equals_the_pre_refactor_code(stage, observed, golden):
    assert golden["commit"] == GOLDEN_COMMIT
    names = golden["names"][stage]
    assert observed["names"][stage] == names  # the same networks, state-dict keys, optimiser state, losses
    assert any(k.startswith("student/") for k in names) and any(k.startswith("loss/") for k in names)
    now, then = observed["sums"][stage], golden["sums"][stage]
    if golden["fingerprint"] == observed["fingerprint"]:
        differ = [i for i, (a, b) in enumerate(zip(observed["digests"][stage], golden["digests"][stage])) if a != b]
        detail = {names[i]: (now[i].tolist(), then[i].tolist()) for i in differ[:5]}
        assert not differ, f"{len(differ)} tensors differ in their bits, e.g. sums now vs then: {detail}"
    else:  # other kernels: close, not identical
        close = torch.isclose(now, then, rtol=1e-4, atol=1e-6).all(1)
        assert close.all(), [names[i] for i in (~close).nonzero().flatten().tolist()[:5]]


def test_the_steps_moved_what_they_should(observed):
    # what is pinned is a real step: the student, the prototypes and their counts moved, nothing is NaN
    def value(stage, name):
        return observed["sums"][stage][observed["names"][stage].index(name)]
    assert not torch.equal(value("src_only", "student/conv1.weight"), value("warm_up", "student/conv1.weight"))
    assert not torch.equal(value("stage1", "prototypes"), sums(fixed_inputs()["prototypes"]))
    assert value("stage1", "prototype_counts")[0] > 0
    assert all(torch.isfinite(s).all() for s in observed["sums"].values())


def main() -> None:
    """Command line: --regenerate writes the golden file from the code as it is now."""
    parser = argparse.ArgumentParser(description="Write tests/data/proda_pinning.pt from the current code.")
    parser.add_argument("--regenerate", action="store_true", required=True)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        golden = golden_of(run_all(folder))
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    atomic_save(golden, GOLDEN)
    print(f"wrote {GOLDEN}: {sum(len(n) for n in golden['names'].values())} tensors, {golden['fingerprint']}")


if __name__ == "__main__":
    main()
