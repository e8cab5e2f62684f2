"""tent.pycls_resnet: pycls's ResNet-50 loads a file with pycls's exact keys and shapes, weights-only,
and sees its input as pycls does (BGR, normalised in BGR order)."""
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

import pytest
import torch
from PIL import Image
from torch import nn

from tent import cifar10c, imagenetc, pycls_resnet
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
    """A pycls-format ResNet-50 checkpoint on disk where MODEL.ARCH pycls_R50 reads it, and its content."""
    path = pycls_resnet.checkpoint_path(tmp_path_factory.mktemp("ckpt"))
    path.parent.mkdir(parents=True)
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


# ------------------ End to end: `python cifar10c.py --cfg cfgs/imagenet/pycls_r50_*.yaml` ------------------ #
REPO = Path(__file__).resolve().parents[2]


def pycls_input(path: Path) -> torch.Tensor:
    """pycls's own test input for an ImageNet-C file: cv2's BGR pixels / 255, normalised in BGR order, CHW.

    (The files are already 224 x 224, cut as pycls's scale 256 / centre crop 224 cuts clean ImageNet.)
    """
    import cv2

    im = cv2.imread(str(path)).astype(np.float32) / 255
    im = (im - np.float32(pycls_resnet.MEAN_BGR)) / np.float32(pycls_resnet.STD_BGR)
    return torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1)))


def imagenetc_tree(data_dir: Path, model: pycls_resnet.PyclsResNet, size: int, n: int = 4) -> List[Path]:
    """DATA_DIR/ImageNet-C/fog/5/<wnid>/*.JPEG: the first n - 1 images in the class the model predicts from
    pycls's own input (so source errs on none of them), the last in another class (an error of 1 / n)."""
    wnids = sorted(imagenetc.imagenet_classes())
    rng = np.random.default_rng(0)
    model.eval()
    files = []
    for i in range(n):
        image = (rng.random((size, size, 3)) * 80 + rng.random(3) * 170).astype(np.uint8)
        staged = data_dir / f"staged{i}.png"
        staged.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(staged)
        with torch.no_grad():
            predicted = body(model)(pycls_input(staged)[None]).argmax(1).item()
        label = predicted if i < n - 1 else (predicted + 1) % 1000
        target = data_dir / "ImageNet-C" / "fog" / "5" / wnids[label] / f"ILSVRC2012_val_{i:08d}.JPEG"
        target.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(target)  # PNG content under ImageNet-C's name: lossless, read by content
        files.append(target)
    return files


def body(model: nn.Module) -> nn.Module:
    """pycls's network without this project's input conversion."""
    return nn.Sequential(model.stem, model.s1, model.s2, model.s3, model.s4, model.head)


def recorded_inputs(monkeypatch) -> List[torch.Tensor]:
    """What the run's pycls_R50 models see at their first convolution (every method's copy records)."""
    seen: List[torch.Tensor] = []
    load = pycls_resnet.load_pycls_resnet

    def load_and_watch(*args, **kwargs):
        model = load(*args, **kwargs)
        model.stem.conv.register_forward_pre_hook(lambda module, inputs: seen.extend(inputs[0].detach().clone()))
        return model
    monkeypatch.setattr(pycls_resnet, "load_pycls_resnet", load_and_watch)
    return seen


def run_args(tmp_path: Path, ckpt_dir: Path, method: str = "tent") -> List[str]:
    """The shipped config, on the tiny tree's one corruption x severity, every folder in tmp_path."""
    return ["--cfg", str(REPO / "cfgs" / "imagenet" / f"pycls_r50_{method}.yaml"), "CORRUPTION.TYPE", "[fog]",
            "CORRUPTION.SEVERITY", "[5]", "DATA_DIR", str(tmp_path / "data"), "CKPT_DIR", str(ckpt_dir),
            "SAVE_DIR", str(tmp_path / "out"), "DEVICE", "cpu"]


@pytest.mark.usefixtures("fresh_cfg")
def test_the_config_feeds_pycls_r50_pycls_input_with_imagenet_labels(tmp_path, checkpoint_file):
    """The shipped config's model and data path, without the run: MODEL.ARCH pycls_R50 loads the file from
    CKPT_DIR, NUM_EX -1 reads the full folder as RGB in [0, 1] (the model converts it: nothing normalises twice),
    and the labels are ImageNet's indices."""
    from tent import data, launch, models, protocols

    _, c = launch.config_from_args("x", run_args(tmp_path, checkpoint_file[0].parents[2], "source"))
    model = models.load_source_model(c.MODEL.ARCH, c.CKPT_DIR, c.CORRUPTION.DATASET, c.DATA_DIR)
    assert isinstance(model, pycls_resnet.PyclsResNet) and not model.training
    assert torch.equal(model.head.fc.bias, checkpoint_file[1]["model_state"]["head.fc.bias"])
    files = imagenetc_tree(tmp_path / "data", model, size=32)
    folder = data.load_part(c, "reset_each_shift", "fog", 5)
    piece = protocols.piece_data(protocols.Piece(("fog",), 5, True), "reset_each_shift", lambda n, s: folder, 0.0, 1)
    (x, y), = list(piece.batches(len(files), workers=0))
    wnids = sorted(imagenetc.imagenet_classes())
    expected = {f: pycls_input(f) for f in files}
    for image, label in zip(x, y.tolist()):
        converted = (image.flip(0) - model.mean[0]) / model.std[0]  # what the model does with the batch
        match = [f for f, e in expected.items() if torch.allclose(converted, e, atol=1e-5)]
        assert len(match) == 1 and wnids[label] == match[0].parent.name
        assert 0 <= image.min() and image.max() <= 1


@pytest.mark.slow
@pytest.mark.usefixtures("fresh_cfg")
def test_pycls_r50_runs_imagenet_c_with_pycls_input(tmp_path, checkpoint_file, monkeypatch):
    """The tent config end to end on a tiny ImageNet-C tree: pycls's weights file from CKPT_DIR, the network fed
    exactly pycls's input (no second normalisation), ImageNet's labels, and every method running."""
    ckpt_dir = checkpoint_file[0].parents[2]
    files = imagenetc_tree(tmp_path / "data", pycls_resnet.load_pycls_resnet(checkpoint_file[0]), size=64)
    seen = recorded_inputs(monkeypatch)
    results = cifar10c.evaluate("ImageNet-C", run_args(tmp_path, ckpt_dir) + [
        "MODEL.ADAPTATIONS", "[source, norm, tent]", "TEST.BATCH_SIZE", "2"])
    assert results["source"][5]["fog"] == pytest.approx(1 / len(files))  # the by-hand predictions, labelled
    assert all(0 <= results[m][5]["fog"] <= 1 for m in ("norm", "tent"))
    expected = torch.stack([pycls_input(f) for f in files])
    assert len(seen) == 3 * len(files)  # every image, once per method
    for x in seen:  # each input is one file's pycls input (the stream shuffles them)
        assert (expected - x).abs().amax(dim=(1, 2, 3)).min() < 1e-5


@pytest.mark.usefixtures("fresh_cfg")
def test_pycls_r50_is_refused_for_other_datasets_and_needs_its_file(tmp_path, capsys):
    """MODEL.ARCH pycls_R50 is for imagenet; a missing weights file ends in one line naming it and pycls's URL."""
    with pytest.raises(SystemExit):
        cifar10c.evaluate("x", run_args(tmp_path, tmp_path / "ckpt") + ["CORRUPTION.DATASET", "cifar10",
                                                                           "CORRUPTION.NUM_EX", "10"])
    assert "MODEL.ARCH" in capsys.readouterr().err
    status = cifar10c.main(run_args(tmp_path, tmp_path / "ckpt"))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "error: " in ln]
    assert status == 1 and len(lines) == 1
    assert str(pycls_resnet.checkpoint_path(tmp_path / "ckpt")) in lines[0] and pycls_resnet.R50_URL in lines[0]


@pytest.mark.slow
def test_pycls_r50_configs_run_as_shipped_at_224(tmp_path, checkpoint_file):
    """`python cifar10c.py --cfg cfgs/imagenet/pycls_r50_<method>.yaml` at ImageNet-C's 224 x 224, batch 64."""
    ckpt_dir = checkpoint_file[0].parents[2]
    files = imagenetc_tree(tmp_path / "data", pycls_resnet.load_pycls_resnet(checkpoint_file[0]), size=224, n=6)
    for method in ("source", "norm", "tent"):
        done = subprocess.run([sys.executable, "cifar10c.py", *run_args(tmp_path, ckpt_dir, method)], cwd=REPO,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-2000:]
        if method == "source":
            assert f"error % [fog5]: {100 / len(files):.2f}%" in done.stderr
