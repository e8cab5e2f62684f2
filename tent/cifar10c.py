"""Corruption benchmark: source, norm and tent on CIFAR-10-C / CIFAR-100-C / ImageNet-C / MNIST-C.

    python cifar10c.py --cfg cfgs/tent.yaml [KEY VALUE ...]

As the reference: robustbench's `load_model` and corruption loaders (chosen by
CORRUPTION.DATASET), model and optimizer reset before every corruption x severity, and the
error of every corruption logged as `error % [<corruption><severity>]: <error>`. Beyond it:
automatic device, a progress bar per corruption, several methods per run (MODEL.ADAPTATIONS),
the evaluation protocols of later work (SETTING, tent/protocols.py; MODEL.CONTINUAL True is
SETTING continual), periodic resets (MODEL.RESET_AFTER_NUM_UPDATES), single-sample adaptation
on a sliding window (tent/window.py), several processes under torchrun (tent/distributed.py),
and at the end a Markdown table in the reference README's format, CSV / JSON files,
tensorboard scalars, a bar chart per method and, for streams that are not reset, an error curve.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.optim as optim
from tqdm import tqdm

from . import distributed, errors, mnistc, norm, protocols, report, seeds
from . import tent as tent_lib
from .conf import ConfigError, cfg, effective_setting, load_cfg_fom_args, methods, setup_logging
from .data import load_corruption
from .errors import MissingResourceError
from .imagenetc import imagenetc_folder, imagenetc_listed
from .models import load_source_model
from .tent import norm_layer_types
from .window import SlidingWindow

# CORRUPTION.NUM_EX -1: every test image (MNIST-C: its whole test split)
FULL_SIZE = {"cifar10": 10000, "cifar100": 10000, "imagenet": 50000,
             **{name: 10 ** 9 for name in ("mnist", "digits2mnist", "mnist2digits")}}

logger = logging.getLogger(__name__)


def get_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when available, else the CPU (the reference always moves the model to CUDA)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def mnist_data_cfg() -> Dict[str, object]:
    """MNIST-C split settings (used by the data loader and the source model alike)."""
    return dict(num_train=cfg.MNISTC.NUM_TRAIN, seed=cfg.MNISTC.SEED, params=cfg.MNISTC.PARAMS)


def mnist_model_cfg() -> Dict[str, object]:
    """MNIST-C source-model training settings."""
    return dict(mnist_data_cfg(), width=cfg.MNISTC.WIDTH, epochs=cfg.MNISTC.EPOCHS,
                batch_size=cfg.MNISTC.BATCH_SIZE, lr=cfg.MNISTC.LR, source_weights=cfg.MNISTC.SOURCE_WEIGHTS,
                train_seed=cfg.MNISTC.SEEDS[0])  # the first seed; seeds.py runs the others


def evaluate(description: str, argv: Optional[Sequence[str]] = None) -> report.Results:
    """Load the config, then adapt and evaluate every method on the stream of its SETTING."""
    load_cfg_fom_args(description, argv)
    setting = effective_setting(cfg)
    device = distributed.init(get_device(cfg.DEVICE))
    share_run_stem()
    logger.info("device: %s, setting: %s", device, setting)
    if cfg.PERF.AMP and device.type != "cuda":
        logger.warning("PERF.AMP applies to CUDA only; running in float32 on %s", device)
    base_model = load_base_model(device)
    pieces = stream_plan(setting)
    if "gradual" in setting:  # its severities come from the plan, not from CORRUPTION.SEVERITY alone
        logger.info("%s: severities along the stream %s", setting, [p.severity for p in pieces])
    mine = my_pieces(setting, pieces)
    run_methods = methods(cfg)
    streams: Dict[str, Dict[int, report.PieceResult]] = {}
    for method in run_methods:
        # each method starts from the same source weights
        source = deepcopy(base_model) if len(run_methods) > 1 else base_model
        model = setup_model(method, prepare_model(source, device))
        for name, done in evaluate_model(model, method, [pieces[i] for i in mine], device).items():
            streams[name] = dict(zip(mine, done))
    results, ordered = gather_streams(streams)
    if distributed.is_main():
        save_results(results, ordered, setting)
    return results  # the process group stays for the next seed's run; main() closes it


def share_run_stem() -> None:
    """Under torchrun every process takes rank 0's output stem; the others log to <stem>_rank<r>.txt."""
    if distributed.world_size() == 1:
        return
    log_dest = distributed.broadcast(cfg.LOG_DEST)  # rank 0 claimed it (conf.claim_output_stem)
    if not distributed.is_main():  # one log per process; rank 0's holds the tables
        cfg.defrost()
        cfg.LOG_DEST = log_dest
        cfg.freeze()
        setup_logging(os.path.join(cfg.SAVE_DIR, f"{run_stem()}_rank{distributed.rank()}.txt"))


def my_pieces(setting: str, pieces: Sequence[protocols.Piece]) -> List[int]:
    """Indices of the pieces this process runs: independent pieces are split, a sequential stream runs on rank 0.

    A sequential stream carries the adapted model from piece to piece, so splitting it would change
    its numbers; rank 0 runs it whole (the others wait at the gather), so the table equals one process's.
    """
    if distributed.world_size() == 1 or pieces_independent(setting):
        return distributed.shard(pieces, distributed.rank(), distributed.world_size())
    if distributed.is_main():
        logger.warning("SETTING %s (PROTOCOL.PEER %s) is one sequential stream: rank 0 runs it alone, "
                       "the other %d processes wait (one process per CORRUPTION.ORDER_SEED or RNG_SEED "
                       "uses them instead)", setting, protocols.peer_of(setting, cfg.PROTOCOL.PEER),
                       distributed.world_size() - 1)
    return list(range(len(pieces))) if distributed.is_main() else []


def stream_plan(setting: str) -> List[protocols.Piece]:
    """The pieces of this run's stream: the setting's loop (PROTOCOL.PEER) over the configured corruptions."""
    return protocols.plan(setting, protocols.corruption_order(cfg.CORRUPTION.TYPE, cfg.CORRUPTION.ORDER_SEED),
                          severities_of(setting), cfg.PROTOCOL.PEER)


def pieces_independent(setting: str) -> bool:
    """Whether every piece starts from the source model with nothing carried over (so processes can split them).

    The update counter and the sliding window outlive resets (as mariodoebler's), so they chain pieces.
    """
    carried = cfg.MODEL.RESET_AFTER_NUM_UPDATES > 0 or cfg.TEST.WINDOW_LENGTH > 1
    return not carried and all(p.reset for p in stream_plan(setting))


def severities_of(setting: str) -> List[int]:
    """The severities protocols.plan gets for `setting`: CORRUPTION.SEVERITY, for every setting.

    It is plan that decides how a setting uses them; the gradual settings follow their own
    sequence of severities, which evaluate logs from the planned pieces.
    """
    return list(cfg.CORRUPTION.SEVERITY)


def load_base_model(device: torch.device) -> nn.Module:
    """The source model; rank 0 loads (or trains) it first, so no two processes write the checkpoint."""
    def load() -> nn.Module:
        return load_source_model(cfg.MODEL.ARCH, cfg.CKPT_DIR, cfg.CORRUPTION.DATASET, cfg.DATA_DIR,
                                 mnist_model_cfg(), device, cfg.MODEL.TRUST_CHECKPOINT)

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


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to the device and apply the optional speed settings (all off by default)."""
    model = model.to(device)
    if cfg.PERF.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    if cfg.PERF.COMPILE:
        # compiles lazily at the first call, after setup; on failure dynamo falls back to eager
        torch._dynamo.config.suppress_errors = True
        model.compile()
    return model


def setup_model(method: str, model: nn.Module) -> nn.Module:
    """The model wrapped for one adaptation method."""
    if method == "source":
        logger.info("test-time adaptation: NONE")
        return setup_source(model)
    if method == "norm":
        logger.info("test-time adaptation: NORM")
        return setup_norm(model)
    logger.info("test-time adaptation: TENT")
    return setup_tent(model)


def setup_source(model: nn.Module) -> nn.Module:
    """Set up the baseline source model without adaptation."""
    model.eval()
    logger.info("model for evaluation: %s", model)
    return model


def setup_norm(model: nn.Module) -> norm.Norm:
    """Set up test-time normalization adaptation.

    Adapt by normalizing features with test batch statistics.
    The statistics are measured independently for each batch;
    no running average or other cross-batch estimation is used.
    """
    layers = norm_layer_types(cfg.MODEL.NORM_LAYERS)
    norm_model = norm.Norm(model, cfg.BN.EPS, cfg.BN.MOM, cfg.BN.RESET_STATS, cfg.BN.NO_STATS,
                           norm_layers=layers, copy_state=cfg.MODEL.COPY_STATE)
    logger.info("model for adaptation: %s", model)
    stats, stat_names = norm.collect_stats(model, layers)
    logger.info("stats for adaptation: %s", stat_names)
    return norm_model


def setup_tent(model: nn.Module) -> tent_lib.Tent:
    """Set up tent adaptation.

    Configure the model for training + feature modulation by batch statistics,
    collect the parameters for feature modulation by gradient optimization,
    set up the optimizer, and then tent the model.
    """
    layers = norm_layer_types(cfg.MODEL.NORM_LAYERS)
    model = tent_lib.configure_model(model, layers)
    params, param_names = tent_lib.collect_params(model, layers)
    optimizer = setup_optimizer(params)
    tent_model = tent_lib.Tent(model, optimizer, steps=cfg.OPTIM.STEPS, episodic=cfg.MODEL.EPISODIC,
                               copy_state=cfg.MODEL.COPY_STATE)
    logger.info("model for adaptation: %s", model)
    logger.info("params for adaptation: %s", param_names)
    logger.info("optimizer for adaptation: %s", optimizer)
    return tent_model


def setup_optimizer(params: List[nn.Parameter]) -> optim.Optimizer:
    """Set up optimizer for tent adaptation.

    Tent needs an optimizer for test-time entropy minimization.
    In principle, tent could make use of any gradient optimizer.
    In practice, we advise choosing Adam or SGD+momentum.
    For optimization settings, we advise to use the settings from the end of
    training, if known, or start with a low learning rate (like 0.001) if not.

    For best results, try tuning the learning rate and batch size.
    """
    if cfg.OPTIM.METHOD == 'Adam':
        return optim.Adam(params, lr=cfg.OPTIM.LR, betas=(cfg.OPTIM.BETA, 0.999),
                          weight_decay=cfg.OPTIM.WD)
    if cfg.OPTIM.METHOD == 'SGD':
        return optim.SGD(params, lr=cfg.OPTIM.LR, momentum=cfg.OPTIM.MOMENTUM,
                         dampening=cfg.OPTIM.DAMPENING, weight_decay=cfg.OPTIM.WD,
                         nesterov=cfg.OPTIM.NESTEROV)
    raise NotImplementedError(cfg.OPTIM.METHOD)


def reset_model(model: nn.Module) -> None:
    """Reset adaptation: before a piece of a resetting setting, or after RESET_AFTER_NUM_UPDATES."""
    # note: for evaluation protocol, but not necessarily needed
    if hasattr(model, "reset"):
        model.reset()
        logger.info("resetting model")
    else:
        logger.warning("not resetting model")


def wrap_single_sample(model: nn.Module, method: str) -> nn.Module:
    """With TEST.BATCH_SIZE 1 and TEST.WINDOW_LENGTH > 1, norm / tent adapt on a sliding window."""
    if method != "source" and cfg.TEST.WINDOW_LENGTH > 1:
        logger.info("single-sample adaptation on a sliding window of %d samples", cfg.TEST.WINDOW_LENGTH)
        return SlidingWindow(model, cfg.TEST.WINDOW_LENGTH)
    return model


def wrap_periodic_reset(model: nn.Module, method: str) -> nn.Module:
    """With MODEL.RESET_AFTER_NUM_UPDATES N, norm / tent are reset after every N updates (RDumb)."""
    every = cfg.MODEL.RESET_AFTER_NUM_UPDATES
    return PeriodicReset(model, every) if every and method != "source" else model


def evaluate_model(model: nn.Module, method: str, pieces: Sequence[protocols.Piece],
                   device: torch.device) -> Dict[str, List[report.PieceResult]]:
    """One method on its pieces of the stream, in order; offline adds '<method>_online'."""
    model = wrap_single_sample(wrap_periodic_reset(model, method), method)
    if not any(p.reset for p in pieces) and not cfg.MODEL.RESET_AFTER_NUM_UPDATES:
        logger.info("continual adaptation: the model is never reset")
    setting = effective_setting(cfg)
    peer = protocols.peer_of(setting, cfg.PROTOCOL.PEER)
    done: Dict[str, List[report.PieceResult]] = {method: []}
    for piece in pieces:
        if piece.reset:
            reset_model(model)
        data = protocols.piece_data(piece, setting, lambda c, s: load_part(c, s, peer), cfg.TEST.DELTA_DIRICHLET,
                                    cfg.RNG_SEED, peer, cfg.CORRUPTION.NUM_EX)
        desc = f"{method} {piece.name}{piece.severity}"
        if setting == "offline" and method != "source":
            online, correct = adapt_then_predict(model, data, device, desc)
            done.setdefault(f"{method}_online", []).append(piece_result(piece, data, online))
        else:
            correct = run_pass(model, data, device, True, desc)
        done[method].append(piece_result(piece, data, correct))
        log_piece(done[method][-1])
    return done


def adapt_then_predict(model: nn.Module, data: protocols.PieceData, device: torch.device,
                       desc: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Offline: OPTIM.EPOCHS adapting passes, then a predicting pass; (first pass, final) correctness."""
    online = run_pass(model, data, device, True, f"{desc} epoch 1")
    for epoch in range(1, cfg.OPTIM.EPOCHS):
        run_pass(model, data, device, True, f"{desc} epoch {epoch + 1}")
    return online, run_pass(model, data, device, False, f"{desc} predict")


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


def forward(model: nn.Module, x: torch.Tensor, adapt: bool) -> torch.Tensor:
    """Outputs for a batch: adapting (as the reference, outputs from before the update), or not."""
    method = adapting_method(model)
    if not adapt:  # offline prediction: the adapted network, batch statistics, no update
        return (method.model if isinstance(method, (tent_lib.Tent, norm.Norm)) else method)(x)
    outputs = model(x)
    if cfg.MODEL.PREDICT_AFTER_UPDATE and isinstance(method, tent_lib.Tent):
        outputs = method.model(x)  # a second forward with the updated parameters
    return outputs


def run_pass(model: nn.Module, data: protocols.PieceData, device: torch.device,
             adapt: bool = True, desc: str = "") -> torch.Tensor:
    """Correct (bool) per sample of one pass over a piece; norm and tent adapt unless `adapt` is False."""
    total = -(-len(data) // cfg.TEST.BATCH_SIZE)
    return correct_per_sample(model, data.batches(cfg.TEST.BATCH_SIZE), device, adapt, desc=desc, total=total)


def correct_per_sample(model: nn.Module, batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
                       device: torch.device, adapt: bool = True, after_batch: Optional[Callable[[], None]] = None,
                       desc: str = "", total: Optional[int] = None) -> torch.Tensor:
    """Correct (bool, on the CPU) per sample over batches in order; norm and tent adapt as they predict."""
    amp = cfg.PERF.AMP and device.type == "cuda"
    memory_format = torch.channels_last if cfg.PERF.CHANNELS_LAST else torch.contiguous_format
    correct = []
    with torch.no_grad():
        for x_curr, y_curr in tqdm(batches, total=total, desc=desc, leave=False, disable=None):
            x_curr = x_curr.to(device).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                output = forward(model, x_curr, adapt)
            correct.append((output.max(1)[1] == y_curr.to(device)).cpu())
            if after_batch is not None:
                after_batch()
    return torch.cat(correct)


def piece_result(piece: protocols.Piece, data: protocols.PieceData, correct: torch.Tensor) -> report.PieceResult:
    """Counts per corruption and the per-batch error of one pass over a piece."""
    k = len(piece.corruptions)
    right = torch.bincount(data.domains[correct], minlength=k).tolist()
    total = torch.bincount(data.domains, minlength=k).tolist()
    batch_errors = [1. - b.float().mean().item() for b in correct.split(cfg.TEST.BATCH_SIZE)]
    return report.PieceResult(piece.name, piece.severity, list(piece.corruptions), right, total, batch_errors)


def log_piece(result: report.PieceResult) -> None:
    """The reference's log line per piece (and, for mixed pieces, one per corruption)."""
    logger.info(f"error % [{result.name}{result.severity}]: {result.error:.2%}")
    if len(result.corruptions) > 1:
        for c, right, n in zip(result.corruptions, result.correct, result.total):
            logger.info(f"  error % [{c}{result.severity}] in the mixed stream: {1 - right / max(1, n):.2%}")


def num_examples() -> int:
    """CORRUPTION.NUM_EX, with -1 meaning every image of the test set."""
    return cfg.CORRUPTION.NUM_EX if cfg.CORRUPTION.NUM_EX != -1 else FULL_SIZE[cfg.CORRUPTION.DATASET]


def load_clean(n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The first n images of the clean test set (mariodoebler's domain 'none': forgetting of the source)."""
    if cfg.CORRUPTION.DATASET == "mnist":
        x, y = mnistc.split_arrays(cfg.DATA_DIR, cfg.MNISTC.NUM_TRAIN, cfg.MNISTC.SEED, "x_test", "y_test")
        return mnistc.to_tensor(x[:n]), torch.from_numpy(y[:n])
    from robustbench.data import load_cifar10, load_cifar100

    try:
        return {"cifar10": load_cifar10, "cifar100": load_cifar100}[cfg.CORRUPTION.DATASET](n, cfg.DATA_DIR)
    except OSError as e:  # torchvision's download failed (offline) or the folder is unreadable
        raise MissingResourceError(f"the clean {cfg.CORRUPTION.DATASET} test set is not under {cfg.DATA_DIR} "
                                   f"and could not be downloaded ({type(e).__name__}); place it there") from None


def load_part(corruption: str, severity: int, peer: str = "tent"):
    """One corruption x severity: (x, y) tensors, or ImageNet-C's full folder for NUM_EX -1.

    tent / CoTTA: the first NUM_EX images. mariodoebler: every image (its loader draws NUM_EX from
    them); for ImageNet-C robustbench's 5,000-image list, or its own list of all 50,000 where its loader
    reads that (a correlated setting or NUM_EX != -1). 'none': the clean
    test set (all of it for mariodoebler, whose loader cannot shuffle or subsample a torchvision set).
    """
    if corruption == protocols.CLEAN:
        return load_clean(FULL_SIZE[cfg.CORRUPTION.DATASET] if peer == "mariodoebler" else num_examples())
    if peer == "mariodoebler":
        imagenet = cfg.CORRUPTION.DATASET == "imagenet"
        if imagenet and (cfg.CORRUPTION.NUM_EX != -1 or "correlated" in effective_setting(cfg)):
            return imagenetc_listed(cfg.DATA_DIR, corruption, severity)  # its list of all 50,000
        n = 5000 if imagenet else FULL_SIZE[cfg.CORRUPTION.DATASET]
        return load_corruption(cfg.CORRUPTION.DATASET, n, severity, cfg.DATA_DIR, corruption, mnist_data_cfg())
    if cfg.CORRUPTION.DATASET == "imagenet" and cfg.CORRUPTION.NUM_EX == -1:
        return imagenetc_folder(cfg.DATA_DIR, corruption, severity)
    return load_corruption(cfg.CORRUPTION.DATASET, num_examples(), severity, cfg.DATA_DIR, corruption,
                           mnist_data_cfg())


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             device: torch.device, desc: str = "") -> float:
    """Accuracy over x in batches, in order; norm and tent adapt on each batch as they predict it."""
    batches = ((x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, x.shape[0], batch_size))
    correct = correct_per_sample(model, batches, device, desc=desc, total=-(-x.shape[0] // batch_size))
    return int(correct.sum()) / x.shape[0]


def run_stem() -> str:
    """File-name stem of this run's outputs, e.g. tent_250101_120000."""
    return os.path.splitext(cfg.LOG_DEST)[0]


def tensorboard_writer():
    """Tensorboard writer for this run, under SAVE_DIR/tensorboard/<run>."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(cfg.SAVE_DIR) / "tensorboard" / run_stem()))


def save_results(results: report.Results, streams: Dict[str, List[report.PieceResult]], setting: str) -> None:
    """Log the Markdown table per severity; write CSV, JSON, bar charts, tensorboard, and the stream."""
    save_dir, stem = Path(cfg.SAVE_DIR), run_stem()
    dataset, arch = cfg.CORRUPTION.DATASET, cfg.MODEL.ARCH
    for severity in report.severities(results):
        logger.info("error (%%) on %s corruptions, severity %d, model %s, setting %s:\n%s",
                    dataset, severity, arch, setting, report.markdown_table(results, severity))
    for method, pieces in streams.items():
        logger.info("mean error over the stream's %d pieces, %s: %.2f%%", len(pieces), method,
                    100 * report.stream_mean(pieces))
    meta = dict(dataset=dataset, arch=arch, methods=list(results), setting=setting,
                continual=setting != "reset_each_shift", episodic=cfg.MODEL.EPISODIC,
                reset_after_num_updates=cfg.MODEL.RESET_AFTER_NUM_UPDATES, order=protocols.corruption_order(cfg.CORRUPTION.TYPE, cfg.CORRUPTION.ORDER_SEED),
                order_seed=cfg.CORRUPTION.ORDER_SEED, delta_dirichlet=cfg.TEST.DELTA_DIRICHLET,
                batch_size=cfg.TEST.BATCH_SIZE, num_ex=cfg.CORRUPTION.NUM_EX,
                optimizer=cfg.OPTIM.METHOD, lr=cfg.OPTIM.LR, log=cfg.LOG_DEST)
    outputs = {  # rendered first, then written whole or not at all (report.write_outputs)
        save_dir / f"{stem}_results.csv": report.csv_bytes(results),
        save_dir / f"{stem}_results.json": report.json_bytes(report.results_payload(results, meta)),
        save_dir / f"{stem}_stream.json": report.json_bytes(report.stream_payload(streams, meta), indent=1)}
    for method, per_severity in results.items():
        outputs[save_dir / f"{stem}_{method}.png"] = report.plot_errors(
            per_severity, f"{method}: {dataset} corruptions, {arch}, {setting}")
    if setting not in protocols.RESET_SETTINGS or cfg.MODEL.RESET_AFTER_NUM_UPDATES:
        outputs[save_dir / f"{stem}_curve.png"] = report.plot_curves(
            streams, f"{dataset}, {arch}, {setting}: error along the stream")
    report.write_outputs(outputs)
    write_tensorboard(results, streams)
    logger.info("results: %s", ", ".join(str(path) for path in outputs))


def write_tensorboard(results: report.Results, streams: Dict[str, List[report.PieceResult]]) -> None:
    """Scalars per method: error per corruption and severity, the mean, and the per-batch error."""
    try:
        write_scalars(results, streams)
    except OSError as e:  # tensorboard's writer names no file
        raise errors.write_failed(Path(cfg.SAVE_DIR) / "tensorboard" / run_stem(), None, e) from None


def write_scalars(results: report.Results, streams: Dict[str, List[report.PieceResult]]) -> None:
    """The scalars of write_tensorboard, through tensorboard's event writer."""
    writer = tensorboard_writer()
    for method, per_severity in results.items():
        for severity, errors in per_severity.items():
            for i, err in enumerate(errors.values()):
                writer.add_scalar(f"error_{method}/severity_{severity}", 100 * err, i)
            writer.add_scalar(f"error_{method}/mean", 100 * report.mean_error(errors), severity)
        batch_errors = [e for p in streams[method] for e in p.batch_errors]
        for step, err in enumerate(batch_errors):
            writer.add_scalar(f"error_{method}/batch", 100 * err, step)
    writer.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (0, or a user error's: see tent/errors.py)."""
    # robustbench's imports warn about deprecations outside this project's control
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.interface.* is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="(The parameter 'pretrained'|Arguments other than a weight enum)",
                            category=UserWarning)
    # evaluate() once per MNISTC.SEEDS entry (tent/seeds.py), then the mean +- std table
    try:
        return errors.exit_status(lambda: seeds.evaluate_seeds(evaluate, "CIFAR-10-C evaluation.", argv))
    finally:
        distributed.close()


if __name__ == '__main__':
    sys.exit(main())
