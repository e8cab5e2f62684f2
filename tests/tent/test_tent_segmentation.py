"""Tent on dense outputs: the entropy over every pixel, masks, episodic resets on images."""
import copy

import pytest
import torch
import torch.nn as nn

import tent
from tent.tent import entropy_loss, softmax_entropy


def tiny_segmenter(n_class: int = 5) -> nn.Module:
    """A fully convolutional net: logits N x n_class x H x W, with a batch norm to adapt."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, n_class, 1))


def tented(model: nn.Module, lr: float = 1e-2, **kw) -> tent.Tent:
    """The reference usage on any model."""
    model = tent.configure_model(model)
    params, _ = tent.collect_params(model)
    return tent.Tent(model, torch.optim.Adam(params, lr=lr), **kw)


def test_classifier_loss_is_the_reference_expression_bit_for_bit():
    logits = torch.randn(7, 10, generator=torch.Generator().manual_seed(1))
    assert torch.equal(entropy_loss(logits), softmax_entropy(logits).mean(0))


def test_dense_loss_averages_every_pixel_of_every_image():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(2))
    p = logits.softmax(1)
    by_hand = -(p * p.log()).sum(1)                 # 2 x 3 x 5 pixel entropies
    torch.testing.assert_close(entropy_loss(logits), by_hand.sum() / by_hand.numel())


def test_mask_keeps_only_the_true_pixels():
    logits = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(2, 3, 5, dtype=torch.bool)
    mask[0, 1, 2] = mask[1, 0, 4] = True
    ent = softmax_entropy(logits)
    torch.testing.assert_close(entropy_loss(logits, mask), (ent[0, 1, 2] + ent[1, 0, 4]) / 2)
    assert entropy_loss(logits, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="does not match"):
        entropy_loss(logits, mask[:, :2])


def test_one_step_equals_a_hand_written_pixel_entropy_step():
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(4))
    model = tented(tiny_segmenter())
    by_hand = copy.deepcopy(model.model)
    params = [by_hand[1].weight, by_hand[1].bias]
    opt = torch.optim.Adam(params, lr=1e-2)

    model(x)
    p = by_hand(x).softmax(1)
    loss = -(p * p.log()).sum(1).mean()
    loss.backward()
    opt.step()
    for a, b in zip(tent.collect_params(model.model)[0], params):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    assert not torch.equal(params[0], tiny_segmenter()[1].weight)   # the step moved the scale


def test_mask_reaches_the_update():
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    nothing = tented(tiny_segmenter())
    before = [p.clone() for p in tent.collect_params(nothing.model)[0]]
    nothing(x, mask=torch.zeros(1, 4, 4, dtype=torch.bool))
    # Adam with a zero gradient keeps the parameters
    for a, b in zip(before, tent.collect_params(nothing.model)[0]):
        assert torch.equal(a, b)


def test_episodic_restores_the_model_exactly_between_images():
    images = torch.randn(3, 1, 3, 6, 6, generator=torch.Generator().manual_seed(6))
    episodic = tented(tiny_segmenter(), episodic=True, steps=2)
    first = episodic(images[0])
    episodic(images[1])
    torch.testing.assert_close(episodic(images[0]), first, rtol=0, atol=0)
    online = tented(tiny_segmenter(), steps=2)
    online(images[0])
    online(images[1])
    assert not torch.equal(online(images[0]), first)
