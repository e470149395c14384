"""SimSiam: its loss and gradient against the formula, the stop-gradient, the predictor's fixed
learning rate, the heads, and the variant with a momentum encoder."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from method_testing import build_method, gradients, step_context, view_batch

from sslab.methods.blocks.optim import build_optimizer, build_schedule
from sslab.methods.losses import simsiam_loss
from sslab.methods.siamese.simsiam import SimSiam, SimSiamConfig

TOTAL = 10
SIZE = 16  # image side: small, for speed



def _simsiam(seed: int = 0, **config) -> SimSiam:
    config = {"projection_hidden_dim": 32, "projection_dim": 16, "prediction_hidden_dim": 8} | config
    return build_method(SimSiam, seed=seed, **config)


def _assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Equal up to float32 rounding, relative to the largest entry."""
    error = (got - expected).abs().max().item()
    assert error <= 1e-4 * expected.abs().max().item(), f"{name}: off by {error:.3g}"


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_loss_is_minus_half_the_two_cosines_written_out():
    gen = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(5, 4, generator=gen, dtype=torch.float64) for _ in range(4))
    by_hand = sum(-0.5 * _cos(a, b) - 0.5 * _cos(c, d)
                  for a, b, c, d in zip(p1.tolist(), z2.tolist(), p2.tolist(), z1.tolist())) / 5
    assert simsiam_loss(p1, p2, z1, z2).item() == pytest.approx(by_hand, rel=1e-12)
    assert simsiam_loss(z2, z1, z1, z2).item() == pytest.approx(-1.0)  # perfect predictions: the minimum


def test_loss_gradient_is_the_closed_form_and_none_reaches_z():
    gen = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(4))
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None  # sg(z)
    for p, z in ((p1, z2), (p2, z1)):
        with torch.no_grad():
            p_hat, z_hat = F.normalize(p, dim=1), F.normalize(z, dim=1)
            cos = (p_hat * z_hat).sum(1, keepdim=True)
            # d/dp (−½ p̂·ẑ) / B = −(ẑ − (p̂·ẑ) p̂) / (2 B ‖p‖)
            expected = -(z_hat - cos * p_hat) / (2 * len(p) * p.norm(dim=1, keepdim=True))
        torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-14)


def test_training_step_stops_the_gradient_at_z():
    method = _simsiam()
    assert method.target is None and method.kept_in_sync() == []
    batch = view_batch(SimSiam.views(method.config, SIZE), size=SIZE)
    out = method.training_step(batch, step_context(0, TOTAL))
    loss, metrics = out.loss, out.metrics
    loss.backward()
    got = gradients(method)
    method.zero_grad(set_to_none=True)
    z1, z2 = method.project(batch["view_0"]), method.project(batch["view_1"])
    p1, p2 = method.predictor(z1), method.predictor(z2)
    expected = -(F.cosine_similarity(p1, z2.detach()).mean() + F.cosine_similarity(p2, z1.detach()).mean()) / 2
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.keys() == gradients(method).keys() == {n for n, p in method.named_parameters()}
    for name, grad in gradients(method).items():
        _assert_close_to_scale(got[name], grad, name)
    z = F.normalize(z1.detach(), dim=1)
    assert metrics["z_std"].item() == pytest.approx(z.std(dim=0).mean().item(), rel=1e-5)


def test_the_predictor_keeps_its_learning_rate_while_the_rest_decays():
    method = _simsiam()
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=512)
    schedule = build_schedule(optimizer, TOTAL, 0)
    names = [g["name"] for g in optimizer.param_groups]
    assert names == ["all", "predictor_all"]
    rest, predictor = optimizer.param_groups
    assert {id(p) for p in predictor["params"]} == {id(p) for p in method.predictor.parameters()}
    assert predictor["weight_decay"] == rest["weight_decay"] == 1e-4  # official: decay on every parameter
    for step in range(TOTAL):
        assert predictor["lr"] == pytest.approx(0.1)  # 0.05 × 512 / 256, never scheduled
        assert rest["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * step / TOTAL)) / 2)
        optimizer.step()
        schedule.step()
    unfixed = build_optimizer(_simsiam(fix_predictor_lr=False).parameter_groups(), method.config.optim, 512)
    assert [g["name"] for g in unfixed.param_groups] == ["all"]


def test_fixed_predictor_groups_keep_the_norm_and_bias_exclusion():
    method = _simsiam(exclude_norm_and_bias=True)
    groups = {g["name"]: g for g in method.parameter_groups()}
    assert set(groups) == {"weights", "norm_and_bias", "predictor_weights", "predictor_norm_and_bias"}
    assert groups["predictor_norm_and_bias"]["weight_decay"] == 0.0 and groups["predictor_norm_and_bias"]["fixed_lr"]
    assert "fixed_lr" not in groups["norm_and_bias"]
    grouped = [p for g in groups.values() for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(method.parameters()))


def test_heads_are_the_official_projector_and_bottleneck_predictor():
    method = _simsiam()
    layers = [type(m).__name__ for m in method.projector]
    assert layers == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert not method.projector[-1].affine and method.projector[-2].bias is None
    first, _, _, last = method.predictor
    assert (first.in_features, first.out_features, last.out_features) == (16, 8, 16)
    assert first.bias is None and last.bias is not None
    two = _simsiam(projection_layers=2)  # the paper's CIFAR variant
    assert [type(m).__name__ for m in two.projector] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]


def test_with_a_momentum_encoder_z_comes_from_the_ema_copy_which_moves_after_each_step():
    method = _simsiam(encoder_momentum=0.9)
    assert method.kept_in_sync() == [method.target]
    batch = view_batch(SimSiam.views(method.config, SIZE), size=SIZE)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    out = method.training_step(batch, step_context(0, TOTAL))
    loss = out.loss
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in method.target.parameters())
    optimizer.step()
    # after the step the online network has moved, so the target's z now differ from the online z
    before = {n: p.clone() for n, p in method.target.ema.named_parameters()}
    online = dict(method.target._online[0].named_parameters())
    method.after_step(batch, out, step_context(5, TOTAL))
    tau = 1 - 0.1 * (math.cos(math.pi * 5 / TOTAL) + 1) / 2
    for name, value in method.target.ema.named_parameters():
        torch.testing.assert_close(value, tau * before[name] + (1 - tau) * online[name], rtol=0, atol=1e-6)
    loss = method.training_step(batch, step_context(1, TOTAL)).loss
    with torch.no_grad():
        z1, z2 = method.target.ema(batch["view_0"]), method.target.ema(batch["view_1"])
        p1 = method.predictor(method.project(batch["view_0"]))
        p2 = method.predictor(method.project(batch["view_1"]))
        online_z = method.project(batch["view_0"])
    assert loss.item() == pytest.approx(simsiam_loss(p1, p2, z1, z2).item(), rel=1e-5)
    assert (online_z - z1).abs().max() > 1e-3  # not vacuous: the momentum encoder's z differ


def test_without_a_momentum_encoder_the_target_branch_is_the_online_network_under_stop_gradient():
    method = _simsiam()
    assert method.target is None and not any(k.startswith("target.") for k in method.state_dict())
    x = view_batch(SimSiam.views(method.config, SIZE), size=SIZE)["view_0"]
    out = method.target_projection(x)
    assert not out.requires_grad
    assert torch.allclose(out, method.projector(method.backbone(x)))
    for progress in (0.0, 0.5, 1.0):  # a constant 0, not a cosine climbing to 1
        assert method.target_momentum(progress) == 0.0
    with torch.no_grad():
        method.projector[0].weight.add_(1.0)
    method.after_step({}, None, step_context(5, TOTAL))  # nothing to move: the target is the online network
    assert torch.allclose(method.target_projection(x), method.projector(method.backbone(x)))


def test_without_a_momentum_encoder_a_step_trains_and_after_step_changes_nothing():
    method = _simsiam()
    batch = view_batch(SimSiam.views(method.config, SIZE), size=SIZE)
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=6)
    out = method.training_step(batch, step_context(0, TOTAL))
    loss = out.loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    before = copy.deepcopy(method.state_dict())
    method.after_step(batch, out, step_context(0, TOTAL))
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in before.items())


def test_views_are_two_draws_of_the_moco_v2_recipe():
    (view,) = SimSiam.views(SimSiamConfig(), 32)
    assert view.keys() == ("view_0", "view_1")
    assert (view.scale, view.jitter, view.jitter_prob, view.grayscale, view.blur_prob) == (
        (0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.0)
    assert SimSiam.views(SimSiamConfig(blur_prob=0.5), 32)[0].blur_prob == 0.5


def test_invariance_pair_is_two_unit_vectors_per_image():
    method = _simsiam().eval()
    a, b = method.invariance_pair(view_batch(SimSiam.invariance_views(method.config, SIZE), 4, size=SIZE))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    assert (a - b).norm(dim=1).min() > 0


@pytest.mark.parametrize("field, value", [("encoder_momentum", 1.0), ("projection_layers", 0),
                                          ("prediction_hidden_dim", 0), ("fix_predictor_lr", "yes")])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SimSiamConfig.from_flat({field: value})
