"""ProDA's networks and trainer: DeepLabv2 matches the reference architecture and initialisation,
the losses ignore label 250, each stage's step updates what it should (and nothing else), and
checkpoints round-trip in the reference format and with the full resume state."""
import copy
import logging
import random

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.utils.data import default_collate

from proda.checkpoint import load_training_state, reference_checkpoint, training_state
from proda.data.randaugment import RandAugmentMC
from proda.files import CheckpointError, OptionError
from proda.models.adaptation_modelv2 import CustomModel
from proda.models.builders import batchnorm_class, build_student
from proda.models.deeplabv2 import ASPP_DILATIONS, Deeplab
from proda.models.discriminator import FCDiscriminator
from proda.models.steps import STAGE_STEPS
from proda.models.utils import PolynomialLR, cross_entropy2d, freeze_bn, get_scheduler, is_batchnorm
from proda.options import STAGES, parse_opt
from proda.runner import INFERENCE_OPTIONS
from proda.utils import atomic_save

N_CLASS = 13
TINY = [1, 1, 1, 1]
LOG = logging.getLogger("test_proda_models")


def make_opt(*flags):
    """Options for a tiny CPU model: one block per ResNet stage, random init, 13 classes."""
    return parse_opt(["--device", "cpu", "--backbone_layers", "1,1,1,1", "--student_init", "random",
                      "--no_resume", "--bn", "bn", "--n_class", str(N_CLASS), "--train_iters", "100", *flags])


def tiny_deeplab(**kw):
    """A tiny randomly initialised Deeplab with the reference's module names."""
    return Deeplab(nn.BatchNorm2d, num_classes=kw.pop("num_classes", N_CLASS), init="random", layers=TINY, **kw)


def batch(n=2, h=32, w=32, seed=0):
    """Images, 13-class labels with an ignored band, and RandAugmentMC params of a strong view."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, h, w, generator=g)
    labels = torch.randint(0, N_CLASS, (n, h, w), generator=g)
    labels[:, : h // 4] = 250
    random.seed(seed)
    np.random.seed(seed)
    params = default_collate([RandAugmentMC(2, 10)(Image.new("RGB", (w, h)))[1] for _ in range(n)])
    return images, labels, params


def weak_params(n=2):
    """The weak view of a 48 x 48 full image: resized to 40 x 40, cropped to 32 x 32, every other one flipped."""
    return default_collate([{"RandomSized": (40, 40), "RandomCrop": (4, 36, 8, 40),
                             "RandomHorizontallyFlip": bool(i % 2)} for i in range(n)])


def snapshot(net):
    """Copies of a network's parameters and buffers by name."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def changed(before, net, names):
    """Which of the named tensors differ from the snapshot."""
    now = net.state_dict()
    return {k for k in names if not torch.equal(before[k], now[k])}


def saved_checkpoint(tmp_path, **flags):
    """A reference-format checkpoint of a tiny model, written to tmp_path."""
    model = CustomModel(make_opt("--stage", "src_only", *flags.get("argv", [])), LOG)
    path = str(tmp_path / "from_gta5_to_cityscapes_on_deeplabv2_best_model.pkl")
    atomic_save(reference_checkpoint(model, iters=7, best_iou=0.25), path)
    return path, model


# ----------------------------------------------------------------------------- architecture

def expected_reference_shapes(num_classes, bn_clr):
    """Names and shapes of the reference DeepLabv2, derived from its definition.

    The backbone is torchvision's ResNet-101 without `fc` (same names and shapes: the reference
    only moves strides into dilations); the head is Classifier_Module2's layout.
    """
    with torch.device("meta"):
        backbone = torchvision.models.resnet101()
    shapes = {k: tuple(v.shape) for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    width = 256 * (len(ASPP_DILATIONS) + 1)
    for i in range(len(ASPP_DILATIONS) + 1):  # branch 0 is 1x1, then one dilated 3x3 per rate
        k = 1 if i == 0 else 3
        shapes.update({f"layer5.conv2d_list.{i}.0.weight": (256, 2048, k, k), f"layer5.conv2d_list.{i}.0.bias": (256,),
                       f"layer5.conv2d_list.{i}.1.weight": (256,), f"layer5.conv2d_list.{i}.1.bias": (256,)})
    shapes.update({"layer5.bottleneck.0.se.0.weight": (width // 16, width), "layer5.bottleneck.0.se.0.bias": (width // 16,),
                   "layer5.bottleneck.0.se.2.weight": (width, width // 16), "layer5.bottleneck.0.se.2.bias": (width,),
                   "layer5.bottleneck.1.weight": (256, width, 3, 3), "layer5.bottleneck.1.bias": (256,),
                   "layer5.bottleneck.2.weight": (256,), "layer5.bottleneck.2.bias": (256,),
                   "layer5.head.1.weight": (num_classes, 256, 1, 1)})
    if bn_clr:
        shapes.update({f"bn_pretrain.{k}": (2048,) for k in ("weight", "bias", "running_mean", "running_var")})
        shapes["bn_pretrain.num_batches_tracked"] = ()
    return shapes


@pytest.mark.parametrize("bn_clr", [False, True])
def test_full_size_state_dict_matches_reference_architecture(bn_clr):
    with torch.device("meta"):
        net = Deeplab(nn.BatchNorm2d, num_classes=19, init="random", bn_clr=bn_clr)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == expected_reference_shapes(19, bn_clr)
    assert len(got) == (658 if bn_clr else 653)


def test_sync_batchnorm_keeps_the_names_and_runs_on_cpu():
    sync = Deeplab(nn.SyncBatchNorm, num_classes=N_CLASS, init="random", layers=TINY)
    assert list(sync.state_dict()) == list(tiny_deeplab().state_dict())
    out = sync(torch.randn(2, 3, 32, 32))  # train mode, no process group: plain batch statistics
    assert out["out"].shape == (2, N_CLASS, 5, 5)
    assert batchnorm_class("sync_bn", torch.device("cpu")) is nn.BatchNorm2d  # one process
    with pytest.raises(NotImplementedError):
        batchnorm_class("group_norm", torch.device("cpu"))


def test_tiny_backbone_forward_returns_feat_and_logits_at_stride_8():
    net = tiny_deeplab()
    full = set(expected_reference_shapes(N_CLASS, False))
    assert set(net.state_dict()) <= full  # same names, fewer blocks
    out = net(torch.randn(2, 3, 33, 49), ssl=True)
    assert set(out) == {"feat", "out"}
    assert out["feat"].shape == (2, 256, 5, 7) and out["out"].shape == (2, N_CLASS, 5, 7)
    net.eval()  # dropout off: the logits are the 1x1 classifier of 'feat'
    out = net(torch.randn(1, 3, 33, 33))
    assert torch.allclose(out["out"], F.conv2d(out["feat"], net.layer5.head[1].weight), atol=1e-6)


def test_reference_initialisation_draws_convs_from_n_0_001():
    net = Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, init="random", layers=[1, 1, 2, 1])
    weights = torch.cat([m.weight.flatten() for m in net.modules() if isinstance(m, nn.Conv2d)])
    assert abs(weights.std().item() - 0.01) < 5e-4 and abs(weights.mean().item()) < 1e-4
    bns = [m for m in net.modules() if is_batchnorm(m)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert torch.all(net.layer5.bottleneck[1].bias == 0)


def test_lr_params_repeat_backbone_parameters_like_the_reference():
    net = tiny_deeplab(bn_clr=True)
    counts = {}
    for p in net.get_1x_lr_params():
        counts[id(p)] = counts.get(id(p), 0) + 1
    names = {id(p): n for n, p in net.named_parameters()}
    for pid, count in counts.items():
        name = names[pid]
        # stem: its own module only; a block's conv/bn: stage, block, module; a shortcut: one level more
        expected = 1 if name.startswith(("conv1.", "bn1.")) else 4 if ".downsample." in name else 3
        assert count == expected, name
    unique = list(net.get_1x_lr_params(unique=True))
    head = list(net.get_10x_lr_params())
    assert len(unique) == len(counts) and len({id(p) for p in unique + head}) == len(list(net.parameters()))
    assert head[0] is net.bn_pretrain.weight


def test_freeze_bn_stops_batchnorm_only():
    net = Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, freeze_bn=True, init="random", layers=TINY)
    assert not net.bn1.weight.requires_grad and not net.layer4[0].downsample[1].bias.requires_grad
    assert net.layer5.conv2d_list[0][1].weight.requires_grad  # GroupNorm trains
    net.apply(freeze_bn)
    assert net.training and not net.bn1.training and net.layer5.training


# ----------------------------------------------------------------------------- initialisation and restore

def test_imagenet_init_from_hub_cache_and_clear_error_without_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    weights = {"conv1.weight": torch.full((64, 3, 7, 7), 0.5), "fc.weight": torch.ones(1000, 2048)}
    torch.save(weights, folder / "resnet101-5d3b4d8f.pth")
    net = Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, layers=TINY, allow_partial_init=True)  # None: ImageNet
    assert torch.all(net.conv1.weight == 0.5)
    missing = tmp_path / "nowhere" / "resnet101.pth"
    with pytest.raises(CheckpointError, match="ImageNet ResNet-101 weights not found: .*nowhere"):
        Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, layers=TINY, imagenet_path=str(missing))


def test_simclr_init_loads_matching_keys_and_explains_bad_files(tmp_path):
    path = tmp_path / "r101_1x_sk0.pth"
    torch.save({"state_dict": {"layer1.0.conv1.weight": torch.full((64, 64, 1, 1), 2.0), "fc.bias": torch.ones(3)}}, path)
    net = Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, initialization=str(path), bn_clr=True, layers=TINY,
                  allow_partial_init=True)
    assert torch.all(net.layer1[0].conv1.weight == 2.0) and hasattr(net, "bn_pretrain")
    with pytest.raises(CheckpointError, match="SimCLR checkpoint not found: .*missing.pth.*--simclr_path"):
        Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, initialization=str(tmp_path / "missing.pth"), layers=TINY)
    torch.save({"weights": {}}, path)
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        Deeplab(nn.BatchNorm2d, num_classes=N_CLASS, initialization=str(path), layers=TINY)


def test_reference_checkpoint_restores_strictly_and_rejects_mismatches(tmp_path):
    path, model = saved_checkpoint(tmp_path)
    saved = torch.load(path, weights_only=True)
    assert set(saved) == {"ResNet101", "iter", "best_iou"} and saved["iter"] == 7 and saved["best_iou"] == 0.25
    assert set(saved["ResNet101"]) == {"model_state", "objective_vectors"}
    restored = tiny_deeplab(restore_from=path)
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in model.BaseNet.state_dict().items())
    with pytest.raises(CheckpointError, match="13 classes, but the model has 19"):
        tiny_deeplab(restore_from=path, num_classes=19)
    with pytest.raises(CheckpointError, match="--bn_clr"):
        tiny_deeplab(restore_from=path, bn_clr=True)
    with pytest.raises(CheckpointError, match="not found"):
        tiny_deeplab(restore_from=str(tmp_path / "absent.pkl"))
    corrupt = tmp_path / "corrupt.pkl"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt"):
        tiny_deeplab(restore_from=str(corrupt))


def test_build_student_is_the_checkpoint_network_alone(tmp_path):
    path, model = saved_checkpoint(tmp_path)
    opt = make_opt("--resume_path", path)  # stage-1 defaults without --ema: fine for inference
    opt = opt.replace(**INFERENCE_OPTIONS)  # as the inference entry points resolve it
    net = build_student(opt)
    assert type(net) is type(model.BaseNet) and net.training
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in model.BaseNet.state_dict().items())
    with pytest.raises(OptionError, match="needs --ema"):  # the trainer refuses these options
        CustomModel(opt, LOG)


# ----------------------------------------------------------------------------- losses and schedules

def test_cross_entropy2d_ignores_250_and_averages():
    logits = torch.randn(2, N_CLASS, 6, 7)
    labels = torch.randint(0, N_CLASS, (2, 6, 7))
    labels[0, :3] = 250
    keep = labels != 250
    per_pixel = -F.log_softmax(logits, 1).gather(1, labels.clamp(max=N_CLASS - 1)[:, None])[:, 0]
    assert torch.allclose(cross_entropy2d(logits, labels), per_pixel[keep].mean())
    assert torch.allclose(cross_entropy2d(logits, labels, reduction="sum"), per_pixel[keep].mean())  # size_average wins
    assert torch.allclose(cross_entropy2d(logits, labels, size_average=False), per_pixel[keep].sum())
    with pytest.raises(NotImplementedError):
        cross_entropy2d(logits, labels[:, :5])


def test_rce_and_regular_loss_follow_their_definitions_and_ignore_250():
    model = CustomModel(make_opt("--stage", "src_only", "--regular_type", "MRENT"), LOG)
    logits = torch.randn(2, N_CLASS, 5, 6)
    labels = torch.randint(0, N_CLASS, (2, 5, 6))
    labels[1] = 250
    p = F.softmax(logits, 1).clamp(1e-7, 1)
    expected = -(torch.log(torch.tensor(1e-4)) * (1 - p.gather(1, labels[:1, None]))).mean()  # image 0 only
    assert torch.allclose(model.rce(logits, labels.clone()), expected, rtol=1e-4)
    entropy_term = (F.softmax(logits, 1) * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(model.regular_loss(logits), entropy_term)
    model.opt = model.opt.replace(regular_type="MRKLD")
    assert torch.allclose(model.regular_loss(logits), -F.log_softmax(logits, 1).mean())


def test_polynomial_lr_decays_to_zero_at_train_iters():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 1.0}], lr=1.0)
    scheduler = get_scheduler(optimizer, make_opt())  # train_iters 100
    assert isinstance(scheduler, PolynomialLR)
    rates = []
    for _ in range(101):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == 1.0 and abs(rates[50] - 0.5 ** 0.9) < 1e-12 and rates[100] == 0.0
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.0  # past the end: zero, not the reference's crash


def test_discriminator_gives_one_logit_per_patch():
    assert FCDiscriminator(N_CLASS)(torch.rand(2, N_CLASS, 64, 96)).shape == (2, 1, 4, 6)


# ----------------------------------------------------------------------------- construction

def test_optimizer_groups_follow_the_reference():
    warm = CustomModel(make_opt("--stage", "warm_up", "--lr", "0.001"), LOG)
    assert [g["lr"] for g in warm.BaseOpti.param_groups] == [0.001, 0.01]
    assert warm.BaseOpti.defaults["momentum"] == 0.9 and warm.BaseOpti.defaults["weight_decay"] == 2e-4
    backbone = warm.BaseOpti.param_groups[0]["params"]
    assert len(backbone) > len({id(p) for p in backbone})  # the reference's repeated parameters
    assert warm.optimizer_D.defaults["betas"] == (0.9, 0.99) and warm.optimizers == [warm.optimizer_D, warm.BaseOpti]
    assert [n.__class__.__name__ for n in warm.nets] == ["ResNet101", "FCDiscriminator"]
    plain = CustomModel(make_opt("--stage", "stage2", "--unique_lr_params", "--finetune"), LOG)
    backbone = plain.BaseOpti.param_groups[0]["params"]
    assert len(backbone) == len({id(p) for p in backbone}) and not hasattr(plain, "net_D")


# ----------------------------------------------------------------------------- steps

def test_warm_up_step_updates_generator_then_discriminator_with_frozen_bn():
    # S_pseudo_src: source CE on the strong view, its labels moved there by label_strong_T
    model = CustomModel(make_opt("--stage", "warm_up", "--freeze_bn", "--lr", "0.01", "--S_pseudo_src", "1"), LOG)
    images, labels, params = batch()
    before_g, before_d = snapshot(model.BaseNet), snapshot(model.net_D)
    d_grads_at_g_step = []
    model.BaseOpti.register_step_pre_hook(
        lambda *_: d_grads_at_g_step.append([p.grad for p in model.net_D.parameters()]))
    model.train()
    model.freeze_bn_apply()
    model.optimizer_zerograd()
    losses = model.warm_up_step({"img": images, "label": labels, "img_strong": images, "params": params},
                                {"img": images.flip(3)})
    assert list(losses) == ["loss_GTA", "loss_G", "loss_D"] and all(np.isfinite(list(losses.values())))
    assert all(g is None for g in d_grads_at_g_step[0])  # D gets no gradient from G's loss
    assert changed(before_d, model.net_D, before_d) == set(before_d)  # then D is updated
    assert all(p.requires_grad for p in model.net_D.parameters())
    bn = {k for k in before_g if any(k.startswith(n + ".") for n, m in model.BaseNet.named_modules() if is_batchnorm(m))}
    assert bn and not changed(before_g, model.BaseNet, bn)  # affine and running statistics frozen
    assert {"conv1.weight", "layer4.0.conv2.weight", "layer5.head.1.weight"} <= changed(before_g, model.BaseNet, before_g)


def test_source_only_step_trains_on_source_only_and_resumes_exactly(tmp_path):
    opt = make_opt("--stage", "src_only", "--lr", "0.01")
    model = CustomModel(opt, LOG)
    images, labels, _ = batch()
    before = snapshot(model.BaseNet)
    model.train()
    model.optimizer_zerograd()
    loss = model.source_only_step({"img": images, "label": labels})["loss_GTA"]
    model.scheduler_step()
    model.iter = 1
    assert isinstance(loss, float) and loss > 0
    params = {k for k, _ in model.BaseNet.named_parameters()}
    assert changed(before, model.BaseNet, params) == params
    assert "bn1.running_mean" in changed(before, model.BaseNet, before)

    path = str(tmp_path / "current.pkl")
    atomic_save({**reference_checkpoint(model), "resume": training_state(model)}, path)
    resumed = CustomModel(opt, LOG)
    load_training_state(resumed, torch.load(path, weights_only=True)["resume"])
    assert resumed.iter == 1 and resumed.BaseSchedule.last_epoch == 1
    assert not changed(snapshot(model.BaseNet), resumed.BaseNet, before)
    for twin in (model, resumed):  # the same next step from both: momentum and lr were restored
        torch.manual_seed(1)
        twin.optimizer_zerograd()
        twin.source_only_step({"img": images, "label": labels})
    assert not changed(snapshot(model.BaseNet), resumed.BaseNet, before)
    with pytest.raises(CheckpointError, match="stage 'stage2'"):
        load_training_state(resumed, {**training_state(model), "stage": "stage2"})


STAGE1 = ["--stage", "stage1", "--ema", "--proto_rectify", "--moving_prototype", "--rce", "--regular_w", "0.1",
          "--proto_consistW", "10", "--lr", "0.01"]


@pytest.mark.parametrize("s_pseudo", ["0", "1"])  # 1: the path that crashes in the reference
def test_stage1_step_updates_student_ema_and_prototypes(s_pseudo):
    model = CustomModel(make_opt(*STAGE1, "--S_pseudo", s_pseudo, "--proto_momentum", "0.1"), LOG)
    images, labels, params = batch()
    full = torch.randn(2, 3, 48, 48)
    lpsoft = F.softmax(torch.randn(2, N_CLASS, 32, 32) * 3, 1)
    model.objective_vectors = torch.randn(N_CLASS, 256)
    protos = model.objective_vectors.clone()
    student, ema = snapshot(model.BaseNet), snapshot(model.BaseNet_ema)
    model.train()
    model.optimizer_zerograd()
    losses = model.stage1_step({"img": images, "label": labels},
                               {"img": images, "img_strong": images.flip(3), "params": params, "lpsoft": lpsoft,
                                "img_full": full, "weak_params": weak_params()})
    assert list(losses) == ["loss", "loss_CTS", "loss_consist", "loss_reg"]
    loss, loss_cts, loss_consist, loss_reg = losses.values()
    assert np.isfinite([loss, loss_cts, loss_consist, loss_reg]).all() and loss_consist > 0
    assert abs(loss - (loss_cts + 10 * loss_consist)) < 1e-3 * loss
    assert 0 < loss_reg < loss_cts  # gamma_2 * l_reg, part of the reference's loss_CTS
    names = [k for k, _ in model.BaseNet.named_parameters()]
    assert changed(student, model.BaseNet, names) == set(names)
    now = model.BaseNet.state_dict()
    for k, v in model.BaseNet_ema.state_dict().items():  # EMA: 0.999 old + 0.001 new; buffers copied
        expected = ema[k] * 0.999 + now[k] * 0.001 if k in names else now[k]
        assert torch.allclose(v, expected, atol=1e-7), k
    updated = model.objective_vectors_num > 0
    assert updated.any() and torch.all(model.objective_vectors_num <= 2)  # at most one vector per image
    assert not torch.equal(model.objective_vectors[updated], protos[updated])
    assert torch.equal(model.objective_vectors[~updated], protos[~updated])


STAGE_FLAGS = {"warm_up": ["--S_pseudo_src", "1"], "src_only": [], "stage1": STAGE1[2:], "stage2": ["--S_pseudo", "1"]}


# src_only and stage 1 by default; the warm-up and distillation steps are also pinned by test_proda_step_golden
@pytest.mark.parametrize("stage", [s if s in ("src_only", "stage1") else pytest.param(s, marks=pytest.mark.slow)
                                   for s in sorted(STAGE_FLAGS)])
def test_stage_step_dispatches_to_the_stage_s_step(stage):
    """model.stage_step(source, target) on the loaders' batch dicts is the step its --stage names."""
    assert set(STAGE_STEPS) == set(STAGES) and STAGE_STEPS["stage3"] is STAGE_STEPS["stage2"]
    model = CustomModel(make_opt("--stage", stage, "--lr", "0.01", *STAGE_FLAGS[stage]), LOG)
    model.objective_vectors = torch.randn(N_CLASS, 256)
    images, labels, params = batch()
    full, lpsoft = torch.randn(2, 3, 48, 48), F.softmax(torch.randn(2, N_CLASS, 32, 32) * 3, 1)
    source = {"img": images, "label": labels, "img_strong": images.flip(3), "params": params}
    target = {"img": images.flip(2), "img_strong": images.flip(3), "params": params, "img_full": full,
              "weak_params": weak_params(), **({"lpsoft": lpsoft} if stage == "stage1" else {"lp": labels.clone()})}
    named = {"warm_up": lambda m: m.warm_up_step(source, target), "src_only": lambda m: m.source_only_step(source),
             "stage1": lambda m: m.stage1_step(source, target),
             "stage2": lambda m: m.distillation_step(source, target)}[stage]
    # the reference's positional forms (models/compat.py) and the losses they return, in its order
    positional = {
        "warm_up": (lambda m: m.step_adv(images, labels, target["img"], images.flip(3), params),
                    ["loss_GTA", "loss_G", "loss_D"]),
        "src_only": (lambda m: (m.step_source(images, labels, None, images.flip(3), params),), ["loss_GTA"]),
        "stage1": (lambda m: m.step(images, labels, target["img"], images.flip(3), params, None, lpsoft, full,
                                    target["weak_params"]), ["loss", "loss_CTS", "loss_consist"]),
        "stage2": (lambda m: m.step_distillation(images, labels, target["img"], images.flip(3), params,
                                                 target["lp"]), ["loss_GTA", "loss"])}[stage]
    twin, reference_twin = copy.deepcopy(model), copy.deepcopy(model)
    for m in (model, twin, reference_twin):
        m.train()
        m.optimizer_zerograd()
    torch.manual_seed(0)
    losses = model.stage_step(source, target)
    torch.manual_seed(0)
    expected = named(twin)
    torch.manual_seed(0)
    returned = positional[0](reference_twin)
    assert losses == expected and all(np.isfinite(list(losses.values())))
    assert tuple(returned) == tuple(losses[key] for key in positional[1])
    for other in (twin, reference_twin):
        assert not changed(snapshot(other.BaseNet), model.BaseNet, snapshot(other.BaseNet))
        assert torch.equal(model.objective_vectors, other.objective_vectors)


def test_stage1_without_ema_is_an_option_error_at_construction():
    with pytest.raises(OptionError, match="--proto_consistW > 0.*--ema"):
        CustomModel(make_opt("--stage", "stage1"), LOG)  # checked once, not in every step
    CustomModel(make_opt("--stage", "stage2"), LOG)  # other stages do not need the EMA network
    with pytest.raises(OptionError, match="--ema_bn together with --bn_clr"):
        CustomModel(make_opt("--stage", "stage1", "--ema", "--ema_bn"), LOG)


def test_distillation_step_trains_student_not_teacher_and_kd_forms(tmp_path):
    path, _ = saved_checkpoint(tmp_path)
    model = CustomModel(make_opt("--stage", "stage2", "--resume_path", path, "--S_pseudo", "1", "--distillation", "1",
                                 "--finetune", "--threshold", "0.95", "--lr", "0.01"), LOG)
    assert not model.teacher.training and model.best_iou == -100  # --no_resume: the student starts afresh
    images, labels, params = batch()
    lp = labels.clone()
    student, teacher = snapshot(model.BaseNet), snapshot(model.teacher)
    model.train()
    model.optimizer_zerograd()
    losses = model.distillation_step({"img": images, "label": labels},
                                     {"img": images, "img_strong": images.flip(3), "params": params, "lp": lp})
    assert list(losses) == ["loss_GTA", "loss"]
    loss_gta, loss = losses.values()
    assert np.isfinite([loss_gta, loss]).all()
    names = [k for k, _ in model.BaseNet.named_parameters()]
    assert changed(student, model.BaseNet, names) == set(names)
    assert not changed(teacher, model.teacher, teacher) and not model.teacher.training

    logits = torch.randn(2, N_CLASS, 8, 8)
    with torch.no_grad():
        t = F.softmax(F.interpolate(model.teacher(images)["out"], size=(8, 8), mode="bilinear", align_corners=True), 1)
    default = model._distillation_loss(logits, images, (8, 8))  # the reference: softmax into kl_div
    assert torch.allclose(default, (t * (t.log() - F.softmax(logits, 1))).mean(), atol=1e-6)
    model.opt = model.opt.replace(kd_log_softmax=True)
    corrected = model._distillation_loss(logits, images, (8, 8))
    assert torch.allclose(corrected, (t * (t.log() - F.log_softmax(logits, 1))).mean(), atol=1e-6)
