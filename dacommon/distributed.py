"""torch.distributed for runs started by torchrun: who this process is, joining the group, and
the collectives tent and ProDA use. Backend: NCCL on CUDA, else gloo (CPU).

Two questions, two names: `in_process_group()` -- has torch.distributed been initialised (ProDA's
loaders then shard with DistributedSampler, even in a one-process group) -- and
`is_distributed()` -- do several processes work together (only then are networks wrapped in
DistributedDataParallel and prototype updates gathered). Every helper is a no-op, or returns
its input, in a single process.
"""
from __future__ import annotations

import os
from typing import Any, List, Sequence, Tuple, TypeVar

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def in_process_group() -> bool:
    """True inside an initialised torch.distributed process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True inside a torchrun process group of more than one process."""
    return in_process_group() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (torchrun's RANK before the group is joined; 0 without torchrun)."""
    return dist.get_rank() if in_process_group() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Whether this process logs the tables and writes the output files (rank 0, or the only one)."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join the process group torchrun set up; returns this process's device (its own GPU)."""
    if world_size() <= 1 or in_process_group():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if in_process_group():
        dist.barrier()


def close() -> None:
    """Leave the process group (once, at the end of the command)."""
    if in_process_group():
        dist.destroy_process_group()


def shard(jobs: Sequence[T], rank_: int, size: int) -> List[int]:
    """Indices of the jobs that process `rank_` of `size` runs (round robin, so loads balance)."""
    return list(range(rank_, len(jobs), size))


def gather(obj: Any) -> List[Any]:
    """Every process's `obj` on rank 0, in rank order (other ranks get []); [obj] alone."""
    if not in_process_group():
        return [obj]
    out = [None] * dist.get_world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out or []


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every process (so all agree on, e.g., a run's output stem); `obj` alone."""
    if not in_process_group():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `net` when several processes train, the plain module otherwise."""
    if not is_distributed():
        return net
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids)


def all_gather_rows(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Each tensor's rows from every process, concatenated in rank order (unchanged in one process).

    Rank order is the order of the reference's DataParallel batch, so ProDA's prototype updates
    applied in this order equal the reference's and are identical on every process.
    """
    if not is_distributed():
        return tensors
    world = dist.get_world_size()
    count = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    gathered = []
    for t in tensors:
        padded = t.new_zeros((max(counts),) + tuple(t.shape[1:]))
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded)
        gathered.append(torch.cat([part[:c] for part, c in zip(parts, counts)]))
    return tuple(gathered)
