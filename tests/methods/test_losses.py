"""Losses against hand-written per-sample formulas (PIRL eq. 3-4, NPID, InfoNCE)."""

import math

import pytest
import torch

from sslab.methods.losses import estimate_log_z, info_nce_loss, nce_loss


def _sims(batch=5, negatives=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.rand(batch, generator=g, dtype=torch.float64) * 2 - 1,
        torch.rand(batch, negatives, generator=g, dtype=torch.float64) * 2 - 1,
    )


def nce_reference(pos, neg, tau, data_size, log_z):
    """PIRL eq. 3-4 written out one sample and one negative at a time."""
    z = math.exp(log_z)
    noise = len(neg[0]) / data_size  # N / |D|

    def h(s):
        e = math.exp(s / tau) / z
        return e / (e + noise)

    losses = []
    for p, ns in zip(pos, neg):
        losses.append(-math.log(h(p)) - sum(math.log(1 - h(s)) for s in ns))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("tau,data_size,log_z", [(0.07, 1000, 9.0), (0.5, 50, 2.5), (1.0, 10_000, 0.0)])
def test_nce_loss_matches_formula(tau, data_size, log_z):
    pos, neg = _sims()
    expected = nce_reference(pos.tolist(), neg.tolist(), tau, data_size, log_z)
    assert nce_loss(pos, neg, tau, data_size, log_z).item() == pytest.approx(expected, rel=1e-9)
    # (B, 1) positives and a tensor log Z give the same value
    got = nce_loss(pos[:, None], neg, tau, data_size, torch.tensor(log_z, dtype=torch.float64))
    assert got.item() == pytest.approx(expected, rel=1e-9)


def test_nce_loss_is_stable_where_the_naive_formula_overflows():
    pos = torch.ones(4, requires_grad=True)
    neg = torch.full((4, 3), -1.0, requires_grad=True)
    loss = nce_loss(pos, neg, 0.001, 100, 0.0)  # exp(1000) overflows float32 and float64
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # positives certain, negatives certain


def test_estimate_log_z_matches_formula():
    pos, neg = _sims(batch=4, negatives=6, seed=1)
    tau, data_size = 0.1, 5000
    values = pos.tolist() + [s for row in neg.tolist() for s in row]
    expected = math.log(data_size * sum(math.exp(s / tau) for s in values) / len(values))
    assert estimate_log_z(pos, neg, tau, data_size).item() == pytest.approx(expected, rel=1e-6)
    # no overflow at tiny temperatures (float32 exp(1/1e-3) would be inf)
    assert torch.isfinite(estimate_log_z(torch.ones(2), torch.ones(2, 3), 1e-3, 10))


def test_estimate_log_z_is_detached():
    pos, neg = _sims()
    pos.requires_grad_(True)
    assert not estimate_log_z(pos, neg, 0.1, 10).requires_grad


@pytest.mark.parametrize("tau", [0.07, 0.2, 1.0])
def test_info_nce_loss_matches_formula(tau):
    pos, neg = _sims(seed=2)
    expected = 0.0
    for p, ns in zip(pos.tolist(), neg.tolist()):
        expected -= math.log(math.exp(p / tau) / (math.exp(p / tau) + sum(math.exp(s / tau) for s in ns)))
    expected /= len(pos)
    assert info_nce_loss(pos, neg, tau).item() == pytest.approx(expected, rel=1e-9)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="neg_sim"):
        nce_loss(torch.zeros(3), torch.zeros(4, 2), 0.1, 10, 0.0)
