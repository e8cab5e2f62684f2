"""Multi-process evaluation on torch.distributed: `torchrun --nproc_per_node=N cifar10c.py --cfg ...`.

Under the settings that reset before every corruption x severity (tent/protocols.RESET_SETTINGS)
the pieces are independent runs: process r takes pieces r, r + N, r + 2N, ... and rank 0 gathers
the results into exactly the table one process prints. A sequential stream (continual, gradual,
mixed, correlated) depends on the whole stream, so rank 0 runs it whole while the other processes
wait (tent.cifar10c.my_pieces); to use them, run one process per CORRUPTION.ORDER_SEED or RNG_SEED
instead. Backend: NCCL on CUDA, else gloo (CPU).
"""
from __future__ import annotations

import os
from typing import Any, List, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process writes the logs' tables and the output files."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; returns this process's device (its own GPU)."""
    if world_size() == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def shard(jobs: Sequence[T], rank_: int, size: int) -> List[int]:
    """Indices of the jobs that process `rank_` of `size` runs (round robin, so loads balance)."""
    return list(range(rank_, len(jobs), size))


def gather(obj: Any) -> List[Any]:
    """Every process's `obj` on rank 0, in rank order (other ranks get []); [obj] alone."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out or []


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every process (so all agree on, e.g., the run's output stem); `obj` alone."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def close() -> None:
    """Leave the process group (once, at the end of the command: the runs of several seeds share it)."""
    if dist.is_initialized():
        dist.destroy_process_group()
