"""Backbone initialisation from a pretrained file (ImageNet or SimCLR): the whole backbone or a refusal,
wrapper prefixes (module., encoder., backbone.) handled on purpose, the count in the run's log."""
import logging

import pytest
import torch
import torch.nn as nn

from proda.files import CheckpointError
from proda.models.deeplabv2 import Deeplab, backbone_keys
from proda.utils import LOGGER_NAME

TINY = [1, 1, 1, 1]
N_CLASS = 4


def backbone_file(path, prefix: str = "", extra: dict = None, drop: int = 0, seed: int = 1) -> dict:
    """A SimCLR-style {'state_dict': ...} holding a tiny backbone's tensors (keys under `prefix`)."""
    torch.manual_seed(seed)
    source = Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, layers=TINY, init="random")
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("layer5.", "bn_pretrain."))}
    state = dict(list(state.items())[drop:])
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()} | (extra or {})}, path)
    return state


def student(path, **kwargs) -> nn.Module:
    """A tiny SimCLR-initialised student, as stage 2 builds it."""
    return Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, initialization=str(path), bn_clr=True, layers=TINY, **kwargs)


@pytest.mark.parametrize("prefix", ["", "module.", "encoder.", "backbone.", "module.encoder."])
def test_a_whole_backbone_loads_under_any_usual_prefix(tmp_path, prefix):
    """Every backbone tensor lands, whichever wrapper prefix the file's keys carry; a projection head
    outside the prefix is ignored."""
    path = tmp_path / "simclr.pth"
    state = backbone_file(path, prefix, extra={"head.0.weight": torch.ones(3, 3)})
    net = student(path)
    own = net.state_dict()
    for key in backbone_keys(net):
        assert torch.equal(own[key], state[key]), key


def test_a_file_missing_backbone_tensors_is_refused_unless_accepted(tmp_path):
    """A partial file used to train from mostly random weights with exit 0; now one line says how much is
    missing, and --allow_partial_init accepts it deliberately."""
    path = tmp_path / "partial.pth"
    backbone_file(path, drop=3)
    with pytest.raises(CheckpointError, match=r"initialises \d+ of the model's \d+ backbone tensors.*--allow_partial_init"):
        student(path)
    student(path, allow_partial_init=True)


def test_keys_that_match_nothing_are_refused_naming_the_file_s_keys(tmp_path):
    """An unknown prefix initialises 0 tensors: refused, and the message shows what the keys look like."""
    path = tmp_path / "odd.pth"
    backbone_file(path, prefix="net.trunk.")
    with pytest.raises(CheckpointError, match=r"initialises 0 of .*net\.trunk\.conv1\.weight") as err:
        student(path)
    assert "\n" not in str(err.value)


def test_a_tensor_of_another_shape_counts_as_missing(tmp_path):
    """A file for another width does not crash load_state_dict with a traceback: it is refused in one line."""
    path = tmp_path / "wide.pth"
    state = backbone_file(path)
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save({"state_dict": state}, path)
    with pytest.raises(CheckpointError, match="conv1.weight"):
        student(path)


def test_the_count_reaches_the_run_log(tmp_path, caplog):
    """Every initialisation says how many backbone tensors it set, on the run's logger."""
    path = tmp_path / "simclr.pth"
    backbone_file(path, prefix="module.")
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
            net = student(path)
    finally:
        logger.removeHandler(caplog.handler)
    n = len(backbone_keys(net))
    assert f"initialised {n} of the {n} backbone tensors" in caplog.text and "'module.'" in caplog.text


def test_the_option_reaches_every_network_of_a_run():
    """--allow_partial_init is a declared option, off by default, passed to every DeepLabv2 a run builds."""
    from proda.models.builders import network_options
    from proda.options import get_parser
    opt = get_parser("ProDA", "train").parse_args([])
    assert opt.allow_partial_init is False and network_options(opt)["allow_partial_init"] is False
    assert network_options(get_parser("ProDA", "train").parse_args(["--allow_partial_init"]))["allow_partial_init"] is True
