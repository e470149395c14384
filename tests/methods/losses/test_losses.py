"""Losses against hand-written per-sample formulas (PIRL eq. 3-4, NPID, InfoNCE, SimCLR's NT-Xent).

Every loss of the package also passes gradcheck in ``test_loss_gradients.py``."""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from global_batch import free_port
from sslab.methods.losses import classification, estimate_log_z, info_nce_loss, nce_loss, nt_xent_loss


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


# --- NT-Xent (SimCLR eq. 1) ---------------------------------------------------------------


def nt_xent_reference(z1, z2, tau):
    """SimCLR eq. 1 one anchor at a time: 2N anchors, candidates k ≠ i, mean over anchors."""

    def unit(v):
        norm = math.sqrt(sum(a * a for a in v))
        return [a / norm for a in v]

    z = [unit(v) for v in z1 + z2]
    n = len(z1)

    def s(i, k):
        return sum(a * b for a, b in zip(z[i], z[k]))

    total = 0.0
    for i in range(2 * n):
        j = i + n if i < n else i - n  # the other view of the same image
        denominator = sum(math.exp(s(i, k) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(s(i, j) / tau) / denominator)
    return total / (2 * n)


def _views(batch=5, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, dim, generator=g, dtype=torch.float64),
            torch.randn(batch, dim, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("batch", [2, 5])
def test_nt_xent_matches_formula(tau, batch):
    z1, z2 = _views(batch=batch, seed=batch)
    expected = nt_xent_reference(z1.tolist(), z2.tolist(), tau)
    assert nt_xent_loss(z1, z2, tau).item() == pytest.approx(expected, rel=1e-9)


def test_nt_xent_is_half_the_tf_codes_sum_of_two_directions():
    """methods.md 3.1: the official code sums CE([ab, aa]) + CE([ba, bb]) and means over N."""
    z1, z2 = _views(batch=4, seed=3)
    h1, h2 = torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1)
    tau, n = 0.2, len(z1)
    mask = torch.eye(n, dtype=torch.bool)
    logits_aa = (h1 @ h1.T / tau).masked_fill(mask, -1e9)
    logits_bb = (h2 @ h2.T / tau).masked_fill(mask, -1e9)
    logits_ab, logits_ba = h1 @ h2.T / tau, h2 @ h1.T / tau
    target = torch.arange(n)
    ce = torch.nn.functional.cross_entropy
    tf_loss = ce(torch.cat([logits_ab, logits_aa], 1), target) + ce(torch.cat([logits_ba, logits_bb], 1), target)
    assert tf_loss.item() == pytest.approx(2 * nt_xent_loss(z1, z2, tau).item(), rel=1e-9)


def test_nt_xent_gradient_passes_gradcheck():
    z1, z2 = _views(batch=4, dim=3, seed=1)
    z1.requires_grad_(True)
    z2.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: nt_xent_loss(a, b, 0.3), (z1, z2))


def test_nt_xent_one_image_has_only_its_positive_and_zero_loss():
    z1, z2 = _views(batch=1)
    assert nt_xent_loss(z1, z2, 0.1).item() == pytest.approx(0.0, abs=1e-12)


def test_nt_xent_ignores_the_embeddings_norm():
    z1, z2 = _views(seed=4)
    assert nt_xent_loss(3.0 * z1, 0.5 * z2, 0.2).item() == pytest.approx(nt_xent_loss(z1, z2, 0.2).item(), rel=1e-12)


def test_nt_xent_is_stable_at_tiny_temperature():
    z1 = torch.eye(4, requires_grad=True)  # positives identical, negatives orthogonal
    z2 = torch.eye(4)
    loss = nt_xent_loss(z1, z2, 1e-3)  # exp(1 / 1e-3) overflows float32 and float64
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z1.grad).all()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_bad_inputs_are_clear_errors():
    z1, z2 = _views()
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z1, z2[:3], 0.1)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z1, z2, 0.0)


# --- NT-Xent on 2 data-parallel workers equals 1 worker on the global batch -----------------

GLOBAL_BATCH, WORLD = 8, 2


def _global_problem():
    """Inputs of both views for the global batch and a shared linear projection (the 'model')."""
    g = torch.Generator().manual_seed(7)
    x1 = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
    x2 = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(6, 5, generator=g, dtype=torch.float64)
    return x1, x2, weight


def _loss_and_grads(x1, x2, weight, tau=0.2):
    x1, x2, weight = (t.clone().requires_grad_(True) for t in (x1, x2, weight))
    loss = nt_xent_loss(x1 @ weight, x2 @ weight, tau)
    loss.backward()
    return loss.detach(), x1.grad, x2.grad, weight.grad


def _nt_xent_worker(rank, world, port, out):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        x1, x2, weight = _global_problem()
        part = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
        torch.save(_loss_and_grads(x1[part], x2[part], weight), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_nt_xent_two_workers_equal_one_worker_on_the_global_batch(tmp_path):
    mp.spawn(_nt_xent_worker, args=(WORLD, free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    workers = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    loss, grad_x1, grad_x2, grad_weight = _loss_and_grads(*_global_problem())
    local = GLOBAL_BATCH // WORLD

    # the loss: mean over workers of each worker's mean over its 2B anchors = mean over 2N anchors
    torch.testing.assert_close(sum(w[0] for w in workers) / WORLD, loss, rtol=1e-6, atol=1e-6)
    # input gradients: each worker's, divided by the world size as DDP averages, is its slice
    for r, (_, g1, g2, _) in enumerate(workers):
        torch.testing.assert_close(g1 / WORLD, grad_x1[r * local:(r + 1) * local], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g2 / WORLD, grad_x2[r * local:(r + 1) * local], rtol=1e-6, atol=1e-6)
    # a shared parameter: DDP's average of the workers' gradients is the single-worker gradient
    torch.testing.assert_close(sum(w[3] for w in workers) / WORLD, grad_weight, rtol=1e-6, atol=1e-6)
    # and the workers' own losses differ (each sees its own anchors), so the check is not vacuous
    assert not torch.allclose(workers[0][0], workers[1][0])


# --- gradients: NCE against its closed form, every loss under gradcheck ---------------------


def nce_gradient_reference(pos, neg, tau, data_size, log_z):
    """∂L/∂s of PIRL eq. 3-4 in closed form, for the loss ``nce_loss`` computes.

    With e(s) = exp(s/τ) / Z and h(s) = e(s) / (e(s) + N/|D|), dh/ds = h (1 − h) / τ, so
    d[−log h]/ds = −(1 − h)/τ and d[−log(1 − h)]/ds = h/τ. The loss is the mean over the B
    samples of −log h(s_pos) − Σ_j log(1 − h(s_neg_j)) (N negatives each), hence

        ∂L/∂s_pos_i = −(1 − h(s_pos_i)) / (τB),      ∂L/∂s_neg_ij = h(s_neg_ij) / (τB),

    and, as de/d(log Z) = −e, ∂L/∂(log Z) = (1/B) Σ_i [(1 − h(s_pos_i)) − Σ_j h(s_neg_ij)]
    (log Z is a constant buffer in training; the formula only pins the convention down).
    h is computed here from its definition, not as the implementation's sigmoid(a − c).
    """
    batch, num_negatives = neg.shape
    noise = num_negatives / data_size  # N / |D|

    def h(s):
        e = torch.exp(s / tau - log_z)
        return e / (e + noise)

    h_pos, h_neg = h(pos), h(neg)
    return (-(1 - h_pos) / (tau * batch), h_neg / (tau * batch),
            ((1 - h_pos).sum() - h_neg.sum()) / batch)


@pytest.mark.parametrize("tau,data_size,log_z", [(0.07, 1000, 9.0), (0.5, 50, 2.5), (1.0, 10_000, 0.0)])
def test_nce_loss_gradient_is_the_closed_form(tau, data_size, log_z):
    """autograd's ∂L/∂s_pos, ∂L/∂s_neg and ∂L/∂log Z equal ``nce_gradient_reference`` in float64.

    The parameters keep |a − c| < 20 (a = s/τ − log Z, c = log N/|D|), below softplus's default
    threshold, past which it is linear and its gradient exactly ±1 instead of within 2e-9 of it."""
    pos, neg = _sims()
    pos.requires_grad_(True)
    neg.requires_grad_(True)
    log_z_t = torch.tensor(log_z, dtype=torch.float64, requires_grad=True)
    got = torch.autograd.grad(nce_loss(pos, neg, tau, data_size, log_z_t), (pos, neg, log_z_t))
    expected = nce_gradient_reference(pos.detach(), neg.detach(), tau, data_size, log_z)
    for name, g, e in zip(("s_pos", "s_neg", "log Z"), got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-15, msg=lambda m, name=name: f"∂L/∂{name}: {m}")
    # the gradient's signs: pull the positive up (−), push every negative down (+)
    assert (got[0] < 0).all() and (got[1] > 0).all()


def test_classification_is_the_mean_cross_entropy_and_the_top1_accuracy():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0], [0.5, 0.4, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    loss, metrics = classification(logits, labels)
    expected = -sum(torch.log_softmax(logits[i], 0)[labels[i]] for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected.item())
    assert metrics["accuracy"].item() == pytest.approx(1 / 3)  # only row 0 is right
    assert not metrics["loss"].requires_grad and metrics["loss"].item() == pytest.approx(loss.item())
