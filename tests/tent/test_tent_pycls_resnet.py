"""tent.pycls_resnet: pycls's ResNet-50 loads a file with pycls's exact keys and shapes, weights-only,
and sees its input as pycls does (BGR, normalised in BGR order)."""
import pickle
from typing import Dict

import pytest
import torch
from torch import nn

from tent import pycls_resnet
from tent.errors import CorruptFileError, MissingResourceError, UnsafeCheckpointError


def bn_entries(prefix: str, w: int) -> Dict[str, tuple]:
    """The five state-dict entries of a pycls BatchNorm2d."""
    return {f"{prefix}.weight": (w,), f"{prefix}.bias": (w,), f"{prefix}.running_mean": (w,),
            f"{prefix}.running_var": (w,), f"{prefix}.num_batches_tracked": ()}


def pycls_r50_shapes() -> Dict[str, tuple]:
    """pycls's ResNet-50 state-dict keys and shapes, written from pycls/models/resnet.py's structure."""
    shapes = {"stem.conv.weight": (64, 3, 7, 7), **bn_entries("stem.bn", 64)}
    w_in = 64
    for s, (depth, w_out, w_b) in enumerate([(3, 256, 64), (4, 512, 128), (6, 1024, 256), (3, 2048, 512)], 1):
        for b in range(1, depth + 1):
            p = f"s{s}.b{b}"
            if b == 1:
                shapes.update({f"{p}.proj.weight": (w_out, w_in, 1, 1), **bn_entries(f"{p}.bn", w_out)})
            shapes.update({f"{p}.f.a.weight": (w_b, w_in if b == 1 else w_out, 1, 1), **bn_entries(f"{p}.f.a_bn", w_b),
                           f"{p}.f.b.weight": (w_b, w_b, 3, 3), **bn_entries(f"{p}.f.b_bn", w_b),
                           f"{p}.f.c.weight": (w_out, w_b, 1, 1), **bn_entries(f"{p}.f.c_bn", w_out)})
        w_in = w_out
    shapes.update({"head.fc.weight": (1000, 2048), "head.fc.bias": (1000,)})
    return shapes


def pycls_checkpoint(seed: int = 0) -> dict:
    """A checkpoint in pycls's format (core/checkpoint.py) with random weights of pycls's shapes."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in pycls_r50_shapes().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    return {"epoch": 99, "model_state": state, "optimizer_state": {"state": {}, "param_groups": []},
            "cfg": "MODEL:\n  TYPE: resnet\n  DEPTH: 50\n"}


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    """A pycls-format ResNet-50 checkpoint on disk, and its content."""
    path = tmp_path_factory.mktemp("pycls") / pycls_resnet.R50_FILE
    ckpt = pycls_checkpoint()
    torch.save(ckpt, path)
    return path, ckpt


@pytest.fixture(scope="module")
def loaded(checkpoint_file):
    """The model loaded from that file (once: a ResNet-50 is slow to build on a loaded CPU)."""
    return pycls_resnet.load_pycls_resnet(checkpoint_file[0])


def test_state_dict_keys_and_shapes_are_pycls_s(loaded):
    """The network's state dict has exactly pycls's keys and shapes (the normalisation adds none)."""
    own = {k: tuple(v.shape) for k, v in loaded.state_dict().items()}
    assert own == pycls_r50_shapes()


def test_loads_a_pycls_file_weights_only_and_strictly(checkpoint_file, loaded):
    """Every tensor of the file lands in the model unchanged."""
    _, ckpt = checkpoint_file
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, ckpt["model_state"][key]), key


def test_input_is_converted_to_pycls_bgr_normalisation(loaded):
    """Output on RGB [0, 1] images equals pycls's network on its own BGR-normalised input."""
    model = loaded.eval()
    x = torch.rand(2, 3, 32, 32)
    bgr = x[:, [2, 1, 0]]
    mean = torch.tensor([0.406, 0.456, 0.485]).view(1, 3, 1, 1)
    std = torch.tensor([0.225, 0.224, 0.229]).view(1, 3, 1, 1)
    pycls_input = (bgr - mean) / std
    body = nn.Sequential(model.stem, model.s1, model.s2, model.s3, model.s4, model.head)
    with torch.no_grad():
        assert torch.equal(model(x), body(pycls_input))
        assert not torch.allclose(model(x), body(x))  # the conversion matters


def test_tent_updates_pycls_batch_norms(loaded):
    """tent's configure/collect find the affine parameters of all 53 of pycls's BN layers."""
    import tent
    model = tent.configure_model(loaded)  # the module's last user of the loaded model
    params, names = tent.collect_params(model)
    assert len(params) == 2 * 53 and all(n.endswith(("weight", "bias")) for n in names)


def test_missing_file_names_the_source(tmp_path):
    """A missing checkpoint names the path and pycls's download address in one line."""
    with pytest.raises(MissingResourceError) as err:
        pycls_resnet.load_pycls_resnet(tmp_path / "R-50.pyth")
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "R-50.pyth") in message and pycls_resnet.R50_URL in message


def test_wrong_keys_are_refused_with_counts(tmp_path, checkpoint_file):
    """A torchvision-style or prefixed file is refused, saying what is missing, instead of loading partly."""
    _, ckpt = checkpoint_file
    prefixed = {"model_state": {f"module.{k}": v for k, v in list(ckpt["model_state"].items())[:6]}}
    path = tmp_path / "prefixed.pyth"
    torch.save(prefixed, path)
    with pytest.raises(CorruptFileError, match="missing .*unexpected"):
        pycls_resnet.load_pycls_resnet(path)
    torch.save({"epoch": 1}, tmp_path / "other.pyth")
    with pytest.raises(CorruptFileError, match="not a pycls checkpoint"):
        pycls_resnet.load_pycls_resnet(tmp_path / "other.pyth")


class Payload:
    """A pickle that would run code when loaded."""

    def __reduce__(self):
        return (print, ("ran",))


def test_a_file_that_runs_code_is_refused(tmp_path):
    """Loading never unpickles arbitrary objects."""
    path = tmp_path / "evil.pyth"
    with open(path, "wb") as f:
        pickle.dump({"model_state": Payload()}, f)
    with pytest.raises((UnsafeCheckpointError, CorruptFileError)):
        pycls_resnet.load_pycls_resnet(path)
