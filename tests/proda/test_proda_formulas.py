"""ProDA's prototype formulas against the paper's equations, written out independently here.

The paper (Zhang et al., CVPR 2021) weights class k of a pixel with feature f by
omega_k = exp(-||f - eta_k|| / tau) / sum_k' exp(-||f - eta_k'|| / tau), rectifies the soft
pseudo label p as y_hat = argmax_k(omega_k * p_k), and aligns the soft prototypical assignments
z = softmax(-d / tau) of two views with KL(z_teacher || z_student). The official code
(microsoft/ProDA) multiplies the distance by `proto_temperature` (= 1 / tau), ignores pixels whose
renormalised rectified probability is below `train_thred`, and averages the KL over every
(class, pixel) element inside the strong view, i.e. the per-pixel KL divided by the number of
classes. The numbers below are computed by hand or by the textbook formula on tiny tensors, so a
swapped sign, a divided temperature or a swapped KL direction fails.
"""
import math

import torch

from proda.models.losses import prototype_consistency
from proda.models.prototypes import rectification_weights, rectify_pseudo_labels
from proda.utils import IGNORE_INDEX


def distances(*per_class):
    """A 1 x K x 1 x P distance map from K lists of P per-pixel distances."""
    return torch.tensor(per_class, dtype=torch.float32).unsqueeze(0).unsqueeze(2)


def test_rectification_weights_are_a_softmax_of_negative_distance_over_tau():
    d = distances([1.0, 0.5], [2.0, 0.5], [3.0, 4.0])  # 3 classes, 2 pixels
    for proto_temperature in (1.0, 2.0, 0.5):  # the option is 1 / tau
        weights = rectification_weights(d, proto_temperature)
        for pixel in range(2):
            exps = [math.exp(-d[0, k, 0, pixel].item() * proto_temperature) for k in range(3)]
            expected = torch.tensor([e / sum(exps) for e in exps])
            assert torch.allclose(weights[0, :, 0, pixel], expected, atol=1e-6)
    # by hand, tau = 1, first pixel: e^-1, e^-2, e^-3 normalised
    assert torch.allclose(rectification_weights(d, 1.0)[0, :, 0, 0], torch.tensor([0.66524, 0.24473, 0.09003]),
                          atol=1e-5)
    # the nearest prototype weighs most; a larger 1 / tau concentrates the weight on it
    assert rectification_weights(d, 1.0)[0, :, 0, 0].argmax() == 0
    assert rectification_weights(d, 2.0)[0, 0, 0, 0] > rectification_weights(d, 1.0)[0, 0, 0, 0]
    # equidistant classes share the weight equally
    assert torch.allclose(rectification_weights(d, 3.0)[0, 0, 0, 1], rectification_weights(d, 3.0)[0, 1, 0, 1])


def test_rectification_weights_do_not_underflow_far_from_every_prototype():
    # the reference subtracts the nearest distance first: exp(-1000) alone would give 0 / 0
    weights = rectification_weights(distances([1000.0], [1001.0]), 1.0)
    assert torch.allclose(weights[0, :, 0, 0], torch.tensor([1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))]))


def test_rectified_label_is_the_argmax_of_weight_times_soft_label():
    # pixel 0: the soft label says class 0 (0.6 vs 0.4), the prototypes say class 1 (0.8 vs 0.2):
    # omega * p = (0.12, 0.32), so class 1, renormalised confidence 0.32 / 0.44 = 0.727
    # pixel 1: both agree on class 0: omega * p = (0.63, 0.03), confidence 0.955
    soft = distances([0.6, 0.9], [0.4, 0.1])
    weights = distances([0.2, 0.7], [0.8, 0.3])
    labels = rectify_pseudo_labels(soft, weights, threshold=0.0)
    assert labels.shape == (1, 1, 1, 2) and labels.dtype == torch.long
    assert labels.flatten().tolist() == [1, 0]
    assert soft.argmax(1).flatten().tolist() == [0, 0]  # the denoising changed pixel 0's label
    # the renormalised maximum decides what is ignored (the reference's --train_thred)
    assert rectify_pseudo_labels(soft, weights, 0.7).flatten().tolist() == [1, 0]
    assert rectify_pseudo_labels(soft, weights, 0.75).flatten().tolist() == [IGNORE_INDEX, 0]
    assert rectify_pseudo_labels(soft, weights, 0.96).flatten().tolist() == [IGNORE_INDEX, IGNORE_INDEX]


def test_prototype_consistency_is_kl_teacher_to_student_averaged_over_class_elements():
    g = torch.Generator().manual_seed(0)
    k, proto_temperature = 4, 2.0
    teacher_d = torch.rand(1, k, 2, 3, generator=g) * 5
    student_d = torch.rand(1, k, 2, 3, generator=g) * 5
    teacher_d[0, :, 1, 2] = IGNORE_INDEX  # a pixel outside the strong view: it does not count
    loss = prototype_consistency(teacher_d, student_d, proto_temperature)

    total, pixels = 0.0, 0
    for y in range(2):
        for x in range(3):
            if (y, x) == (1, 2):
                continue
            t = torch.softmax(-teacher_d[0, :, y, x].double() * proto_temperature, 0)
            s = torch.softmax(-student_d[0, :, y, x].double() * proto_temperature, 0)
            total += float((t * (t / s).log()).sum())  # KL(z_teacher || z_student) of one pixel
            pixels += 1
    expected = total / (pixels * k)  # the reference's mean over (class, pixel) elements
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    # KL is not symmetric: with teacher and student swapped the loss is another number
    inside = teacher_d.masked_fill(teacher_d == IGNORE_INDEX, 1.0)
    assert not math.isclose(prototype_consistency(student_d, inside, proto_temperature).item(),
                            prototype_consistency(inside, student_d, proto_temperature).item(), rel_tol=1e-3)
    # identical assignments agree exactly: no loss
    assert prototype_consistency(student_d, student_d, proto_temperature).abs().item() < 1e-7


def test_prototype_consistency_gradient_pulls_the_student_towards_the_teacher():
    teacher_d = distances([0.0], [3.0])  # the teacher is sure of class 0
    student_d = distances([2.0], [1.0]).requires_grad_()  # the student leans to class 1
    prototype_consistency(teacher_d, student_d, 1.0).backward()
    # descending the gradient brings the student nearer to prototype 0 and away from prototype 1
    assert student_d.grad[0, 0, 0, 0] > 0 and student_d.grad[0, 1, 0, 0] < 0
