"""The adaptation methods of a run: source, norm and tent, each set up from the config as the reference does.

`setup_source`, `setup_norm`, `setup_tent` and `setup_optimizer` are the reference cifar10c.py's
functions (re-exported there); each reads the config it is given, the global `tent.conf.cfg` by
default, as the reference's read it.
"""
from __future__ import annotations

import logging
from typing import List

import torch
import torch.nn as nn
import torch.optim as optim
from yacs.config import CfgNode

from . import norm
from . import tent as tent_lib
from .conf import cfg
from .tent import norm_layer_types

logger = logging.getLogger(__name__)


def prepare_model(model: nn.Module, device: torch.device, c: CfgNode = cfg) -> nn.Module:
    """Move to the device and apply the optional speed settings (all off by default)."""
    model = model.to(device)
    if c.PERF.CHANNELS_LAST:
        model = model.to(memory_format=torch.channels_last)
    if c.PERF.COMPILE:
        # compiles lazily at the first call, after setup; on failure dynamo falls back to eager
        torch._dynamo.config.suppress_errors = True
        model.compile()
    return model


def setup_model(method: str, model: nn.Module, c: CfgNode = cfg) -> nn.Module:
    """The model wrapped for one adaptation method."""
    if method == "source":
        logger.info("test-time adaptation: NONE")
        return setup_source(model)
    if method == "norm":
        logger.info("test-time adaptation: NORM")
        return setup_norm(model, c)
    logger.info("test-time adaptation: TENT")
    return setup_tent(model, c)


def setup_source(model: nn.Module) -> nn.Module:
    """Set up the baseline source model without adaptation."""
    model.eval()
    logger.info("model for evaluation: %s", model)
    return model


def setup_norm(model: nn.Module, c: CfgNode = cfg) -> norm.Norm:
    """Set up test-time normalization adaptation.

    Adapt by normalizing features with test batch statistics.
    The statistics are measured independently for each batch;
    no running average or other cross-batch estimation is used.
    """
    layers = norm_layer_types(c.MODEL.NORM_LAYERS)
    norm_model = norm.Norm(model, c.BN.EPS, c.BN.MOM, c.BN.RESET_STATS, c.BN.NO_STATS,
                           norm_layers=layers, copy_state=c.MODEL.COPY_STATE)
    logger.info("model for adaptation: %s", model)
    stats, stat_names = norm.collect_stats(model, layers)
    logger.info("stats for adaptation: %s", stat_names)
    return norm_model


def setup_tent(model: nn.Module, c: CfgNode = cfg) -> tent_lib.Tent:
    """Set up tent adaptation.

    Configure the model for training + feature modulation by batch statistics,
    collect the parameters for feature modulation by gradient optimization,
    set up the optimizer, and then tent the model.
    """
    layers = norm_layer_types(c.MODEL.NORM_LAYERS)
    model = tent_lib.configure_model(model, layers)
    params, param_names = tent_lib.collect_params(model, layers)
    optimizer = setup_optimizer(params, c)
    tent_model = tent_lib.Tent(model, optimizer, steps=c.OPTIM.STEPS, episodic=c.MODEL.EPISODIC,
                               copy_state=c.MODEL.COPY_STATE)
    logger.info("model for adaptation: %s", model)
    logger.info("params for adaptation: %s", param_names)
    logger.info("optimizer for adaptation: %s", optimizer)
    return tent_model


def setup_optimizer(params: List[nn.Parameter], c: CfgNode = cfg) -> optim.Optimizer:
    """Set up optimizer for tent adaptation.

    Tent needs an optimizer for test-time entropy minimization.
    In principle, tent could make use of any gradient optimizer.
    In practice, we advise choosing Adam or SGD+momentum.
    For optimization settings, we advise to use the settings from the end of
    training, if known, or start with a low learning rate (like 0.001) if not.

    For best results, try tuning the learning rate and batch size.
    """
    if c.OPTIM.METHOD == 'Adam':
        return optim.Adam(params, lr=c.OPTIM.LR, betas=(c.OPTIM.BETA, 0.999),
                          weight_decay=c.OPTIM.WD)
    if c.OPTIM.METHOD == 'SGD':
        return optim.SGD(params, lr=c.OPTIM.LR, momentum=c.OPTIM.MOMENTUM,
                         dampening=c.OPTIM.DAMPENING, weight_decay=c.OPTIM.WD,
                         nesterov=c.OPTIM.NESTEROV)
    raise NotImplementedError(c.OPTIM.METHOD)
