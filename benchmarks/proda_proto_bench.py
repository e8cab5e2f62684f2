"""Time ProDA's vectorised prototype operations against straightforward per-class loops.

    python benchmarks/proda_proto_bench.py                 # batch 2 and 4, CPU
    python benchmarks/proda_proto_bench.py --batch 4 --device cuda --repeats 10

Sizes are those of stage-1 training: 256-channel features of a 896 x 512 crop at 1/4 resolution
(224 x 128), 19 classes; get_prototype_weight starts from the EMA features of the full
2048 x 1024 image (512 x 256) and maps them onto the weak view first. The loop versions
(tests/proda/reference_loops.py) are the reference's code paths (one pass per class, one .item() per
image and class, one update per vector); each row also reports how far apart the two results are (the distances
element by element, the rest relative to the largest value).

The distance is timed on two kinds of features: 'spread' (random, every pixel far from every
prototype, the fast path) and 'clustered' (30% of the pixels within 5% of their class prototype,
where the vectorised form recomputes those pixels in float64; its slowest case). In
get_prototype_weight most of the time is full2weak's bilinear resize of the full-image features,
which both versions share. label_strong_T has the same structure in both (a loop over images and
recorded ops); only the per-op .item() calls are gone.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# run from a checkout; tests/proda/ itself, since an installed package may own the name `tests`
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "proda")]
from reference_loops import loop_distance, loop_mean_vectors, loop_strong_transform, loop_update  # noqa: E402
from proda.data.replay import full_to_weak, strong_transform  # noqa: E402
from proda.models.prototypes import class_mean_vectors, prototype_distance, update_prototypes  # noqa: E402

logger = logging.getLogger("proda_proto_bench")
N_CLASS, CHANNELS, H, W = 19, 256, 128, 224
FULL_H, FULL_W = 256, 512


# ----------------------------------------------------------------------------- loop versions (the reference's form)

def loop_prototype_weight(feat_full: torch.Tensor, protos: torch.Tensor, weak: Dict) -> torch.Tensor:
    """get_prototype_weight as the reference: full2weak, the loop distance, softmax."""
    distance = loop_distance(full_to_weak(feat_full, weak), protos)
    return F.softmax(-(distance - distance.min(dim=1, keepdim=True)[0]), dim=1)


def fast_prototype_weight(feat_full: torch.Tensor, protos: torch.Tensor, weak: Dict) -> torch.Tensor:
    """get_prototype_weight with the vectorised distance."""
    distance = prototype_distance(full_to_weak(feat_full, weak), protos)
    return F.softmax(-(distance - distance.min(dim=1, keepdim=True)[0]), dim=1)


# ----------------------------------------------------------------------------- inputs

def clustered_features(protos: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """Random features, 30% of whose pixels sit within 5% of their class prototype's norm."""
    feat = torch.randn(n, CHANNELS, H, W, device=device)
    cls = torch.randint(0, N_CLASS, (n, H, W), device=device)
    near = protos[cls].permute(0, 3, 1, 2) + 0.05 * torch.randn(n, CHANNELS, H, W, device=device)
    tight = torch.rand(n, 1, H, W, device=device) < 0.3
    return torch.where(tight, near, feat).contiguous()  # N x C x H x W memory, like a network's output


def collated_params(n: int) -> Tuple[Dict, Dict]:
    """Recorded weak-view params (full 2048 x 1024 -> ~1.2x -> 896 x 512 crop) and strong-view params."""
    weak = {"RandomSized": [torch.full((n,), 1222), torch.full((n,), 2444)],
            "RandomCrop": [torch.full((n,), 300), torch.full((n,), 812), torch.full((n,), 700), torch.full((n,), 1596)],
            "RandomHorizontallyFlip": torch.arange(n) % 2 == 0}
    strong = {"Hflip": torch.arange(n) % 2 == 1,
              "ShearX": torch.tensor([0.12, 1e4, -0.2, 1e4][:n], dtype=torch.float64),
              "ShearY": torch.full((n,), 1e4, dtype=torch.float64),
              "TranslateX": torch.tensor([1e4, 120.0, 1e4, -80.0][:n], dtype=torch.float64),
              "TranslateY": torch.full((n,), 1e4, dtype=torch.float64),
              "Rotate": torch.tensor([1e4, 1e4, 20.0, 1e4][:n], dtype=torch.float64),
              "CutoutAbs": [torch.full((n,), 100), torch.full((n,), 60), torch.full((n,), 270), torch.full((n,), 230)]}
    return weak, strong


# ----------------------------------------------------------------------------- timing

def _run(fn: Callable[[], object], device: torch.device) -> Tuple[float, object]:
    """Wall time of one call of fn (synchronised on CUDA) and its result."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def compare(loop: Callable[[], object], fast: Callable[[], object], repeats: int,
            device: torch.device) -> Tuple[float, float, object, object]:
    """Best-of-`repeats` times of both versions, run alternately (fair under a shared, noisy CPU).

    One warm-up call each first. Returns (loop s, vectorised s, loop result, vectorised result).
    """
    want, got = loop(), fast()
    t_loop, t_fast = [], []
    for _ in range(repeats):
        t, want = _run(loop, device)
        t_loop.append(t)
        t, got = _run(fast, device)
        t_fast.append(t)
    return min(t_loop), min(t_fast), want, got


def max_rel_err(a: torch.Tensor, b: torch.Tensor, elementwise: bool = False) -> float:
    """Largest error relative to the largest reference value, or to each reference value (distances)."""
    if elementwise:
        return ((a - b).abs() / b.abs().clamp_min(1e-12)).max().item()
    return ((a - b).abs().max() / b.abs().max()).item()


def bench_batch(n: int, device: torch.device, repeats: int) -> List[Tuple[str, float, float, float]]:
    """(op, loop seconds, vectorised seconds, max relative error) rows for batch size n."""
    torch.manual_seed(0)
    protos = torch.randn(N_CLASS, CHANNELS, device=device)
    rows = []
    for kind, feat in (("spread", torch.randn(n, CHANNELS, H, W, device=device)),
                       ("clustered", clustered_features(protos, n, device))):
        t_loop, t_fast, want, got = compare(lambda: loop_distance(feat, protos),
                                            lambda: prototype_distance(feat, protos), repeats, device)
        rows.append((f"feat_prototype_distance ({kind})", t_loop, t_fast, max_rel_err(got, want, elementwise=True)))

    feat = torch.randn(n, CHANNELS, H, W, device=device)
    logits = torch.randn(n, N_CLASS, H, W, device=device) * 3
    t_loop, t_fast, (want_v, want_ids), (vectors, valid) = compare(
        lambda: loop_mean_vectors(feat, logits, N_CLASS), lambda: class_mean_vectors(feat, logits, N_CLASS), repeats, device)
    assert valid.nonzero()[:, 1].tolist() == want_ids
    rows.append(("calculate_mean_vector", t_loop, t_fast, max_rel_err(vectors[valid], torch.stack(want_v).flatten(1))))

    weak, strong = collated_params(n)
    feat_full = torch.randn(n, CHANNELS, FULL_H, FULL_W, device=device)
    t_loop, t_fast, want, got = compare(lambda: loop_prototype_weight(feat_full, protos, weak),
                                        lambda: fast_prototype_weight(feat_full, protos, weak), repeats, device)
    rows.append(("get_prototype_weight (incl. full2weak)", t_loop, t_fast, max_rel_err(got, want)))

    counts = torch.zeros(N_CLASS, device=device)
    start = protos.clone()

    def loop_run() -> torch.Tensor:
        p, c = start.clone(), counts.clone()
        loop_update(p, c, want_v, want_ids)
        return p

    def fast_run() -> torch.Tensor:
        p, c = start.clone(), counts.clone()
        update_prototypes(p, c, vectors[valid], torch.as_tensor(want_ids, device=device), 1e-4, start_mean=False)
        return p

    t_loop, t_fast, want, got = compare(loop_run, fast_run, repeats, device)
    rows.append((f"update_objective_SingleVector x{len(want_ids)}", t_loop, t_fast, max_rel_err(got, want)))

    distance = torch.rand(n, N_CLASS, H, W, device=device) * 10
    t_loop, t_fast, want, got = compare(lambda: loop_strong_transform(distance, strong, 250, 4),
                                        lambda: strong_transform(distance, strong, 250, 4), repeats, device)
    rows.append(("label_strong_T (19-channel distances)", t_loop, t_fast, max_rel_err(got, want)))
    return rows


def main() -> None:
    """Parse the flags, run each batch size and log one table per batch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device(args.device)
    logger.info("device %s, %d CPU threads, features %d x %d x %d, %d classes, best of %d alternating runs",
                device, torch.get_num_threads(), CHANNELS, H, W, N_CLASS, args.repeats)
    for n in args.batch:
        logger.info("\nbatch %d\n| op | loop (s) | vectorised (s) | speed-up | max rel. err |\n| --- | ---: | ---: | ---: | ---: |", n)
        for name, t_loop, t_fast, err in bench_batch(n, device, args.repeats):
            logger.info("| %s | %.4f | %.4f | %.1fx | %.1e |", name, t_loop, t_fast, t_loop / t_fast, err)


if __name__ == "__main__":
    main()
