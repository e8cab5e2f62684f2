"""One evaluation run: every method of a config on the stream of its SETTING, results gathered and written.

`run(c)` takes a loaded and started config (tent.launch) and returns
`results[method][severity][corruption]` (errors as fractions): it picks the device, loads the
source model once, plans the stream (tent/protocols.py), runs each method from a fresh copy of
the source model (tent/methods.py, tent/stream.py), gathers the pieces of every process under
torchrun (dacommon/distributed.py) and, on rank 0, logs the tables and writes the files
(tent/report.py).

Under torchrun, the settings that reset before every corruption x severity (protocols.RESET_SETTINGS)
make the pieces independent runs: process r takes pieces r, r + N, r + 2N, ... and rank 0 gathers
the results into exactly the table one process prints. A sequential stream (continual, gradual,
mixed, correlated) depends on the whole stream, so rank 0 runs it whole while the other processes
wait (my_pieces); to use them, run one process per CORRUPTION.ORDER_SEED or RNG_SEED instead.
"""
from __future__ import annotations

import logging
import os
from copy import deepcopy
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from yacs.config import CfgNode

from dacommon import distributed
from dacommon.device import get_device

from . import protocols, report
from .conf_checks import effective_setting, methods
from .launch import setup_logging
from .data import mnist_model_cfg
from .methods import prepare_model, setup_model
from .models import load_source_model
from .stream import evaluate_model

logger = logging.getLogger(__name__)


def run(c: CfgNode) -> report.Results:
    """Adapt and evaluate every method of config `c` on the stream of its SETTING."""
    setting = effective_setting(c)
    device = distributed.init(get_device(c.DEVICE))
    share_run_stem(c)
    logger.info("device: %s, setting: %s", device, setting)
    if c.PERF.AMP and device.type != "cuda":
        logger.warning("PERF.AMP applies to CUDA only; running in float32 on %s", device)
    base_model = load_base_model(c, device)
    pieces = stream_plan(c, setting)
    if "gradual" in setting:  # its severities come from the plan, not from CORRUPTION.SEVERITY alone
        logger.info("%s: severities along the stream %s", setting, [p.severity for p in pieces])
    mine = my_pieces(c, setting, pieces)
    run_methods = methods(c)
    streams: Dict[str, Dict[int, report.PieceResult]] = {}
    for method in run_methods:
        # each method starts from the same source weights
        source = deepcopy(base_model) if len(run_methods) > 1 else base_model
        model = setup_model(method, prepare_model(source, device, c), c)
        for name, done in evaluate_model(model, method, [pieces[i] for i in mine], device, c).items():
            streams[name] = dict(zip(mine, done))
    results, ordered = gather_streams(streams)
    if distributed.is_main():
        report.save_results(c, results, ordered, setting)
    return results  # the process group stays for the next seed's run; main() closes it


def share_run_stem(c: CfgNode) -> None:
    """Under torchrun every process takes rank 0's output stem; the others log to <stem>_rank<r>.txt."""
    if distributed.world_size() == 1:
        return
    log_dest = distributed.broadcast(c.LOG_DEST)  # rank 0 claimed it (launch.start_run)
    if not distributed.is_main():  # one log per process; rank 0's holds the tables
        c.defrost()
        c.LOG_DEST = log_dest
        c.freeze()
        setup_logging(os.path.join(c.SAVE_DIR, f"{report.run_stem(c)}_rank{distributed.rank()}.txt"))


def my_pieces(c: CfgNode, setting: str, pieces: Sequence[protocols.Piece]) -> List[int]:
    """Indices of the pieces this process runs: independent pieces are split, a sequential stream runs on rank 0.

    A sequential stream carries the adapted model from piece to piece, so splitting it would change
    its numbers; rank 0 runs it whole (the others wait at the gather), so the table equals one process's.
    """
    if distributed.world_size() == 1 or pieces_independent(c, setting):
        return distributed.shard(pieces, distributed.rank(), distributed.world_size())
    if distributed.is_main():
        logger.warning("SETTING %s (PROTOCOL.PEER %s) is one sequential stream: rank 0 runs it alone, "
                       "the other %d processes wait (one process per CORRUPTION.ORDER_SEED or RNG_SEED "
                       "uses them instead)", setting, protocols.peer_of(setting, c.PROTOCOL.PEER),
                       distributed.world_size() - 1)
    return list(range(len(pieces))) if distributed.is_main() else []


def stream_plan(c: CfgNode, setting: str) -> List[protocols.Piece]:
    """The pieces of this run's stream: the setting's loop (PROTOCOL.PEER) over the configured corruptions.

    Every setting gets CORRUPTION.SEVERITY; the gradual settings follow their own sequence of
    severities, which `run` logs from the planned pieces.
    """
    return protocols.plan(setting, protocols.corruption_order(c.CORRUPTION.TYPE, c.CORRUPTION.ORDER_SEED),
                          list(c.CORRUPTION.SEVERITY), c.PROTOCOL.PEER)


def pieces_independent(c: CfgNode, setting: str) -> bool:
    """Whether every piece starts from the source model with nothing carried over (so processes can split them).

    The update counter and the sliding window outlive resets (as mariodoebler's), so they chain pieces.
    """
    carried = c.MODEL.RESET_AFTER_NUM_UPDATES > 0 or c.TEST.WINDOW_LENGTH > 1
    return not carried and all(p.reset for p in stream_plan(c, setting))


def load_base_model(c: CfgNode, device: torch.device) -> nn.Module:
    """The source model; rank 0 loads (or trains) it first, so no two processes write the checkpoint."""
    def load() -> nn.Module:
        return load_source_model(c.MODEL.ARCH, c.CKPT_DIR, c.CORRUPTION.DATASET, c.DATA_DIR,
                                 mnist_model_cfg(c), device, c.MODEL.TRUST_CHECKPOINT)

    model = load() if distributed.is_main() else None
    distributed.barrier()
    return model if model is not None else load()


def gather_streams(streams: Dict[str, Dict[int, report.PieceResult]]
                   ) -> Tuple[report.Results, Dict[str, List[report.PieceResult]]]:
    """Pieces of all processes, in stream order, and the errors pooled per corruption x severity."""
    merged: Dict[str, Dict[int, report.PieceResult]] = {}
    for part in distributed.gather(streams):
        for name, done in part.items():
            merged.setdefault(name, {}).update(done)
    ordered = {name: [done[i] for i in sorted(done)] for name, done in merged.items()}
    return {name: report.pooled_errors(p) for name, p in ordered.items()}, ordered
