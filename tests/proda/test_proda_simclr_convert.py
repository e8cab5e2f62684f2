"""SimCLRv2 TF checkpoint -> ProDA's SimCLR file, on synthetic variables with SimCLRv2's names and shapes.

The variables are built the way google-research/simclr's resnet.py creates them (TF1 tf.layers under
`base_model/`: conv2d[_N]/kernel in H x W x in x out, batch_normalization[_N]/{gamma, beta,
moving_mean, moving_variance}, numbered in creation order, the projection shortcut first in a
group's first block), for a ResNet with one bottleneck block per group, which ProDA's Deeplab
builds with layers=[1, 1, 1, 1]. TensorFlow itself is not installed: in the command's test its
checkpoint reader is stood in for by an object with the reader's two methods.
"""
import functools
import importlib.util
import os
import runpy
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from proda.files import CheckpointError
from proda.models.deeplabv2 import Deeplab, backbone_keys
from proda.simclr_convert import EMA_SCOPE, convert, read_tf_checkpoint, save

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "convert_simclrv2.py"
TINY = [1, 1, 1, 1]
BN = ("gamma", "beta", "moving_mean", "moving_variance")


@functools.lru_cache(maxsize=None)
def simclrv2_variables(scope: str = "base_model/", seed: int = 0, layers=tuple(TINY)) -> dict:
    """A SimCLRv2 ResNet sk0's backbone variables in TF's naming and creation order, plus the
    optimiser slots a real checkpoint also holds (built once per scope; callers copy, never modify)."""
    rng = np.random.default_rng(seed)
    variables, counters = {}, {"conv2d": 0, "batch_normalization": 0}

    def numbered(kind: str) -> str:
        index = counters[kind]
        counters[kind] += 1
        return f"{scope}{kind}" + (f"_{index}" if index else "")

    def conv_bn(size: int, cin: int, cout: int) -> None:
        conv = numbered("conv2d") + "/kernel"
        variables[conv] = rng.standard_normal((size, size, cin, cout)).astype(np.float32)
        variables[conv + "/Momentum"] = np.zeros((size, size, cin, cout), np.float32)
        norm = numbered("batch_normalization")
        for array in BN:
            variables[f"{norm}/{array}"] = (rng.random(cout) + 0.5).astype(np.float32)

    conv_bn(7, 3, 64)  # stem; its batch norm follows
    cin = 64
    for planes, blocks in zip((64, 128, 256, 512), layers):
        for block in range(blocks):
            if block == 0:
                conv_bn(1, cin, 4 * planes)  # projection shortcut, created before the block's convs
            conv_bn(1, cin, planes)
            conv_bn(3, planes, planes)  # the stride sits here in SimCLRv2, on conv1 in ProDA's Bottleneck
            conv_bn(1, planes, 4 * planes)
            cin = 4 * planes
    return variables


@functools.lru_cache(maxsize=None)
def full_checkpoint() -> dict:
    """Trained and moving-average backbones, heads and the step counter, as one checkpoint's variables."""
    heads = {"head_supervised/linear_layer/dense/kernel": np.ones((2048, 1000), np.float32),
             "head_supervised/linear_layer/dense/bias": np.ones(1000, np.float32),
             "head_contrastive/nl_0/dense/kernel": np.ones((2048, 2048), np.float32),
             "global_step": np.array(250228)}
    return simclrv2_variables() | simclrv2_variables(EMA_SCOPE, seed=1) | heads


def student(path) -> nn.Module:
    """The tiny SimCLR-initialised student, as stage 2 builds it (a partial file would be refused)."""
    return Deeplab(nn.BatchNorm2d, num_classes=4, layers=TINY, initialization=str(path), bn_clr=True)


def test_the_converted_file_initialises_the_whole_backbone_with_the_source_arrays(tmp_path):
    """Every backbone tensor of ProDA's model comes from the checkpoint; a 3x3 kernel is the source
    transposed HWIO -> OIHW (h != w checked) and a batch norm carries its four arrays."""
    variables = full_checkpoint()
    state = convert(variables)
    path = tmp_path / "r101_1x_sk0.pth"
    save(state, str(path))
    net = student(path)
    own = net.state_dict()
    assert set(state) == set(backbone_keys(net))
    for key in state:
        assert torch.equal(own[key], state[key]), key
    # creation order: stem 0; layer1.0: shortcut 1, convs 2-4; layer2.0: shortcut 5, convs 6-8
    kernel = variables["base_model/conv2d_7/kernel"]
    weight = own["layer2.0.conv2.weight"]
    assert weight.shape == (128, 128, 3, 3)
    assert weight[5, 7, 0, 2] == torch.tensor(kernel[0, 2, 7, 5]) != torch.tensor(kernel[2, 0, 7, 5])
    assert torch.equal(weight, torch.from_numpy(kernel).permute(3, 2, 0, 1))
    assert torch.equal(own["conv1.weight"], torch.from_numpy(variables["base_model/conv2d/kernel"]).permute(3, 2, 0, 1))
    shortcut_bn = net.layer1[0].downsample[1]
    for module_array, tf_array in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                                   ("running_var", "moving_variance")):
        source = torch.from_numpy(variables[f"base_model/batch_normalization_1/{tf_array}"])
        assert torch.equal(getattr(shortcut_bn, module_array), source), module_array
    assert torch.load(path, weights_only=True).keys() == {"state_dict"}


def test_the_moving_average_weights_are_converted_on_request():
    """The EMA scope yields the moving-average backbone, not the trained one beside it."""
    variables = full_checkpoint()
    ema = convert(variables, EMA_SCOPE)
    assert torch.equal(ema["layer4.0.conv3.weight"],
                       torch.from_numpy(variables[EMA_SCOPE + "conv2d_16/kernel"]).permute(3, 2, 0, 1))
    assert not torch.equal(ema["conv1.weight"], convert(variables)["conv1.weight"])


def sk1_stem(variables: dict) -> dict:
    """The sk1 (ResNet-D) stem starts with a 3x3 conv."""
    return variables | {"base_model/conv2d/kernel": np.zeros((3, 3, 3, 32), np.float32)}


@pytest.mark.parametrize("damage, message", [
    (lambda v: {k.replace("base_model/", "model/resnet/"): a for k, a in v.items()},
     r"no conv kernels under 'base_model/'"),
    (sk1_stem, r"not a ResNet sk0"),
    (lambda v: {k: a for k, a in v.items() if k != "base_model/batch_normalization_3/moving_variance"},
     r"batch_normalization_3 lacks moving_variance"),
    (lambda v: {k: a for k, a in v.items() if not k.startswith("base_model/batch_normalization_16/")},
     r"batch_normalization_16 is missing"),
    (lambda v: v | {"base_model/conv2d_4/bias": np.zeros(256, np.float32)},
     r"unexpected variable base_model/conv2d_4/bias"),
    (lambda v: {k: a for k, a in v.items() if "_16/" not in k}, r"4 block groups|kernel sizes"),
])
def test_an_unexpected_structure_ends_in_one_line(damage, message):
    """Another naming scheme (TF2), sk1, a lost array, a lost layer, an extra bias: one CheckpointError line."""
    with pytest.raises(CheckpointError, match=message) as err:
        convert(damage(simclrv2_variables()))
    assert "\n" not in str(err.value)


def test_reading_names_a_missing_file_then_a_missing_tensorflow(tmp_path, monkeypatch):
    """A missing checkpoint is named with its download address; TensorFlow, not a dependency, is named with
    the package to install; each in one line."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import fails as if not installed
    prefix = tmp_path / "r101_1x_sk0" / "model.ckpt-250228"
    found_nothing = r"not found: .*model\.ckpt-250228\.index .*storage\.googleapis\.com"
    with pytest.raises(CheckpointError, match=found_nothing) as missing:
        read_tf_checkpoint(str(prefix))
    prefix.parent.mkdir()
    Path(f"{prefix}.index").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"pip install tensorflow-cpu") as no_tf:
        read_tf_checkpoint(str(prefix))
    assert "\n" not in str(missing.value) + str(no_tf.value)


class FakeReader:
    """TensorFlow's checkpoint reader, its two methods, over a dict; an unknown prefix fails as TF's does."""

    def __init__(self, path: str, checkpoints: dict) -> None:
        if path not in checkpoints:
            raise ValueError("Unsuccessful TensorSliceReader constructor: Failed to find any matching files "
                             f"for {path}\n...")
        self.arrays = checkpoints[path]

    def get_variable_to_shape_map(self) -> dict:
        """Variable name -> shape."""
        return {name: list(a.shape) for name, a in self.arrays.items()}

    def get_tensor(self, name: str) -> np.ndarray:
        """One variable's array."""
        return self.arrays[name]


def run_script(monkeypatch, *args: str) -> None:
    """scripts/convert_simclrv2.py in this process, as `python scripts/convert_simclrv2.py ARGS`."""
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    monkeypatch.setattr(sys, "path", list(sys.path))  # the script puts the clone first
    runpy.run_path(str(SCRIPT), run_name="__main__")


def test_the_command_converts_a_checkpoint_and_refuses_a_bad_one_in_one_line(tmp_path, monkeypatch, capsys):
    """The command end to end, TensorFlow's reader stood in for (TF is not installed here): the written file
    holds the backbone; a missing or unreadable checkpoint ends in one line, exit status 2 and no file."""
    prefix, broken = str(tmp_path / "model.ckpt-250228"), str(tmp_path / "broken.ckpt-1")
    for name in (prefix, broken):
        Path(f"{name}.index").write_bytes(b"")
    checkpoints = {prefix: simclrv2_variables() | {"global_step": np.array(250228)}}
    tf = types.ModuleType("tensorflow")
    tf.train = types.SimpleNamespace(load_checkpoint=lambda path: FakeReader(path, checkpoints))
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    out = tmp_path / "pretrained" / "simclr" / "r101_1x_sk0.pth"
    run_script(monkeypatch, prefix, str(out))
    assert "wrote 85 backbone tensors" in capsys.readouterr().out
    assert torch.load(out, weights_only=True)["state_dict"].keys() == convert(simclrv2_variables()).keys()
    for bad, message in ((str(tmp_path / "absent"), "checkpoint not found: "), (broken, "cannot read the TensorFlow")):
        with pytest.raises(SystemExit) as done:
            run_script(monkeypatch, bad, str(tmp_path / "x.pth"))
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and bad in err
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.slow
def test_the_command_run_from_a_clone_without_tensorflow_says_how_to_install_it(tmp_path):
    """As a user runs it (a fresh interpreter, a few seconds on an idle machine): one line, exit status 2."""
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("TensorFlow is installed here")
    (tmp_path / "model.ckpt-1.index").write_bytes(b"")
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "model.ckpt-1"), str(tmp_path / "x.pth")],
                          capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install tensorflow-cpu" in done.stderr
