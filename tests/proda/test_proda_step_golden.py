"""Pinning: one step of each ProDA stage on fixed inputs gives the losses, weights, optimiser
state and prototypes that the code of commit c4f2885 (before the stage steps were restructured) gave, within rounding.

The golden file tests/proda/data/proda_pinning.pt was written by the code of commit c4f2885 (the last
commit before `proda/models/adaptation_modelv2.py` was split by concept), with this file as it
was then (it called the reference's positional steps, which that code has; this version calls
`stage_step`):

    mkdir /tmp/c4f2885 && git archive c4f2885 | tar -x -C /tmp/c4f2885
    git show bd38bc6:tests/test_proda_pinning.py > REPO/tests/pinning_then.py
    cd /tmp && PYTHONPATH=/tmp/c4f2885 python REPO/tests/pinning_then.py --regenerate
    mv REPO/tests/data/proda_pinning.pt REPO/tests/proda/data/

(outside the checkout, so that the `proda` on PYTHONPATH is the one imported). Regenerate it
only when a change of numerics is intended, from the code that makes it, and say so in the commit.
The file records what produced it (`produced_by`: commit, torch version, CPU, ATen CPU
capability, thread count, date).

Why a tolerance and not bits: float32 results depend on the CPU's kernels (ATen's SIMD level,
oneDNN's code path on Intel vs AMD, the thread count), which sum in other orders. The golden is
one CPU's rounding; on an AMD EPYC the bits of 154 tensors differed (a loss by 1e-7).
Bits are compared only where both sides come from the same run (e.g. tests/proda/test_proda_models.py,
test_proda_model_protos.py, test_proda_resume.py).

What is stored (the tiny network still has ~30M parameters): per tensor, its float64 L2 norm and
16 values at fixed, evenly spaced flat indices. Float64 sums, stored before, are not a usable
statistic: a tensor of mixed signs sums to nearly 0, and its sum moved by 86 % of itself between
ATen kernels (AVX-512 vs AVX2, warm-up) while no element moved by 6e-6 of the tensor's scale.

Tolerances (TOLERANCES; measured on the project's 2-core Intel Xeon VM, torch 2.14.1, one thread,
between ATEN_CPU_CAPABILITY=avx512, avx2 and default, at seed 8 and seed 1):
- "smooth" tensors (losses, BatchNorm running statistics, prototypes, the discriminator and its
  Adam state: its LeakyReLUs never switch a gradient off): norms at rtol 1e-5, samples at 1e-4 of (|value| + the tensor's rms). A norm's
  relative error is at most the elements' (| ||a|| - ||b|| | <= ||a - b||); float32's eps is 6e-8
  and depth amplifies it; worst seen 6e-7. Samples are judged against the tensor's rms as well,
  because an element near 0 is a difference of larger terms; worst seen 6e-6 of the scale.
- "gradient" tensors (SGD momentum buffers, i.e. this step's gradient, and the student's and EMA's
  parameters, moved by lr x that gradient): norms at rtol 1e-2, samples at 0.2. One step is
  piecewise smooth: a ReLU input within rounding of 0 switches its gradient on or off. With these
  batch-2, 5 x 5 feature maps that happens: at seed 8 one layer-4 ReLU input is 1e-5 from 0 and
  flips under `default` in warm-up (at seed 1, in stage 1), which moves single upstream gradient
  elements by up to 2x their tensor's rms (4 % at the stored samples) and gradient norms by up
  to 1.6e-3; worst seen 0.2 of the tolerance.
- integer tensors (step counters, prototype counts) exactly.
A real change of numerics (a loss term dropped or rescaled, another order of updates) moves the
losses, prototypes or gradient norms by far more. Changes smaller than 1 % of a gradient go
unseen here; the same-run tests pin those.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import tempfile
import time
from typing import Dict, List, Tuple

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from proda.checkpoint import reference_checkpoint
from proda.models.adaptation_modelv2 import CustomModel
from proda.options import parse_opt
from proda.utils import IGNORE_INDEX, atomic_save

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "proda_pinning.pt")
GOLDEN_COMMIT = "c4f2885"
N_CLASS = 13
SEED = 8
LOG = logging.getLogger("test_proda_step_golden")
STAGES = ("src_only", "warm_up", "stage1", "stage2")
# the losses each stage logged when the golden was written (stage 1 logs loss_reg as well now)
LOGGED = {"src_only": ["loss_GTA"], "warm_up": ["loss_GTA", "loss_G", "loss_D"],
          "stage1": ["loss", "loss_CTS", "loss_consist"], "stage2": ["loss_GTA", "loss"]}
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
    source = {"img": x["source"], "label": x["label"]}
    target = {"img": x["target"], "img_strong": x["target_strong"], "params": x["strong"]}
    if stage == "warm_up":
        source.update(img_strong=x["source_strong"], params=x["strong"])
    elif stage == "stage1":
        model.objective_vectors = x["prototypes"]
        target.update(lpsoft=x["lpsoft"], img_full=x["full"], weak_params=x["weak"])
    elif stage == "stage2":
        target["lp"] = x["lp"]
    losses = model.stage_step(source, target)
    model.scheduler_step()
    return model, record(model, [losses[key] for key in LOGGED[stage]])


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
                atomic_save(reference_checkpoint(model, iters=1, best_iou=0.5), os.path.join(folder, "teacher.pkl"))
        return results
    finally:
        torch.set_num_threads(threads)


# Tolerances, (norm, sample): see the module docstring. Samples are relative to |value| + the
# tensor's rms. "smooth": losses, running statistics, prototypes, discriminator and Adam state;
# "gradient": SGD momentum buffers (the gradient itself) and the student's and EMA's parameters
# (moved by lr x that gradient).
TOLERANCES = {"smooth": (1e-5, 1e-4), "gradient": (1e-2, 0.2)}
N_SAMPLES = 16
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def tier(name: str) -> str:
    """'gradient' for a tensor that carries this step's SGD gradient, else 'smooth'."""
    carries = "momentum_buffer" in name or (name.startswith(("student/", "ema/")) and not name.endswith(BUFFERS))
    return "gradient" if carries else "smooth"


def sample_indices(n: int) -> torch.Tensor:
    """Up to N_SAMPLES evenly spaced flat indices of an n-element tensor, first and last included."""
    return torch.linspace(0, n - 1, min(N_SAMPLES, n), dtype=torch.float64).round().long()


def summary(t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A tensor's float64 L2 norm (1-element) and its N_SAMPLES values at sample_indices (NaN-padded)."""
    flat = t.detach().cpu().double().flatten()
    values = torch.full((N_SAMPLES,), float("nan"), dtype=torch.float64)
    values[:min(N_SAMPLES, flat.numel())] = flat[sample_indices(flat.numel())]
    return flat.norm().reshape(1), values


def produced_by() -> Dict[str, str]:
    """What the numbers of a CPU run depend on: commit, torch, CPU model, ATen capability, threads, date."""
    model = platform.processor()
    if os.path.exists("/proc/cpuinfo"):  # Linux: the marketing name (platform gives only the architecture)
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    return {"commit": GOLDEN_COMMIT, "torch": str(torch.__version__), "cpu": model,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": "1",
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def golden_of(results: Dict[str, Dict[str, torch.Tensor]]) -> Dict[str, object]:
    """The golden file's content, per stage: tensor names, sizes, which are integer, norms and samples."""
    out: Dict[str, object] = {"commit": GOLDEN_COMMIT, "produced_by": produced_by(),
                              "names": {}, "numels": {}, "integer": {}, "norms": {}, "samples": {}}
    for stage, r in results.items():
        names = sorted(r)
        parts = [summary(r[k]) for k in names]
        out["names"][stage] = names
        out["numels"][stage] = [r[k].numel() for k in names]
        out["integer"][stage] = [not r[k].is_floating_point() for k in names]
        out["norms"][stage] = torch.cat([norm for norm, _ in parts])
        out["samples"][stage] = torch.stack([values for _, values in parts])  # M x N_SAMPLES
    return out


def outside_tolerance(observed: Dict[str, object], golden: Dict[str, object], stage: str) -> Dict[str, str]:
    """Tensor name -> how it differs, for every tensor of `stage` outside the stated tolerance."""
    bad = {}
    names = golden["names"][stage]
    for i, name in enumerate(names):
        norm_now, norm_then = observed["norms"][stage][i], golden["norms"][stage][i]
        kept = min(N_SAMPLES, golden["numels"][stage][i])
        now, then = observed["samples"][stage][i, :kept], golden["samples"][stage][i, :kept]
        if golden["integer"][stage][i]:
            ok = torch.equal(now, then) and torch.equal(norm_now, norm_then)
        else:
            rtol_norm, rtol_sample = TOLERANCES[tier(name)]
            rms = float(norm_then) / max(1, golden["numels"][stage][i]) ** 0.5
            ok = (bool(torch.isclose(norm_now, norm_then, rtol=rtol_norm, atol=0.0))
                  and bool(((now - then).abs() <= rtol_sample * (then.abs() + rms)).all()))
        if not ok:
            bad[name] = f"norm {norm_now.item():.9g} now vs {norm_then.item():.9g} then, samples {now[:3].tolist()} vs {then[:3].tolist()}"
    return bad


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
    assert golden["commit"] == GOLDEN_COMMIT == golden["produced_by"]["commit"]
    names = golden["names"][stage]
    assert observed["names"][stage] == names  # the same networks, state-dict keys, optimiser state, losses
    assert observed["numels"][stage] == golden["numels"][stage]
    assert any(k.startswith("student/") for k in names) and any(k.startswith("loss/") for k in names)
    bad = outside_tolerance(observed, golden, stage)
    assert not bad, (f"{len(bad)} of {len(names)} tensors outside the tolerances {TOLERANCES} (norm, samples); "
                     f"golden from {golden['produced_by']}, now {produced_by()}; e.g. "
                     f"{dict(list(bad.items())[:5])}")


def test_the_steps_moved_what_they_should(observed):
    # what is pinned is a real step: the student, the prototypes and their counts moved, nothing is NaN
    def value(stage, name):
        return observed["samples"][stage][observed["names"][stage].index(name)]
    assert not torch.equal(value("src_only", "student/conv1.weight"), value("warm_up", "student/conv1.weight"))
    assert not torch.equal(value("stage1", "prototypes"), summary(fixed_inputs()["prototypes"])[1])
    assert value("stage1", "prototype_counts").nan_to_num().max() > 0
    assert all(torch.isfinite(n).all() for n in observed["norms"].values())


def perturbed(observed: Dict[str, object], stage: str, name: str, by: float) -> Dict[str, object]:
    """A copy of `observed` whose first sample of `name` moved by `by` times the tensor's rms."""
    fake = {k: (dict(v) if isinstance(v, dict) else v) for k, v in observed.items()}
    i = observed["names"][stage].index(name)
    fake["samples"][stage] = observed["samples"][stage].clone()
    fake["samples"][stage][i, 0] += by * float(observed["norms"][stage][i]) / observed["numels"][stage][i] ** 0.5
    return fake


@pytest.mark.parametrize("stage, name, by", [("stage1", "prototypes", 1e-3), ("warm_up", "loss/1", 1e-3),
                                             ("stage2", "student/layer5.head.1.weight", 0.5)])
def test_a_perturbation_of_one_value_is_caught(observed, stage, name, by):
    # the tolerances see a change far smaller than a real change of numerics: one value moved by
    # 1e-3 of its tensor's scale (smooth) or by half of it (gradient)
    assert list(outside_tolerance(perturbed(observed, stage, name, by), observed, stage)) == [name]
    assert not outside_tolerance(observed, observed, stage)



def main() -> None:
    """Command line: --regenerate writes the golden file from the code as it is now."""
    parser = argparse.ArgumentParser(description="Write tests/proda/data/proda_pinning.pt from the current code.")
    parser.add_argument("--regenerate", action="store_true", required=True)
    parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        golden = golden_of(run_all(folder))
    os.makedirs(os.path.dirname(GOLDEN), exist_ok=True)
    atomic_save(golden, GOLDEN)
    print(f"wrote {GOLDEN}: {sum(len(n) for n in golden['names'].values())} tensors, {golden['produced_by']}")


if __name__ == "__main__":
    main()
