"""Time and peak memory of one ProDA optimiser step per stage: batch, accumulation, AMP, fast paths.

    python benchmarks/proda_step_bench.py                       # reference sizes (GPU)
    python benchmarks/proda_step_bench.py --scale 0.125 --stages warm_up --configs fp32,k2,amp

For warm-up, stage 1 and stage 2 at the reference sizes (896x512 crops, the 2048x1024 full
target image of stage 1, DeepLabv2-ResNet-101 with random weights, 19 classes, the stage's
recipe from configs/gta2city_*.py), each configuration runs in its own process, so its peak
memory is its own: CPU max RSS (the whole process: model, optimiser state, activations), CUDA
torch.cuda.max_memory_allocated. One line per configuration, with ratios to the bs-4 float32 line
of the same stage. --scale shrinks every image side (CPU runs). Configurations:

    fp32   bs 4                      k2 / k4    bs 4 as 2 x 2 / 4 x 1 micro-batches
    amp    bs 4 under --amp (bf16)   amp_k2 / amp_k4
    cl     channels_last             compile    torch.compile of the student (and EMA / teacher)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CONFIGS = {"fp32": dict(k=1), "k2": dict(k=2), "k4": dict(k=4), "amp": dict(k=1, amp=True),
           "amp_k2": dict(k=2, amp=True), "amp_k4": dict(k=4, amp=True), "cl": dict(k=1, channels_last=True),
           "compile": dict(k=1, compile=True)}
STAGE_CONFIGS = {"warm_up": "gta2city_warmup.py", "stage1": "gta2city_stage1.py", "stage2": "gta2city_stage2.py"}
CROP, FULL, N_CLASS = (896, 512), (2048, 1024), 19


def scaled(size, scale: float) -> List[int]:
    """W, H scaled and rounded to a multiple of 8 (at least 32)."""
    return [max(32, int(round(s * scale / 8)) * 8) for s in size]


def options(args: argparse.Namespace, stage: str, cfg: Dict[str, Any], teacher: str) -> argparse.Namespace:
    """The stage's recipe with random weights, the benchmark's batch and the configuration's flags."""
    from proda.options import parse_opt
    flags = ["--config", os.path.join(REPO, "configs", STAGE_CONFIGS[stage]), "--student_init", "random",
             "--no_resume", "--device", args.device, "--bs", str(args.bs), "--accum_steps", str(cfg["k"]),
             "--backbone_layers", args.layers, "--bn", "bn", "--resume_path", teacher]
    if cfg.get("amp"):
        flags += ["--amp", args.amp_dtype]
    return parse_opt(flags)


def batch(opt: argparse.Namespace, crop: List[int], full: List[int],
          device: torch.device) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Synthetic source and target batches as the loaders yield them (every stage's keys; each step reads its own),
    with recorded strong / weak view parameters."""
    from PIL import Image
    from torch.utils.data import default_collate

    from proda.data.randaugment import RandAugmentMC
    (w, h), (fw, fh), n = crop, full, opt.bs
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, N_CLASS, (n, h, w), generator=g)
    labels[:, : h // 8] = 250
    x = {"source": torch.rand(n, 3, h, w, generator=g), "label": labels,
         "target": torch.rand(n, 3, h, w, generator=g), "strong": torch.rand(n, 3, h, w, generator=g),
         "full": torch.rand(n, 3, fh, fw, generator=g), "lp": labels.flip(1).clone(),
         "lpsoft": torch.softmax(torch.randn(n, N_CLASS, h, w, generator=g), 1)}
    x = {k: v.to(device) for k, v in x.items()}
    x["params"] = default_collate([RandAugmentMC(2, 10)(Image.new("RGB", (w, h)))[1] for _ in range(n)])
    x["weak"] = default_collate([{"RandomSized": (fh, fw), "RandomCrop": (0, h, 0, w), "RandomHorizontallyFlip": False}
                                 for _ in range(n)])
    source = {"img": x["source"], "label": x["label"], "img_strong": x["strong"], "params": x["params"]}
    target = {"img": x["target"], "img_strong": x["strong"], "params": x["params"], "lp": x["lp"],
              "lpsoft": x["lpsoft"], "img_full": x["full"], "weak_params": x["weak"]}
    return source, target


def step(model, source: Dict[str, Any], target: Dict[str, Any]) -> None:
    """One optimiser step of the model's stage (as train.py calls it)."""
    model.optimizer_zerograd()
    model.stage_step(source, target)
    model.scheduler_step()


def fast_path(model, cfg: Dict[str, Any]) -> None:
    """channels_last and torch.compile where the configuration asks (the wrapped modules are what steps call)."""
    nets = ["BaseNet_DP", "BaseNet_ema", "teacher"]
    for name in nets:
        net = getattr(model, name, None)
        if net is None:
            continue
        if cfg.get("channels_last"):
            net.to(memory_format=torch.channels_last)
        if cfg.get("compile"):
            setattr(model, name, torch.compile(net))


def run_one(args: argparse.Namespace) -> None:
    """Child process: build the stage's model, take warm-up steps, time --steps steps, print one JSON line."""
    from proda.models.adaptation_modelv2 import CustomModel
    from proda.models.deeplabv2 import Deeplab
    from dacommon.device import get_device
    from proda.utils import atomic_save
    torch.manual_seed(0)
    stage, cfg = args.one.split(":")
    cfg_flags = CONFIGS[cfg]
    device = get_device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        teacher = os.path.join(folder, "teacher.pkl")
        if stage == "stage2":  # a random previous-stage model to distil from
            net = Deeplab(torch.nn.BatchNorm2d, num_classes=N_CLASS, init="random",
                          layers=[int(v) for v in args.layers.split(",")])
            atomic_save({"ResNet101": {"model_state": net.state_dict()}}, teacher)
            del net
        opt = options(args, stage, cfg_flags, teacher)
        model = CustomModel(opt, logging.getLogger("bench"))
    if stage == "stage1":
        model.objective_vectors = torch.randn(N_CLASS, 256)
    model.train()
    if opt.freeze_bn:
        model.freeze_bn_apply()
    fast_path(model, cfg_flags)
    source, target = batch(opt, scaled(CROP, args.scale), scaled(FULL, args.scale), device)
    for _ in range(args.warmup):
        step(model, source, target)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(model, source, target)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"stage": stage, "config": cfg, "s_per_step": (time.perf_counter() - start) / args.steps,
                      "peak_mib": peak, "device": str(device)}), flush=True)


def run_all(args: argparse.Namespace) -> int:
    """Parent: one child process per (stage, configuration); print the table."""
    header = (f"# ProDA step benchmark: bs {args.bs}, scale {args.scale} (crop {scaled(CROP, args.scale)}, "
              f"full {scaled(FULL, args.scale)}), layers {args.layers}, torch {torch.__version__}, "
              f"threads {torch.get_num_threads()}, amp dtype {args.amp_dtype}")
    print(header)
    print(f"{'stage':8} {'config':8} {'s/step':>9} {'peak MiB':>10} {'time x':>7} {'mem x':>6}")
    failed = 0
    for stage in args.stages.split(","):
        base = None
        for cfg in args.configs.split(","):
            cmd = [sys.executable, os.path.abspath(__file__), "--one", f"{stage}:{cfg}"] + child_flags(args)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                failed += 1
                print(f"{stage:8} {cfg:8} {'failed':>9}   over --timeout {args.timeout:.0f} s", flush=True)
                continue
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode or not lines:
                failed += 1
                why = (proc.stderr.strip().splitlines() or ["no output"])[-1][:100]
                print(f"{stage:8} {cfg:8} {'failed':>9}   {why}", flush=True)
                continue
            r = json.loads(lines[-1])
            base = base or (r if cfg == "fp32" else None)
            ratio = (f"{r['s_per_step'] / base['s_per_step']:7.2f} {r['peak_mib'] / base['peak_mib']:6.2f}"
                     if base else f"{'-':>7} {'-':>6}")
            print(f"{stage:8} {cfg:8} {r['s_per_step']:9.3f} {r['peak_mib']:10.0f} {ratio}", flush=True)
    return 1 if failed else 0


def child_flags(args: argparse.Namespace) -> List[str]:
    """The options a child process needs again."""
    return ["--scale", str(args.scale), "--bs", str(args.bs), "--layers", args.layers, "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--device", args.device, "--amp_dtype", args.amp_dtype]


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stages", default="warm_up,stage1,stage2")
    p.add_argument("--configs", default="fp32,k2,k4,amp,amp_k2,amp_k4,cl,compile",
                   help=f"comma-separated, from {list(CONFIGS)}; ratios are to fp32 (put it first)")
    p.add_argument("--scale", type=float, default=1.0, help="image sides x this (1: the reference sizes)")
    p.add_argument("--bs", type=int, default=4, help="effective batch")
    p.add_argument("--layers", default="3,4,23,3", help="ResNet blocks per stage (3,4,23,3: ResNet-101)")
    p.add_argument("--steps", type=int, default=3, help="timed optimiser steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, cudnn, compile)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp_dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        run_one(args)
    else:
        sys.exit(run_all(args))


if __name__ == "__main__":
    main()
