"""Corruption benchmark: source, norm and tent on CIFAR-10-C / CIFAR-100-C / ImageNet-C / MNIST-C.

    python cifar10c.py --cfg cfgs/tent.yaml [KEY VALUE ...]

As the reference: robustbench's `load_model` and corruption loaders (chosen by
CORRUPTION.DATASET), model and optimizer reset before every corruption x severity, and the
error of every corruption logged as `error % [<corruption><severity>]: <error>`. Beyond it:
automatic device, a progress bar per corruption, several methods per run (MODEL.ADAPTATIONS),
continual adaptation without resets (MODEL.CONTINUAL), and at the end a Markdown table in the
reference README's format, CSV / JSON files, tensorboard scalars and a bar chart per method.
"""
from __future__ import annotations

import logging
import os
import sys
import warnings
from copy import deepcopy
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.optim as optim
from tqdm import tqdm

from . import norm, report, seeds
from . import tent as tent_lib
from .conf import ConfigError, cfg, load_cfg_fom_args, methods
from .data import MissingResourceError, load_corruption
from .models import load_source_model
from .tent import norm_layer_types

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
                batch_size=cfg.MNISTC.BATCH_SIZE, lr=cfg.MNISTC.LR,
                train_seed=cfg.MNISTC.SEEDS[0])  # the first seed; seeds.py runs the others


def evaluate(description: str, argv: Optional[Sequence[str]] = None) -> report.Results:
    """Load the config, then adapt and evaluate every method on every corruption x severity."""
    load_cfg_fom_args(description, argv)
    device = get_device(cfg.DEVICE)
    logger.info("device: %s", device)
    if cfg.PERF.AMP and device.type != "cuda":
        logger.warning("PERF.AMP applies to CUDA only; running in float32 on %s", device)
    base_model = load_source_model(cfg.MODEL.ARCH, cfg.CKPT_DIR, cfg.CORRUPTION.DATASET,
                                   cfg.DATA_DIR, mnist_model_cfg(), device)
    run_methods = methods(cfg)
    results: report.Results = {}
    writer = tensorboard_writer()
    for method in run_methods:
        # each method starts from the same source weights
        source = deepcopy(base_model) if len(run_methods) > 1 else base_model
        model = setup_model(method, prepare_model(source, device))
        results[method] = evaluate_model(model, method, device, writer)
    writer.close()
    save_results(results)
    return results


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
    """Reset adaptation for each combination of corruption x severity, unless continual."""
    # note: for evaluation protocol, but not necessarily needed
    if cfg.MODEL.CONTINUAL:
        return
    if hasattr(model, "reset"):
        model.reset()
        logger.info("resetting model")
    else:
        logger.warning("not resetting model")


def evaluate_model(model: nn.Module, method: str, device: torch.device,
                   writer) -> Dict[int, Dict[str, float]]:
    """Error of one (adapting) model on each severity and type of corruption in turn."""
    if cfg.MODEL.CONTINUAL:
        logger.info("continual adaptation: the model is never reset")
    errors: Dict[int, Dict[str, float]] = {}
    for severity in cfg.CORRUPTION.SEVERITY:
        for i, corruption_type in enumerate(cfg.CORRUPTION.TYPE):
            reset_model(model)
            x_test, y_test = load_corruption(cfg.CORRUPTION.DATASET, cfg.CORRUPTION.NUM_EX, severity,
                                             cfg.DATA_DIR, corruption_type, mnist_data_cfg())
            acc = accuracy(model, x_test, y_test, cfg.TEST.BATCH_SIZE, device,
                           desc=f"{method} {corruption_type}{severity}")
            err = 1. - acc
            logger.info(f"error % [{corruption_type}{severity}]: {err:.2%}")
            errors.setdefault(severity, {})[corruption_type] = err
            writer.add_scalar(f"error_{method}/severity_{severity}", 100 * err, i)
        writer.add_scalar(f"error_{method}/mean", 100 * report.mean_error(errors[severity]), severity)
    return errors


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             device: torch.device, desc: str = "") -> float:
    """Accuracy over x in batches, in order; norm and tent adapt on each batch as they predict it."""
    amp = cfg.PERF.AMP and device.type == "cuda"
    memory_format = torch.channels_last if cfg.PERF.CHANNELS_LAST else torch.contiguous_format
    correct = torch.zeros((), dtype=torch.long, device=device)
    starts = range(0, x.shape[0], batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc=desc, leave=False, disable=None):
            x_curr = x[start:start + batch_size].to(device).contiguous(memory_format=memory_format)
            y_curr = y[start:start + batch_size].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                output = model(x_curr)
            correct += (output.max(1)[1] == y_curr).sum()
    return correct.item() / x.shape[0]


def run_stem() -> str:
    """File-name stem of this run's outputs, e.g. tent_250101_120000."""
    return os.path.splitext(cfg.LOG_DEST)[0]


def tensorboard_writer():
    """Tensorboard writer for this run, under SAVE_DIR/tensorboard/<run>."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(cfg.SAVE_DIR) / "tensorboard" / run_stem()))


def save_results(results: report.Results) -> None:
    """Log the Markdown table per severity; write CSV, JSON and one bar chart per method."""
    save_dir, stem = Path(cfg.SAVE_DIR), run_stem()
    dataset, arch = cfg.CORRUPTION.DATASET, cfg.MODEL.ARCH
    for severity in report.severities(results):
        logger.info("error (%%) on %s corruptions, severity %d, model %s:\n%s",
                    dataset, severity, arch, report.markdown_table(results, severity))
    report.write_csv(results, save_dir / f"{stem}_results.csv")
    meta = dict(dataset=dataset, arch=arch, methods=list(results), continual=cfg.MODEL.CONTINUAL,
                episodic=cfg.MODEL.EPISODIC, batch_size=cfg.TEST.BATCH_SIZE, num_ex=cfg.CORRUPTION.NUM_EX,
                optimizer=cfg.OPTIM.METHOD, lr=cfg.OPTIM.LR, log=cfg.LOG_DEST)
    report.write_json(results, save_dir / f"{stem}_results.json", meta)
    for method, errors in results.items():
        report.plot_errors(errors, f"{method}: {dataset} corruptions, {arch}", save_dir / f"{stem}_{method}.png")
    logger.info("results: %s", ", ".join(str(save_dir / f"{stem}_{suffix}")
                                        for suffix in ["results.csv", "results.json"]
                                        + [f"{m}.png" for m in results]))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; returns the exit status (2: bad config, 1: missing file)."""
    # robustbench's imports warn about deprecations outside this project's control
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*torch.jit.interface.* is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="(The parameter 'pretrained'|Arguments other than a weight enum)",
                            category=UserWarning)
    try:
        seeds.evaluate_seeds(evaluate, "CIFAR-10-C evaluation.", argv)  # evaluate() once per MNISTC.SEEDS entry
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MissingResourceError as e:
        logger.error("%s", e)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
