"""VICReg: each term against its formula written out, the global batch over two workers, the
momentum variant and the configuration."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from global_batch import assert_two_workers_match_one
from method_testing import CTX, build_method, view_batch

from sslab.methods.losses import covariance_term, variance_term, vicreg_loss
from sslab.methods.siamese.vicreg import VICReg, VICRegConfig


def _columns(z: torch.Tensor) -> list[list[float]]:
    return [[float(z[b, j]) for b in range(len(z))] for j in range(z.shape[1])]


def _reference_invariance(z1: torch.Tensor, z2: torch.Tensor) -> float:
    n, d = z1.shape
    return sum((float(z1[b, j]) - float(z2[b, j])) ** 2 for b in range(n) for j in range(d)) / (n * d)


def _reference_variance(z: torch.Tensor) -> float:
    """mean_j max(0, 1 − sqrt(unbiased Var_j + 1e-4))."""
    out = []
    for column in _columns(z):
        mean = sum(column) / len(column)
        var = sum((x - mean) ** 2 for x in column) / (len(column) - 1)
        out.append(max(0.0, 1.0 - math.sqrt(var + 1e-4)))
    return sum(out) / len(out)


def _reference_covariance(z: torch.Tensor) -> float:
    """Σ_{i≠j} Cov_ij² / D, Cov with N − 1."""
    cols = _columns(z)
    n, d = len(z), len(cols)
    means = [sum(c) / n for c in cols]
    total = 0.0
    for i in range(d):
        for j in range(d):
            if i != j:
                cov = sum((cols[i][b] - means[i]) * (cols[j][b] - means[j]) for b in range(n)) / (n - 1)
                total += cov ** 2
    return total / d


def _reference_loss(z1, z2, lam=25.0, mu=25.0, nu=1.0) -> float:
    return (lam * _reference_invariance(z1, z2)
            + mu * (_reference_variance(z1) + _reference_variance(z2)) / 2
            + nu * (_reference_covariance(z1) + _reference_covariance(z2)))


def _loss_only(z1: torch.Tensor, z2: torch.Tensor, weights: tuple[float, float, float]) -> torch.Tensor:
    return vicreg_loss(z1, z2, *weights)[0]


def _embeddings(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # per-dimension scales both below and above 1, so that some variance hinges are active
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.3, 2.0, d, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)


def test_each_term_matches_its_formula_written_out():
    z1, z2 = _embeddings(6, 4, seed=0)
    assert variance_term(z1).item() == pytest.approx(_reference_variance(z1), rel=1e-12)
    assert 0 < _reference_variance(z1) < 1  # some dimensions are under the hinge, some over
    assert covariance_term(z1).item() == pytest.approx(_reference_covariance(z1), rel=1e-12)
    loss, terms = vicreg_loss(z1, z2, 25.0, 25.0, 1.0)
    assert terms["invariance"].item() == pytest.approx(_reference_invariance(z1, z2), rel=1e-12)
    assert terms["variance"].item() == pytest.approx((_reference_variance(z1) + _reference_variance(z2)) / 2, rel=1e-12)
    assert terms["covariance"].item() == pytest.approx(_reference_covariance(z1) + _reference_covariance(z2), rel=1e-12)
    assert loss.item() == pytest.approx(_reference_loss(z1, z2), rel=1e-12)
    assert vicreg_loss(z1, z2, 2.0, 3.0, 0.5)[0].item() == pytest.approx(_reference_loss(z1, z2, 2.0, 3.0, 0.5))


def test_two_workers_give_the_loss_and_gradients_of_one_worker_on_the_global_batch(tmp_path):
    z1, z2 = _embeddings(8, 5, seed=1)
    # the invariance term is each worker's own rows (the official code's MSE before the gather):
    # the workers' losses differ, their mean is one worker's loss and the gradients match (a
    # variance or covariance term on local rows would give other gradients)
    assert_two_workers_match_one(functools.partial(_loss_only, weights=(25.0, 25.0, 1.0)),
                                 {"z1": z1, "z2": z2}, tmp_path, same_value=False)


def _method(**config) -> VICReg:
    return build_method(VICReg, projection_dim=16, projection_hidden_dim=32, **config)


def test_a_step_is_the_loss_of_the_two_expander_outputs():
    method = _method()
    batch = view_batch(VICReg.views(method.config, 32))
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    with torch.no_grad():
        z1, z2 = method.project(batch["view_0"]).double(), method.project(batch["view_1"]).double()
    assert loss.item() == pytest.approx(_reference_loss(z1, z2), rel=1e-5)
    assert set(metrics) == {"loss", "invariance", "variance", "covariance"}
    assert method.kept_in_sync() == [] and method.target is None


def test_the_momentum_variant_pairs_each_view_with_the_targets_other_view():
    method = _method(encoder_momentum=0.99)
    batch = view_batch(VICReg.views(method.config, 32))
    loss = method.training_step(batch, CTX).loss
    with torch.no_grad():
        z = {k: method.project(batch[k]).double() for k in ("view_0", "view_1")}
        t = {k: method.target(batch[k]).double() for k in ("view_0", "view_1")}
    expected = (_reference_loss(z["view_0"], t["view_1"]) + _reference_loss(z["view_1"], t["view_0"])) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is None for p in method.target.parameters())
    assert method.kept_in_sync() == [method.target]


def test_defaults_are_the_official_weights_and_lars():
    config = VICRegConfig()
    assert (config.invariance_weight, config.variance_weight, config.covariance_weight) == (25.0, 25.0, 1.0)
    assert (config.optim.optimizer, config.optim.base_lr, config.optim.weight_decay, config.optim.warmup_epochs) == ("lars", 0.2, 1e-6, 10)
    assert config.optim.exclude_norm_and_bias and config.encoder_momentum == 0.0


@pytest.mark.parametrize("field, value", [("invariance_weight", -1.0), ("variance_weight", math.nan),
                                          ("covariance_weight", "1"), ("encoder_momentum", -0.1),
                                          ("projection_layers", 0)])
def test_bad_settings_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        VICRegConfig.from_flat({field: value})
