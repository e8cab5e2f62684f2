"""Multi-GPU helpers shared by ProDA's trainer and loaders (runs launched by torchrun).

Two questions, two names: `in_process_group()` -- has torch.distributed been initialised (the
loaders then shard with DistributedSampler, even in a one-process group) -- and
`is_distributed()` -- do several processes train together (only then are networks wrapped in
DistributedDataParallel and prototype updates gathered).
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel


def in_process_group() -> bool:
    """True inside an initialised torch.distributed process group (of any size)."""
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True inside a torchrun process group of more than one process."""
    return in_process_group() and dist.get_world_size() > 1


def wrap_ddp(net: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `net` under torchrun, the plain module otherwise."""
    if not is_distributed():
        return net
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=device_ids)


def all_gather_rows(*tensors: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Each tensor's rows from every process, concatenated in rank order (unchanged in one process).

    Rank order is the order of the reference's DataParallel batch, so prototype updates applied
    in this order equal the reference's and are identical on every process.
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
