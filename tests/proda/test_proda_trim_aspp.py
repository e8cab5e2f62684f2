"""--trim_aspp: ASPP's dilated convs leave out the taps that read only zero padding on feature maps
smaller than their dilation (the CPU demo's 96x48 crops give 7x13 maps, where dilations 12-24
reach nothing). Same function and gradients up to rounding; bit-identical where it does not trigger.
"""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from proda.models.deeplabv2 import ASPP_DILATIONS, Classifier_Module2, Deeplab, conv_on_map
from proda.options import parse_opt
from proda.models.builders import build_student, build_teacher
from proda.models.ema import build_ema


def pair(seed=0):
    """ProDA's head on 64 input channels and its trimmed twin with the same weights."""
    torch.manual_seed(seed)
    full = Classifier_Module2(64, ASPP_DILATIONS, ASPP_DILATIONS, 5)
    trimmed = copy.deepcopy(full)
    trimmed.trim_taps = True
    return full, trimmed


def loss_and_grads(head, features, labels):
    """Cross-entropy of the head's logits, and every parameter's gradient (same dropout draws)."""
    head.zero_grad()
    torch.manual_seed(3)
    loss = F.cross_entropy(head(features, get_feat=True)["out"], labels)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in head.named_parameters()}


@pytest.mark.parametrize("size", [(7, 13), (5, 7), (9, 6), (13, 19)])  # 1/8 of 48x96 (the demo's crop) ...
def test_trimmed_head_computes_the_same_loss_and_gradients(size):
    full, trimmed = pair()
    torch.manual_seed(1)
    features, labels = torch.randn(2, 64, *size), torch.randint(0, 5, (2, *size))
    loss_f, grads_f = loss_and_grads(full, features, labels)
    loss_t, grads_t = loss_and_grads(trimmed, features, labels)
    assert abs(loss_f - loss_t) <= 1e-6
    for key in grads_f:
        assert torch.allclose(grads_f[key], grads_t[key], rtol=1e-4, atol=1e-6), key
    # the taps outside the map get no gradient, in the full convolution as in the trimmed one
    conv = full.conv2d_list[4][0]  # dilation 24, larger than every map above
    for grads in (grads_f, grads_t):
        g = grads["conv2d_list.4.0.weight"]
        assert g[:, :, 1, 1].abs().sum() > 0
        outer = g.clone()
        outer[:, :, 1, 1] = 0
        assert torch.count_nonzero(outer) == 0, conv


def test_only_the_taps_that_miss_the_map_are_left_out():
    conv = nn.Conv2d(4, 3, 3, padding=12, dilation=12)
    x = torch.randn(1, 4, 7, 13)  # 12 >= 7 rows: one kernel row; 12 < 13 columns: all three
    with torch.no_grad():
        assert torch.allclose(conv_on_map(conv, x), conv(x), atol=1e-6)
        wide = torch.randn(1, 4, 13, 13)
        assert torch.equal(conv_on_map(conv, wide), conv(wide))  # nothing to trim: the same call


def test_maps_larger_than_every_dilation_are_bit_identical():
    full, trimmed = pair()
    torch.manual_seed(2)
    features, labels = torch.randn(1, 64, 25, 26), torch.randint(0, 5, (1, 25, 26))
    loss_f, grads_f = loss_and_grads(full, features, labels)
    loss_t, grads_t = loss_and_grads(trimmed, features, labels)
    assert torch.equal(loss_f, loss_t)
    assert all(torch.equal(grads_f[k], grads_t[k]) for k in grads_f)


def test_a_whole_network_on_the_demo_crop_gives_the_same_logits():
    torch.manual_seed(0)
    full = Deeplab(nn.BatchNorm2d, num_classes=5, init="random", layers=[1, 1, 1, 1]).eval()
    images = torch.randn(1, 3, 48, 96)
    with torch.no_grad():
        logits = full(images)["out"]
        full.layer5.trim_taps = True
        assert torch.allclose(full(images)["out"], logits, atol=1e-5)


def test_off_by_default_and_given_to_every_network_of_a_run(tmp_path):
    assert Deeplab(nn.BatchNorm2d, num_classes=5, init="random", layers=[1, 1, 1, 1]).layer5.trim_taps is False
    flags = ["--student_init", "random", "--backbone_layers", "1,1,1,1", "--no_resume", "--device", "cpu",
             "--root", str(tmp_path), "--n_class", "13"]
    assert parse_opt(flags).trim_aspp is False
    opt = parse_opt(flags + ["--trim_aspp"])
    student = build_student(opt)
    torch.save({"ResNet101": {"model_state": student.state_dict()}}, tmp_path / "teacher.pkl")
    teacher_opt = parse_opt(flags + ["--trim_aspp", "--resume_path", str(tmp_path / "teacher.pkl")])
    teacher = build_teacher(teacher_opt, nn.BatchNorm2d, torch.device("cpu"))
    ema = build_ema(opt, student, nn.BatchNorm2d, torch.device("cpu"))
    assert student.layer5.trim_taps and teacher.layer5.trim_taps and ema.layer5.trim_taps
