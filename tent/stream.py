"""The test stream of one method: piece after piece, reset where its setting says, adapting as it predicts.

As the reference's loop: the model is reset before a piece that asks for it (tent: every
corruption x severity) and each batch is predicted by the adapting forward (outputs from before
the update). Beyond it, from the evaluation protocols of later work (tent/protocols.py plans the
pieces): offline adaptation (OPTIM.EPOCHS adapting passes, then a predicting pass), periodic
resets after MODEL.RESET_AFTER_NUM_UPDATES updates (`PeriodicReset`, RDumb) and single-sample
adaptation on a sliding window (tent/window.py).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from tqdm import tqdm
from yacs.config import CfgNode

from . import norm, protocols, report
from . import tent as tent_lib
from .conf_checks import effective_setting
from .data import load_part
from .window import SlidingWindow

logger = logging.getLogger(__name__)


def evaluate_model(model: nn.Module, method: str, pieces: Sequence[protocols.Piece],
                   device: torch.device, c: CfgNode) -> Dict[str, List[report.PieceResult]]:
    """One method on its pieces of the stream, in order; offline adds '<method>_online'."""
    model = wrap_single_sample(wrap_periodic_reset(model, method, c.MODEL.RESET_AFTER_NUM_UPDATES), method,
                               c.TEST.WINDOW_LENGTH)
    if not any(p.reset for p in pieces) and not c.MODEL.RESET_AFTER_NUM_UPDATES:
        logger.info("continual adaptation: the model is never reset")
    setting = effective_setting(c)
    peer = protocols.peer_of(setting, c.PROTOCOL.PEER)
    done: Dict[str, List[report.PieceResult]] = {method: []}
    for piece in pieces:
        if piece.reset:
            reset_model(model)
        data = protocols.piece_data(piece, setting, lambda name, s: load_part(c, setting, name, s, peer),
                                    c.TEST.DELTA_DIRICHLET, c.RNG_SEED, peer, c.CORRUPTION.NUM_EX)
        desc = f"{method} {piece.name}{piece.severity}"
        if setting == "offline" and method != "source":
            online, correct = adapt_then_predict(model, data, device, desc, c)
            done.setdefault(f"{method}_online", []).append(piece_result(piece, data, online, c.TEST.BATCH_SIZE))
        else:
            correct = run_pass(model, data, device, c, True, desc)
        done[method].append(piece_result(piece, data, correct, c.TEST.BATCH_SIZE))
        log_piece(done[method][-1])
    return done


def adapt_then_predict(model: nn.Module, data: protocols.PieceData, device: torch.device,
                       desc: str, c: CfgNode) -> Tuple[torch.Tensor, torch.Tensor]:
    """Offline: OPTIM.EPOCHS adapting passes, then a predicting pass; (first pass, final) correctness."""
    online = run_pass(model, data, device, c, True, f"{desc} epoch 1")
    for epoch in range(1, c.OPTIM.EPOCHS):
        run_pass(model, data, device, c, True, f"{desc} epoch {epoch + 1}")
    return online, run_pass(model, data, device, c, False, f"{desc} predict")


def reset_model(model: nn.Module) -> None:
    """Reset adaptation: before a piece of a resetting setting, or after RESET_AFTER_NUM_UPDATES."""
    # note: for evaluation protocol, but not necessarily needed
    if hasattr(model, "reset"):
        model.reset()
        logger.info("resetting model")
    else:
        logger.warning("not resetting model")


def wrap_single_sample(model: nn.Module, method: str, window_length: int) -> nn.Module:
    """With TEST.BATCH_SIZE 1 and TEST.WINDOW_LENGTH > 1, norm / tent adapt on a sliding window."""
    if method != "source" and window_length > 1:
        logger.info("single-sample adaptation on a sliding window of %d samples", window_length)
        return SlidingWindow(model, window_length)
    return model


def wrap_periodic_reset(model: nn.Module, method: str, every: int) -> nn.Module:
    """With MODEL.RESET_AFTER_NUM_UPDATES N, norm / tent are reset after every N updates (RDumb)."""
    return PeriodicReset(model, every) if every and method != "source" else model


class PeriodicReset(nn.Module):
    """Resets norm / tent after every `every` updates, counted as mariodoebler's TTAMethod counts them.

    One tent step is one update, and the count is checked after each step (with OPTIM.STEPS > 1 a
    reset can fall between the steps of one batch); one norm batch is one update. The count is
    never restarted, not by this reset nor by a setting's reset at a shift (as mariodoebler's
    `performed_updates`).
    """

    def __init__(self, method: nn.Module, every: int) -> None:
        super().__init__()
        self.method, self.every, self.updates = method, every, 0

    @property
    def model(self) -> nn.Module:
        """The network inside (the window and the offline prediction forward it without adapting)."""
        return self.method.model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The method's adapting forward, step by step, resetting whenever the count reaches a multiple of N."""
        if not isinstance(self.method, tent_lib.Tent) or self.method.episodic:
            outputs = self.method(x)
            self.count(self.method.steps if isinstance(self.method, tent_lib.Tent) else 1)
            return outputs
        steps, self.method.steps = self.method.steps, 1
        try:
            for _ in range(steps):
                outputs = self.method(x)
                self.count(1)
        finally:
            self.method.steps = steps
        return outputs

    def count(self, updates: int) -> None:
        """Add updates one by one, resetting the method at every multiple of `every`."""
        for _ in range(updates):
            self.updates += 1
            if self.updates % self.every == 0:
                logger.info("periodic reset after %d updates", self.every)
                reset_model(self.method)

    def reset(self) -> None:
        """A setting's reset at a shift: the method only (the count goes on)."""
        self.method.reset()


def adapting_method(model: nn.Module) -> nn.Module:
    """The norm / tent wrapper inside the window and periodic-reset wrappers."""
    while isinstance(model, (SlidingWindow, PeriodicReset)):
        model = model.model if isinstance(model, SlidingWindow) else model.method
    return model


def forward(model: nn.Module, x: torch.Tensor, adapt: bool, predict_after_update: bool = False) -> torch.Tensor:
    """Outputs for a batch: adapting (as the reference, outputs from before the update), or not."""
    method = adapting_method(model)
    if not adapt:  # offline prediction: the adapted network, batch statistics, no update
        return (method.model if isinstance(method, (tent_lib.Tent, norm.Norm)) else method)(x)
    outputs = model(x)
    if predict_after_update and isinstance(method, tent_lib.Tent):
        outputs = method.model(x)  # a second forward with the updated parameters
    return outputs


def run_pass(model: nn.Module, data: protocols.PieceData, device: torch.device, c: CfgNode,
             adapt: bool = True, desc: str = "") -> torch.Tensor:
    """Correct (bool, on the CPU) per sample of one pass over a piece; norm and tent adapt unless `adapt` is False."""
    amp = c.PERF.AMP and device.type == "cuda"
    memory_format = torch.channels_last if c.PERF.CHANNELS_LAST else torch.contiguous_format
    total = -(-len(data) // c.TEST.BATCH_SIZE)
    correct = []
    with torch.no_grad():
        for x_curr, y_curr in tqdm(data.batches(c.TEST.BATCH_SIZE), total=total, desc=desc, leave=False,
                                   disable=None):
            x_curr = x_curr.to(device).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                output = forward(model, x_curr, adapt, c.MODEL.PREDICT_AFTER_UPDATE)
            correct.append((output.max(1)[1] == y_curr.to(device)).cpu())
    return torch.cat(correct)


def piece_result(piece: protocols.Piece, data: protocols.PieceData, correct: torch.Tensor,
                 batch_size: int) -> report.PieceResult:
    """Counts per corruption and the per-batch error of one pass over a piece."""
    k = len(piece.corruptions)
    right = torch.bincount(data.domains[correct], minlength=k).tolist()
    total = torch.bincount(data.domains, minlength=k).tolist()
    batch_errors = [1. - b.float().mean().item() for b in correct.split(batch_size)]
    return report.PieceResult(piece.name, piece.severity, list(piece.corruptions), right, total, batch_errors)


def log_piece(result: report.PieceResult) -> None:
    """The reference's log line per piece (and, for mixed pieces, one per corruption)."""
    logger.info(f"error % [{result.name}{result.severity}]: {result.error:.2%}")
    if len(result.corruptions) > 1:
        for name, right, n in zip(result.corruptions, result.correct, result.total):
            logger.info(f"  error % [{name}{result.severity}] in the mixed stream: {1 - right / max(1, n):.2%}")
