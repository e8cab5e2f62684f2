"""tent.tent and tent.norm: the method itself, on tiny models and tensors."""
from copy import deepcopy

import pytest
import torch
import torch.nn as nn

import tent
from tent import norm
from tent.tent import AFFINE_NORM_LAYERS, BATCH_NORM_LAYERS


def small_net() -> nn.Sequential:
    """Conv-BN-ReLU x2, pooling and a linear head: every kind of parameter tent must tell apart."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))


def trained_like(model: nn.Module) -> nn.Module:
    """Give batch norms non-trivial affine params and running stats, then eval mode (as loaded)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def batch(n: int = 8) -> torch.Tensor:
    """A small batch of images."""
    return torch.randn(n, 3, 6, 6)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean softmax entropy, written out independently of tent.softmax_entropy."""
    p = torch.softmax(logits, dim=1)
    return -(p * torch.log(p)).sum(dim=1).mean()


def tented(model: nn.Module, lr: float = 1e-2, **kwargs) -> tent.Tent:
    """The reference README's usage."""
    model = tent.configure_model(model)
    params, _ = tent.collect_params(model)
    return tent.Tent(model, torch.optim.Adam(params, lr=lr), **kwargs)


def test_readme_usage_adapts_and_returns_logits():
    model = trained_like(small_net())
    before = deepcopy(model.state_dict())
    outputs = tented(model)(batch())
    assert outputs.shape == (8, 5)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.endswith((".weight", ".bias")) and k.split(".")[0] in {"1", "4"} for k in changed)


def test_configure_model_only_batchnorm_affine_requires_grad():
    model = tent.configure_model(trained_like(small_net()))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1.weight", "1.bias", "4.weight", "4.bias"}
    assert model.training
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert not m.track_running_stats and m.running_mean is None and m.running_var is None
    params, names = tent.collect_params(model)
    assert names == ["1.weight", "1.bias", "4.weight", "4.bias"]
    assert all(p is dict(model.named_parameters())[n] for p, n in zip(params, names))


def test_configure_model_uses_batch_statistics_even_in_eval_mode():
    model = tent.configure_model(trained_like(nn.Sequential(nn.BatchNorm2d(3))))
    x = batch() * 3 + 2
    model.eval()
    bn = model[0]
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(model(x), expected)


def test_default_adapts_batchnorm2d_only_and_options_select_other_layers():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.LayerNorm(6), nn.Linear(6, 3),
                          nn.Unflatten(1, (3, 1, 1)), nn.GroupNorm(1, 3), nn.Flatten(), nn.BatchNorm1d(3))
    assert tent.collect_params(model)[1] == []  # the reference: BatchNorm2d only

    batch_norms = tent.configure_model(deepcopy(model), BATCH_NORM_LAYERS)
    assert tent.collect_params(batch_norms, BATCH_NORM_LAYERS)[1] == ["1.weight", "1.bias", "7.weight", "7.bias"]
    assert {n for n, p in batch_norms.named_parameters() if p.requires_grad} == {
        "1.weight", "1.bias", "7.weight", "7.bias"}
    assert batch_norms[1].running_mean is None and batch_norms[7].running_var is None

    affine = tent.configure_model(deepcopy(model), AFFINE_NORM_LAYERS)
    assert {n for n, p in affine.named_parameters() if p.requires_grad} == {
        "2.weight", "2.bias", "5.weight", "5.bias"}
    assert affine[1].running_mean is not None  # batch norms untouched when not selected
    tent.check_model(affine, AFFINE_NORM_LAYERS)
    out = tent.Tent(affine, torch.optim.SGD(tent.collect_params(affine, AFFINE_NORM_LAYERS)[0], lr=0.1))(
        torch.randn(5, 4))
    assert out.shape == (5, 3)


def test_one_tent_step_equals_hand_written_adam_step():
    model = trained_like(small_net())
    reference = deepcopy(model)
    x, lr = batch(), 1e-2
    outputs = tented(model, lr=lr)(x)

    # by hand: batch statistics (train mode), mean softmax entropy, gradient of the BN affine only
    reference.train()
    bn_params = [p for m in reference.modules() if isinstance(m, nn.BatchNorm2d) for p in (m.weight, m.bias)]
    logits = reference(x)
    grads = torch.autograd.grad(entropy(logits), bn_params)
    torch.testing.assert_close(outputs, logits.detach())
    adapted = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in (m.weight, m.bias)]
    for p_new, p_old, g in zip(adapted, bn_params, grads):
        # Adam's first step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps)
        torch.testing.assert_close(p_new, p_old.detach() - lr * g / (g.abs() + 1e-8))
    for (name, p_new), p_old in zip(model.named_parameters(), reference.parameters()):
        if not name.startswith(("1.", "4.")):
            assert torch.equal(p_new, p_old)


def test_one_tent_step_with_sgd_equals_hand_written_sgd_step():
    model = trained_like(small_net())
    reference = deepcopy(model).train()
    x, lr = batch(), 0.5
    model = tent.configure_model(model)
    params, _ = tent.collect_params(model)
    tent.Tent(model, torch.optim.SGD(params, lr=lr))(x)
    bn_params = [p for m in reference.modules() if isinstance(m, nn.BatchNorm2d) for p in (m.weight, m.bias)]
    grads = torch.autograd.grad(entropy(reference(x)), bn_params)
    for p_new, p_old, g in zip(params, bn_params, grads):
        torch.testing.assert_close(p_new, p_old.detach() - lr * g)
    assert all(p.grad is None or not p.grad.any() for p in params)  # zero_grad after the step


def test_softmax_entropy_matches_definition():
    logits = torch.randn(4, 7)
    torch.testing.assert_close(tent.softmax_entropy(logits).mean(), entropy(logits))
    assert torch.allclose(tent.softmax_entropy(torch.zeros(2, 4)), torch.log(torch.tensor(4.0)).expand(2))


def test_entropy_goes_down_on_a_repeated_batch():
    model = tented(trained_like(small_net()), lr=5e-2)
    x = batch(16)
    entropies = [entropy(model(x)).item() for _ in range(10)]
    assert entropies[-1] < entropies[0] - 0.05
    assert all(b < a for a, b in zip(entropies, entropies[1:]))


def test_forward_and_adapt_works_under_no_grad():
    model = tented(trained_like(small_net()))
    before = [p.clone() for p in model.optimizer.param_groups[0]["params"]]
    with torch.no_grad():
        model(batch())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.optimizer.param_groups[0]["params"]))


def test_steps_equal_repeated_single_steps():
    x = batch()
    three = tented(trained_like(small_net()), steps=3)
    one = tented(deepcopy(trained_like(small_net())), steps=1)
    torch.manual_seed(0)
    three.model.load_state_dict(one.model.state_dict())
    out_three = three(x)
    for _ in range(3):
        out_one = one(x)
    torch.testing.assert_close(out_three, out_one)
    for a, b in zip(three.model.parameters(), one.model.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError):
        tented(small_net(), steps=0)


def test_reset_restores_model_and_optimizer_exactly():
    model = tented(trained_like(small_net()))
    initial_model = deepcopy(model.model.state_dict())
    initial_opt = deepcopy(model.optimizer.state_dict())
    for _ in range(3):
        model(batch())
    assert model.optimizer.state  # Adam moments exist after updates
    model.reset()
    for k, v in model.model.state_dict().items():
        assert torch.equal(v, initial_model[k])
    assert model.optimizer.state_dict() == initial_opt
    # and the saved copy was not modified by the updates
    model(batch())
    model.reset()
    assert all(torch.equal(v, initial_model[k]) for k, v in model.model.state_dict().items())


def test_episodic_adapts_every_batch_from_the_initial_state():
    x1, x2 = batch(), batch()
    episodic = tented(trained_like(small_net()), episodic=True)
    fresh, online = deepcopy(episodic), deepcopy(episodic)
    online.episodic = False
    episodic(x1)
    out = episodic(x2)
    torch.testing.assert_close(out, fresh(x2))  # x1's update was undone before x2
    online(x1)
    assert not torch.allclose(online(x2), out)  # without episodic, x1's update persists


def test_copy_state_false_skips_the_copy_and_refuses_to_reset():
    model = tented(trained_like(small_net()), copy_state=False)
    assert model.model_state is None and model.optimizer_state is None
    model(batch())
    with pytest.raises(RuntimeError, match="copy_state=False"):
        model.reset()
    with pytest.raises(ValueError, match="episodic"):
        tented(small_net(), episodic=True, copy_state=False)


def test_check_model_accepts_configured_and_rejects_bad_models():
    tent.check_model(tent.configure_model(small_net()))
    with pytest.raises(AssertionError, match="train mode"):
        tent.check_model(tent.configure_model(small_net()).eval())
    with pytest.raises(AssertionError, match="params to update"):
        tent.check_model(small_net().train().requires_grad_(False))
    with pytest.raises(AssertionError, match="all params"):
        tent.check_model(small_net().train())
    no_bn = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)).train()
    no_bn[0].requires_grad_(False)
    with pytest.raises(AssertionError, match="normalization"):
        tent.check_model(no_bn)


def test_norm_uses_batch_statistics_and_updates_running_estimates():
    model = trained_like(nn.Sequential(nn.BatchNorm2d(3)))
    old_mean = model[0].running_mean.clone()
    x = batch() * 2 + 1
    out = norm.Norm(model, eps=1e-3, momentum=0.25)(x)
    bn = model[0]
    assert bn.eps == 1e-3 and bn.momentum == 0.25 and bn.training
    mean = x.mean(dim=(0, 2, 3))
    var = x.var(dim=(0, 2, 3), unbiased=False)
    expected = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + 1e-3)
    torch.testing.assert_close(out, expected * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    torch.testing.assert_close(bn.running_mean, 0.75 * old_mean + 0.25 * mean)


def test_norm_reset_stats_no_stats_and_reset():
    model = trained_like(nn.Sequential(nn.BatchNorm2d(3)))
    reset = norm.Norm(deepcopy(model), reset_stats=True)
    assert torch.equal(reset.model[0].running_mean, torch.zeros(3))
    assert torch.equal(reset.model[0].running_var, torch.ones(3))

    no_stats = norm.Norm(deepcopy(model), no_stats=True)
    bn = no_stats.model[0]
    assert bn.running_mean is None and not bn.track_running_stats
    no_stats.eval()  # no running statistics left, so still batch statistics
    x = batch()
    torch.testing.assert_close(no_stats(x).mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-5, rtol=0)
    assert norm.collect_stats(no_stats.model)[1] == ["0.num_batches_tracked"]  # as the reference

    online = norm.Norm(deepcopy(model))
    initial = deepcopy(online.model.state_dict())
    online(x)
    assert not torch.equal(online.model[0].running_mean, initial["0.running_mean"])
    online.reset()
    assert all(torch.equal(v, initial[k]) for k, v in online.model.state_dict().items())


def test_norm_collect_stats_and_layer_options():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(4 * 9)).eval()
    stats, names = norm.collect_stats(model)
    assert names == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert stats[0].data_ptr() == model[1].running_mean.data_ptr()  # the live buffer, not a copy
    norm.Norm(model)
    assert model[1].training and not model[3].training  # default: BatchNorm2d only
    norm.Norm(model, norm_layers=BATCH_NORM_LAYERS, copy_state=False)
    assert model[3].training
    assert len(norm.collect_stats(model, BATCH_NORM_LAYERS)[1]) == 6
    with pytest.raises(ValueError, match="batch-norm"):
        norm.Norm(model, norm_layers=(nn.GroupNorm,))
    with pytest.raises(RuntimeError, match="copy_state=False"):
        norm.Norm(model, copy_state=False).reset()
