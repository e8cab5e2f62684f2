"""tent.resnet26: TTT's ResNet-26 layout, and its checkpoint through MODEL.ARCH ResNet26 (weights-only, one-line errors)."""
import collections

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tent.errors import ConfigError, CorruptFileError, MissingResourceError, UnsafeCheckpointError
from tent.models import load_source_model
from tent.resnet26 import ResNet26, checkpoint_path


def test_layout_is_ttts_resnet26():
    model = ResNet26()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 26  # depth 26 = stem + 3 stages x 4 blocks x 2 convs + classifier
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 25  # two per block, one at the end
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)  # parameter-free shortcuts: no 1x1
    widths = collections.Counter(c.out_channels for c in convs)
    assert widths == {16: 9, 32: 8, 64: 8}  # the 16-channel stem, then stages of width 1 x (16, 32, 64)
    state = model.state_dict()
    for key in ("conv1.weight", "layer1.0.bn1.weight", "layer2.0.conv1.weight", "layer3.3.bn2.running_var",
                "bn.weight", "fc.bias"):  # TTT's module names
        assert key in state
    assert "mean" not in state and "std" not in state  # the input normalisation is not a weight
    # stem 432 + stage 1 4 x 4,672 + stage 2 13,920 + 3 x 18,560 + stage 3 55,488 + 3 x 73,984 + BN 128 + fc 650
    assert sum(p.numel() for p in model.parameters()) == 366_938  # as TTT's ResNetCifar(26, 1) with 10 classes
    assert ResNet26(100)(torch.rand(2, 3, 32, 32)).shape == (2, 100)


def test_forward_equals_ttts_formulation():
    """Normalised by 0.5 / 0.5, pre-activation blocks, shortcut = avg-pool then zero channels, BN-ReLU-pool-fc."""
    torch.manual_seed(0)
    model = ResNet26().eval()
    for m in model.modules():  # non-trivial statistics and affine parameters
        if isinstance(m, nn.BatchNorm2d):
            for t in (m.running_mean, m.weight, m.bias):
                t.data.uniform_(-0.5, 0.5)
            m.running_var.data.uniform_(0.5, 2)
    x = torch.rand(3, 3, 32, 32)

    def block(b, h):
        r = b.conv2(F.relu(b.bn2(b.conv1(F.relu(b.bn1(h))))))
        if b.stride != 1:
            h = F.avg_pool2d(h, 2)
            h = torch.cat([h, h * 0], 1)
        return h + r

    h = model.conv1((x - 0.5) / 0.5)
    for layer in (model.layer1, model.layer2, model.layer3):
        for b in layer:
            h = block(b, h)
    expected = model.fc(F.avg_pool2d(F.relu(model.bn(h)), 8).flatten(1))
    torch.testing.assert_close(model(x), expected)


def test_initialisation_is_ttts():
    torch.manual_seed(0)
    conv = ResNet26().layer3[1].conv1  # 64 x 64 x 3 x 3 weights
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 64)) ** 0.5, rel=0.05)


def write_checkpoint(ckpt_dir, source, model):
    path = checkpoint_path(ckpt_dir, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state": model.state_dict(), "clean_test_acc": 0.5}, path)
    return path


@pytest.mark.parametrize("dataset, source, classes, where", [
    ("cifar10", "cifar10", 10, "cifar10/corruptions/ResNet26.pt"),
    ("cifar100", "cifar100", 100, "cifar100/corruptions/ResNet26.pt"),
    ("svhn2usps", "svhn", 10, "svhn/ResNet26.pt")])
def test_arch_resnet26_loads_the_source_checkpoint(tmp_path, dataset, source, classes, where):
    torch.manual_seed(1)
    trained = ResNet26(classes).eval()
    path = write_checkpoint(tmp_path, source, trained)
    assert path == tmp_path / where
    loaded = load_source_model("ResNet26", str(tmp_path), dataset)
    assert isinstance(loaded, ResNet26) and not loaded.training
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(loaded(x), trained(x))


def test_missing_checkpoint_names_the_path_and_the_command(tmp_path):
    with pytest.raises(MissingResourceError) as exc:
        load_source_model("ResNet26", str(tmp_path), "svhn2mnist")
    message = str(exc.value)
    assert str(tmp_path / "svhn" / "ResNet26.pt") in message and "\n" not in message
    assert f"python -m tent.train_source --dataset svhn --ckpt_dir {tmp_path}" in message


def test_wrong_or_unsafe_checkpoints_are_refused_in_one_line(tmp_path):
    path = write_checkpoint(tmp_path, "cifar100", ResNet26(10))  # a CIFAR-10 model where CIFAR-100's belongs
    with pytest.raises(CorruptFileError, match="fc.weight"):
        load_source_model("ResNet26", str(tmp_path), "cifar100")
    torch.save(ResNet26(100).state_dict(), path)  # a bare state dict: not what train_source writes
    with pytest.raises(CorruptFileError, match="no 'model_state'"):
        load_source_model("ResNet26", str(tmp_path), "cifar100")
    torch.save({"model_state": collections.OrderedDict(), "net": nn.Linear(1, 1)}, path)  # a pickled module
    with pytest.raises(UnsafeCheckpointError):
        load_source_model("ResNet26", str(tmp_path), "cifar100")
    with pytest.raises(ConfigError, match="CORRUPTION.DATASET imagenet"):
        load_source_model("ResNet26", str(tmp_path), "imagenet")
