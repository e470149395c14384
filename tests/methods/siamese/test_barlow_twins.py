"""Barlow Twins: C and the loss against loops, the global batch over two workers, the momentum variant."""

from __future__ import annotations

import copy
import functools
import math

import pytest
import torch
from global_batch import assert_two_workers_match_one
from method_testing import build_method, step_context, train_steps, view_batch

from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.momentum import cosine_momentum
from sslab.methods.blocks.optim import build_optimizer
from sslab.methods.losses import barlow_twins_loss, cross_correlation
from sslab.methods.siamese.barlow_twins import BarlowTwins, BarlowTwinsConfig
from sslab.methods.views import Augmented, ImageView

LAMBDA = 0.0051


def _reference_c(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> list[list[float]]:
    """C_ij = Σ_b ẑ1_bi ẑ2_bj / N, ẑ = (z − mean) / sqrt(biased var + ε), written out with loops."""
    n, d = len(z1), z1.shape[1]

    def standardise(z):
        out = [[0.0] * d for _ in range(n)]
        for j in range(d):
            column = [float(z[b, j]) for b in range(n)]
            mean = sum(column) / n
            var = sum((x - mean) ** 2 for x in column) / n
            for b in range(n):
                out[b][j] = (column[b] - mean) / math.sqrt(var + eps)
        return out

    a, b = standardise(z1), standardise(z2)
    return [[sum(a[k][i] * b[k][j] for k in range(n)) / n for j in range(d)] for i in range(d)]


def _reference_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> float:
    c = _reference_c(z1, z2)
    d = len(c)
    return (sum((1 - c[i][i]) ** 2 for i in range(d))
            + lambd * sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j))


def _loss_only(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    return barlow_twins_loss(z1, z2, lambd)[0]


def _method(**config) -> BarlowTwins:
    return build_method(BarlowTwins, projection_dim=16, projection_hidden_dim=32, **config)


def test_cross_correlation_and_loss_match_the_formula_written_out_with_loops():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(6, 4, generator=g, dtype=torch.float64) * 3 + 1
    z2 = z1 + torch.randn(6, 4, generator=g, dtype=torch.float64)
    c = cross_correlation(z1, z2)
    torch.testing.assert_close(c, torch.tensor(_reference_c(z1, z2), dtype=torch.float64), rtol=1e-12, atol=1e-12)
    loss, terms = barlow_twins_loss(z1, z2, LAMBDA)
    assert loss.item() == pytest.approx(_reference_loss(z1, z2, LAMBDA), rel=1e-12)
    assert loss.item() == pytest.approx(terms["on_diagonal"].item() + LAMBDA * terms["off_diagonal"].item(), rel=1e-12)
    # identical standardised views give C_ii = 1 up to ε: the invariance term vanishes
    assert barlow_twins_loss(z1, z1.clone(), 0.0)[0].item() == pytest.approx(0.0, abs=1e-6)


def test_two_workers_give_the_loss_and_gradients_of_one_worker_on_the_global_batch(tmp_path):
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(8, 5, generator=g, dtype=torch.float64)
    z2 = 0.5 * z1 + torch.randn(8, 5, generator=g, dtype=torch.float64)
    # the statistics and C span every worker's rows: the loss is the same on every worker
    assert_two_workers_match_one(functools.partial(_loss_only, lambd=0.1), {"z1": z1, "z2": z2}, tmp_path,
                                 same_value=True)


def test_a_step_without_momentum_encoder_is_the_loss_of_the_two_projections_with_gradient_through_both():
    method = _method()
    assert method.target is None and method.kept_in_sync() == []
    assert not any(k.startswith("target.") for k in method.state_dict())
    batch = view_batch(BarlowTwins.views(method.config, 32))
    out = method.training_step(batch, step_context(0))
    loss, metrics = out.loss, out.metrics
    with torch.no_grad():
        z1, z2 = method.project(batch["view_0"]).double(), method.project(batch["view_1"]).double()
    assert loss.item() == pytest.approx(_reference_loss(z1, z2, LAMBDA), rel=1e-5)
    assert set(metrics) == {"loss", "on_diagonal", "off_diagonal"}
    assert all(not v.requires_grad and v.dim() == 0 for v in metrics.values())
    # both branches carry the gradient: it differs from the one through view 0 alone
    loss.backward()
    both = method.projector[0].weight.grad.clone()
    method.zero_grad()
    z1 = method.project(batch["view_0"])
    with torch.no_grad():
        z2 = method.project(batch["view_1"])
    barlow_twins_loss(z1, z2, LAMBDA)[0].backward()
    assert not torch.allclose(both, method.projector[0].weight.grad)


def test_the_momentum_target_is_symmetrised_gets_no_gradient_and_moves_by_its_ema():
    method = _method(encoder_momentum=0.9)
    assert method.target is not None and method.kept_in_sync() == [method.target]
    ema = method.target.ema
    batch = view_batch(BarlowTwins.views(method.config, 32))
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=6)
    out = method.training_step(batch, step_context(3))
    loss = out.loss
    with torch.no_grad():
        z = {k: method.project(batch[k]).double() for k in ("view_0", "view_1")}
        t = {k: ema(batch[k]).double() for k in ("view_0", "view_1")}
    expected = (_reference_loss(z["view_0"], t["view_1"], LAMBDA) + _reference_loss(z["view_1"], t["view_0"], LAMBDA)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)

    optimizer.zero_grad()
    loss.backward()
    assert all(not p.requires_grad and p.grad is None for p in ema.parameters())
    assert all(p.grad is not None for p in method.parameters() if p.requires_grad)
    assert not any(p is q for p in ema.parameters() for q in optimizer.param_groups[0]["params"])
    optimizer.step()
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    method.after_step(batch, out, step_context(3))
    m = cosine_momentum(0.9, 0.3)
    online = dict(torch.nn.Sequential(method.backbone, method.projector).named_parameters())
    for name, p in ema.named_parameters():
        torch.testing.assert_close(p, m * before[name] + (1 - m) * online[name], rtol=1e-6, atol=1e-7)
    for name, buffer in ema.named_buffers():  # BatchNorm statistics: the target's own forward only
        assert torch.equal(buffer, before[name])


def test_a_resumed_run_with_a_momentum_encoder_takes_the_uninterrupted_runs_next_step():
    def train(method, optimizer, steps):
        return train_steps(method, optimizer, [(view_batch(BarlowTwins.views(method.config, 32), seed=step),
                                                step_context(step)) for step in steps])[-1]

    first = _method(encoder_momentum=0.99, encoder_momentum_schedule="constant")
    optimizer = build_optimizer(first.parameter_groups(), first.config.optim, global_batch=6)
    train(first, optimizer, range(2))
    saved = {k: v.clone() for k, v in first.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # its tensors are the live momentum buffers
    expected = train(first, optimizer, [2])

    torch.manual_seed(123)
    second = BarlowTwins(first.config, Backbone("resnet10", width=4))
    second.load_state_dict(saved)
    second_optimizer = build_optimizer(second.parameter_groups(), second.config.optim, global_batch=6)
    second_optimizer.load_state_dict(saved_optimizer)
    got = train(second, second_optimizer, [2])
    assert got.item() == expected.item()
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_views_are_byols_asymmetric_pair_and_invariance_uses_the_first():
    config = BarlowTwinsConfig()
    first, second = BarlowTwins.views(config, 32)
    assert (first.keys(), second.keys()) == (("view_0",), ("view_1",))
    for view in (first, second):
        assert (view.scale, view.jitter, view.jitter_prob, view.grayscale) == ((0.08, 1.0), (0.4, 0.4, 0.2, 0.1), 0.8, 0.2)
    assert (first.blur_prob, first.solarize_prob, second.blur_prob, second.solarize_prob) == (1.0, 0.0, 0.1, 0.2)
    clean, transformed = BarlowTwins.invariance_views(config, 32)
    assert isinstance(clean, ImageView) and isinstance(transformed, Augmented)
    method = _method().eval()
    a, b = method.invariance_pair(view_batch([clean, transformed]))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    assert (a - b).norm(dim=1).min() > 0


@pytest.mark.parametrize("field, value", [("off_diagonal_weight", -0.1), ("encoder_momentum", 1.0),
                                          ("encoder_momentum_schedule", "linear"), ("projection_dim", 0),
                                          ("blur_prob_2", 1.5)])
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BarlowTwinsConfig.from_flat({field: value})


def test_the_loss_refuses_mismatched_embeddings():
    with pytest.raises(ValueError, match="same shape"):
        barlow_twins_loss(torch.zeros(4, 3), torch.zeros(4, 2), LAMBDA)
