"""Time per batch of source inference, norm and tent, with peak memory, on the default and the fast path.

    python benchmarks/tent_bench.py                      # WRN-28-10 bs16 + offline CNN bs100
    python benchmarks/tent_bench.py --wrn-batch 16 64 --iters 10 --no-compile --threads 1

Models: robustbench's WideResNet-28-10 (the reference's `Standard` architecture, random weights)
and the offline benchmark's MnistCNN. One line per model and batch size, e.g.

    wrn28-10 bs16: source 0.87 s, norm 0.84 s, tent 1.67 s, tent/source 1.92, norm/source 0.96, peak 2.1 GB

The default path is the reference's numerics (float32, contiguous, eager). The fast path adds
channels_last, torch.compile (where it compiles) and bfloat16 autocast on CUDA; its line ends
with its time relative to the default path, measured in the same run. Each path runs in its
own process so that its peak memory (max RSS on CPU, max allocated on CUDA) is its own; within
a process the three methods alternate every iteration so load changes hit them alike, and the
median over iterations is reported.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import resource
import statistics
import sys
import time
from copy import deepcopy
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

METHODS = ("source", "norm", "tent")


def build_model(name: str) -> nn.Module:
    """The benchmarked architecture with random weights, in eval mode as robustbench returns it."""
    torch.manual_seed(0)
    if name == "wrn28-10":
        import tent  # noqa: F401  (robustbench needs the autoattack alias)
        from robustbench.model_zoo.architectures.wide_resnet import WideResNet
        return WideResNet(depth=28, widen_factor=10).eval()
    from tent.models import MnistCNN
    return MnistCNN(16).eval()


def build_methods(model: nn.Module, fast: bool, compile_: bool, device: torch.device) -> Dict[str, nn.Module]:
    """source / norm / tent, each on its own copy of the model, set up by tent/methods.py itself."""
    from tent import conf
    from tent.methods import prepare_model, setup_model

    conf.reset_cfg()  # the reference settings (Adam 1e-3, BN eps 1e-5 / momentum 0.1), plus the fast path
    conf.cfg.PERF.CHANNELS_LAST = fast
    conf.cfg.PERF.COMPILE = fast and compile_
    return {m: setup_model(m, prepare_model(deepcopy(model), device)) for m in METHODS}


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_path(name: str, batch_size: int, fast: bool, compile_: bool, warmup: int, iters: int,
             threads: int, timer: str) -> Dict[str, object]:
    """Median seconds per batch of each method, and the process's peak memory (runs in a child)."""
    if threads:
        torch.set_num_threads(threads)
    from dacommon.device import get_device

    device = get_device("auto")
    # process CPU time is robust to other processes on a shared machine (use with --threads 1)
    clock = time.process_time if timer == "cpu" and device.type == "cpu" else time.perf_counter
    amp = fast and device.type == "cuda"
    methods = build_methods(build_model(name), fast, compile_, device)
    x = torch.rand(batch_size, 3, 32, 32, device=device)
    if fast:
        x = x.contiguous(memory_format=torch.channels_last)
    times: Dict[str, List[float]] = {m: [] for m in METHODS}
    start = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        for i in range(warmup + iters):
            for method in METHODS:  # interleaved, so a load spike hits all methods
                synchronize(device)
                t0 = clock()
                methods[method](x)
                synchronize(device)
                if i >= warmup:
                    times[method].append(clock() - t0)
            if i == warmup - 1:
                warm_s = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux
    return {"median": {m: statistics.median(t) for m, t in times.items()}, "peak": peak,
            "warmup_s": warm_s if warmup else 0.0, "device": str(device),
            "threads": torch.get_num_threads()}


def in_child(*args) -> Dict[str, object]:
    """run_path in a fresh process, so peak memory and compile caches are per path."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(run_path, *args).result()


def line(label: str, result: Dict[str, object]) -> str:
    """The issue's one-line format."""
    t = result["median"]
    return (f"{label}: source {t['source']:.3g} s, norm {t['norm']:.3g} s, tent {t['tent']:.3g} s, "
            f"tent/source {t['tent'] / t['source']:.2f}, norm/source {t['norm'] / t['source']:.2f}, "
            f"peak {result['peak'] / 1e9:.2g} GB")


def main() -> None:
    """Benchmark every model x batch size on the default path, then the fast path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["wrn28-10", "mnist-cnn"], choices=["wrn28-10", "mnist-cnn"])
    parser.add_argument("--wrn-batch", nargs="+", type=int, default=[16], help="WRN-28-10 batch sizes")
    parser.add_argument("--cnn-batch", nargs="+", type=int, default=[100], help="MnistCNN batch sizes")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations (compilation happens here)")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per method")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-fast", action="store_true", help="skip the fast path")
    parser.add_argument("--no-compile", action="store_true", help="fast path without torch.compile")
    parser.add_argument("--timer", choices=["wall", "cpu"], default="wall",
                        help="wall clock, or process CPU time (CPU only; robust on a busy machine with --threads 1)")
    args = parser.parse_args()

    for name in args.models:
        for bs in (args.wrn_batch if name == "wrn28-10" else args.cnn_batch):
            default = in_child(name, bs, False, False, args.warmup, args.iters, args.threads, args.timer)
            print(line(f"{name} bs{bs}", default), flush=True)
            if args.no_fast:
                continue
            fast = in_child(name, bs, True, not args.no_compile, max(args.warmup, 2), args.iters, args.threads,
                            args.timer)
            parts = ["channels_last"] + ([] if args.no_compile else ["compile"])
            parts += ["bf16"] if fast["device"].startswith("cuda") else []
            label = f"{name} bs{bs} fast ({'+'.join(parts)})"
            speedup = {m: fast["median"][m] / default["median"][m] for m in METHODS}
            print(line(label, fast) + ", fast/default " + ", ".join(f"{m} {speedup[m]:.2f}" for m in METHODS)
                  + f" (warm-up incl. compile {fast['warmup_s']:.0f} s)", flush=True)
    print(f"device {default['device']}, {default['threads']} threads, {args.iters} timed iterations "
          f"(median, {args.timer} time), torch {torch.__version__}")


if __name__ == "__main__":
    main()
