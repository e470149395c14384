"""BYOL: its loss and gradient against the formula, the stop-gradient, the τ schedule and the EMA
after each step, resuming from a checkpoint, and the run without a momentum encoder."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from method_testing import build_method, gradients, step_context, train_steps, view_batch

from sslab.methods.base import StepContext
from sslab.methods.blocks.optim import build_optimizer, build_schedule
from sslab.methods.losses import byol_loss
from sslab.methods.siamese.byol import BYOL, BYOLConfig
from sslab.methods.views import ImageView

TOTAL = 10
SIZE = 16  # image side: small, for speed



def _byol(seed: int = 0, **config) -> BYOL:
    return build_method(BYOL, seed=seed, **({"projection_hidden_dim": 32, "projection_dim": 16} | config))


def _assert_close_to_scale(got: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Equal up to float32 rounding, relative to the largest entry (a missing stop-gradient
    changes a gradient by about its own size)."""
    error = (got - expected).abs().max().item()
    assert error <= 1e-4 * expected.abs().max().item(), f"{name}: off by {error:.3g}"


def _hand_loss(method: BYOL, batch, targets) -> torch.Tensor:
    """Eq. 2 written out on the online network, the targets given as constants."""
    z = [method.projector(method.backbone(batch[k])) for k in ("view_0", "view_1")]
    p = [method.predictor(zi) for zi in z]
    t = targets(z)
    terms = [(F.normalize(p[i], dim=1) - F.normalize(t[1 - i], dim=1)).pow(2).sum(1).mean() for i in (0, 1)]
    return terms[0] + terms[1]


def test_loss_is_two_minus_two_cos_per_row_written_out():
    gen = torch.Generator().manual_seed(0)
    p, z = torch.randn(5, 3, generator=gen, dtype=torch.float64), torch.randn(5, 3, generator=gen, dtype=torch.float64)
    by_hand = []
    for pi, zi in zip(p.tolist(), z.tolist()):
        dot = sum(a * b for a, b in zip(pi, zi))
        cos = dot / (math.sqrt(sum(a * a for a in pi)) * math.sqrt(sum(b * b for b in zi)))
        by_hand.append(2 - 2 * cos)
    assert byol_loss(p, z).item() == pytest.approx(sum(by_hand) / 5, rel=1e-12)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-12)  # scale-free: only the direction counts
    assert byol_loss(p, -p).item() == pytest.approx(4.0)  # ‖p̂ + p̂‖² = 4


def test_loss_gradient_is_the_closed_form_and_none_reaches_the_target():
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    z = torch.randn(4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    byol_loss(p, z).backward()
    assert z.grad is None  # sg(z)
    with torch.no_grad():
        p_hat, z_hat = F.normalize(p, dim=1), F.normalize(z, dim=1)
        cos = (p_hat * z_hat).sum(1, keepdim=True)
        # d/dp (2 − 2 p̂·ẑ) / B = −(2/B)(ẑ − (p̂·ẑ) p̂) / ‖p‖
        expected = -2 / len(p) * (z_hat - cos * p_hat) / p.norm(dim=1, keepdim=True)
    torch.testing.assert_close(p.grad, expected, rtol=1e-12, atol=1e-14)


def test_training_step_is_the_symmetric_loss_against_the_target_network_which_takes_no_gradient():
    method = _byol()
    batch = view_batch(BYOL.views(method.config, SIZE), size=SIZE)
    with torch.no_grad():  # move the target away from the online weights, so the two differ
        for t in method.target.ema.parameters():
            t.mul_(0.9)
    out = method.training_step(batch, step_context(0, TOTAL))
    loss, metrics = out.loss, out.metrics
    loss.backward()
    got = gradients(method)
    assert not any(n.startswith("target.") for n in got)  # no gradient reaches the target branch
    assert all(not p.requires_grad for p in method.target.parameters())
    method.zero_grad(set_to_none=True)
    with torch.no_grad():
        targets = [method.target.ema(batch[k]) for k in ("view_0", "view_1")]
    expected = _hand_loss(method, batch, lambda z: targets)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert got.keys() == gradients(method).keys()
    for name, grad in gradients(method).items():
        _assert_close_to_scale(got[name], grad, name)
    assert metrics["target_momentum"] == pytest.approx(0.996)


def test_without_a_momentum_encoder_the_targets_are_the_online_projections_under_stop_gradient():
    method = _byol(encoder_momentum=0.0)
    assert method.target is None and not any(k.startswith("target.") for k in method.state_dict())
    assert method.kept_in_sync() == []
    batch = view_batch(BYOL.views(method.config, SIZE), size=SIZE)
    captured = []

    def keep(module, args, out):  # the predictor's outputs p, keeping their gradient
        out.retain_grad()
        captured.append(out)

    method.predictor.register_forward_hook(keep)
    out = method.training_step(batch, step_context(0, TOTAL))
    loss, metrics = out.loss, out.metrics
    loss.backward()
    got = gradients(method)
    # on p: the closed form of 2 − 2cos with the other view's online projection as a constant
    with torch.no_grad():
        z = [method.project(batch[k]) for k in ("view_0", "view_1")]
    for i, p in enumerate(captured):
        p_hat, z_hat = F.normalize(p.detach(), dim=1), F.normalize(z[1 - i], dim=1)
        cos = (p_hat * z_hat).sum(1, keepdim=True)
        expected = -2 / len(p) * (z_hat - cos * p_hat) / p.detach().norm(dim=1, keepdim=True)
        torch.testing.assert_close(p.grad, expected, rtol=1e-4, atol=1e-7)
    # and on every parameter: the hand-written loss with detached targets
    method.zero_grad(set_to_none=True)
    _hand_loss(method, batch, lambda z: [zi.detach() for zi in z]).backward()
    for name, grad in gradients(method).items():
        _assert_close_to_scale(got[name], grad, name)
    # it trains, and after_step changes nothing
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    optimizer.step()
    before = copy.deepcopy(method.state_dict())
    method.after_step(batch, out, step_context(0, TOTAL))
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in before.items())
    assert metrics["target_momentum"] == 0.0


@pytest.mark.parametrize("progress, tau", [(0.0, 0.996), (0.25, 1 - 0.004 * (math.cos(math.pi / 4) + 1) / 2),
                                           (0.5, 0.998), (1.0, 1.0)])
def test_tau_rises_on_the_cosine_over_the_run(progress, tau):
    method = _byol()
    ctx = StepContext(step=round(progress * 8), total_steps=8, epoch=0)
    assert method.target.momentum(ctx.progress) == pytest.approx(tau, abs=1e-15)
    metrics = method.training_step(view_batch(BYOL.views(method.config, SIZE), size=SIZE), ctx).metrics
    assert metrics["target_momentum"] == pytest.approx(tau, abs=1e-15)
    constant = _byol(encoder_momentum=0.99, encoder_momentum_schedule="constant")
    assert constant.target.momentum(ctx.progress) == 0.99


def test_after_step_moves_the_target_by_the_ema_of_that_step():
    method = _byol()
    batch = view_batch(BYOL.views(method.config, SIZE), size=SIZE)
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.5)
    for step in range(2):
        out = method.training_step(batch, step_context(step, TOTAL))
        loss = out.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        before = {k: v.clone() for k, v in method.target.ema.state_dict().items()}
        online = {k: v.clone() for k, v in method.target._online[0].state_dict().items()}
        method.after_step(batch, out, step_context(step, TOTAL))
        tau = 1 - 0.004 * (math.cos(math.pi * step / TOTAL) + 1) / 2
        after = method.target.ema.state_dict()
        params = {n for n, _ in method.target.ema.named_parameters()}
        assert params and all(not torch.equal(before[n], after[n]) for n in params if "weight" in n)
        for name, value in after.items():
            if name in params:  # ξ ← τ ξ + (1 − τ) θ
                torch.testing.assert_close(value, tau * before[name] + (1 - tau) * online[name], rtol=0, atol=1e-6)
            else:  # BatchNorm statistics: the target's own forward passes, not the EMA
                assert torch.equal(value, before[name]), name
    assert method.kept_in_sync() == [method.target]


def _train(method: BYOL, optimizer, schedule, batches, first_step: int) -> list[torch.Tensor]:
    steps = [(batch, step_context(first_step + i, TOTAL)) for i, batch in enumerate(batches)]
    return train_steps(method, optimizer, steps, schedule)


def _optimiser(method: BYOL):
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=6)
    return optimizer, build_schedule(optimizer, TOTAL, 2)


def test_resuming_from_a_checkpoint_gives_the_uninterrupted_next_step_bit_for_bit():
    views = BYOL.views(BYOLConfig(), SIZE)
    batches = [view_batch(views, seed=s, size=SIZE) for s in range(3)]
    method = _byol(seed=0)
    optimizer, schedule = _optimiser(method)
    _train(method, optimizer, schedule, batches[:2], 0)
    saved = copy.deepcopy({"method": method.state_dict(), "optimizer": optimizer.state_dict(),
                           "schedule": schedule.state_dict()})
    assert any(k.startswith("target.ema.") for k in saved["method"])  # the target network travels
    (expected,) = _train(method, optimizer, schedule, batches[2:], 2)

    resumed = _byol(seed=123)
    resumed_optimizer, resumed_schedule = _optimiser(resumed)
    resumed.load_state_dict(saved["method"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed_schedule.load_state_dict(saved["schedule"])
    (got,) = _train(resumed, resumed_optimizer, resumed_schedule, batches[2:], 2)
    assert torch.equal(got, expected)
    state, resumed_state = method.state_dict(), resumed.state_dict()
    differ = [k for k in state if not torch.equal(state[k], resumed_state[k])]
    assert not differ, differ


def test_views_are_the_asymmetric_pair_with_blur_only_on_request():
    first, second = BYOL.views(BYOLConfig(), SIZE)
    assert (first.keys(), second.keys()) == (("view_0",), ("view_1",))
    for view in (first, second):
        assert (view.scale, view.jitter, view.jitter_prob, view.grayscale) == ((0.08, 1.0), (0.4, 0.4, 0.2, 0.1),
                                                                              0.8, 0.2)
    assert (first.blur_prob, second.blur_prob, first.solarize_prob, second.solarize_prob) == (0.0, 0.0, 0.0, 0.2)
    first, second = BYOL.views(BYOLConfig(blur=True), SIZE)
    assert (first.blur_prob, second.blur_prob) == (1.0, 0.1)


def test_heads_and_optimiser_groups():
    method = _byol()
    for head, d_in in ((method.projector, method.backbone.out_dim), (method.predictor, 16)):
        linear1, bn, _, linear2 = head
        assert (linear1.in_features, linear1.out_features, linear2.out_features) == (d_in, 32, 16)
        assert linear1.bias is None and linear2.bias is None and isinstance(bn, torch.nn.BatchNorm1d)
    weights, norms = method.parameter_groups()
    grouped = {id(p) for g in (weights, norms) for p in g["params"]}
    assert not grouped & {id(p) for p in method.target.parameters()}  # the target is not optimised
    assert norms["weight_decay"] == 0.0 and norms["lars_exclude"]
    assert method.config.optim.optimizer == "lars" and method.config.optim.learning_rate(512) == pytest.approx(0.4)


def test_invariance_pair_is_two_unit_vectors_per_image():
    method = _byol().eval()
    batch = view_batch(BYOL.invariance_views(method.config, SIZE), size=SIZE)
    assert isinstance(BYOL.invariance_views(method.config, SIZE)[0], ImageView)
    a, b = method.invariance_pair(batch)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    torch.testing.assert_close(b.norm(dim=1), torch.ones(len(b)))
    assert (a - b).norm(dim=1).min() > 0


@pytest.mark.parametrize("field, value", [("encoder_momentum", 1.0), ("encoder_momentum", -0.1),
                                          ("encoder_momentum_schedule", "linear"), ("projection_hidden_dim", 0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BYOLConfig.from_flat({field: value})
