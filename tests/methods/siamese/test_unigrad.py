"""UniGrad: the imposed gradient against its closed form, the correlation matrix F (first batch,
EMA, trace, workers, checkpoint), the momentum branch with and without an EMA copy."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from global_batch import assert_two_workers_match_one
from host_syncs import count_host_syncs
from method_testing import build_method, step_context, train_steps
from sslab.methods.blocks.momentum import cosine_momentum
from sslab.methods.blocks.optim import build_optimizer
from sslab.methods.losses import unigrad_loss
from sslab.methods.siamese.unigrad import UniGrad, UniGradConfig, correlation_estimate

D = 16
LAMBD = 100.0


def _unigrad(seed: int = 0, **config) -> UniGrad:
    return build_method(UniGrad, seed=seed, **{"projection_dim": D, "projection_hidden_dim": 32, **config})


def _random_views(seed: int, n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"view_0": torch.randn(n, 3, 16, 16, generator=g), "view_1": torch.randn(n, 3, 16, 16, generator=g),
            "idx": torch.arange(n)}


def _unit_rows(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: these models are tiny, and on a shared CPU two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- configuration and heads --------------------------------------------------------------
def test_defaults_are_the_official_config():
    c = UniGradConfig()
    assert (c.lambd, c.rho, c.encoder_momentum, c.encoder_momentum_schedule) == (100.0, 0.99, 0.996, "cosine")
    assert (c.projection_dim, c.projection_hidden_dim) == (2048, 2048)
    assert (c.optim.optimizer, c.optim.base_lr, c.optim.momentum, c.optim.weight_decay, c.optim.warmup_epochs) == ("sgd", 0.05, 0.9, 1e-4, 5)
    assert c.optim.learning_rate(1024) == pytest.approx(0.2) and not c.optim.exclude_norm_and_bias
    assert UniGradConfig.symbols()["lambd"] == "λ" and UniGradConfig.symbols()["rho"] == "ρ"


@pytest.mark.parametrize("field,value", [("lambd", -1.0), ("rho", 1.0), ("rho", -0.1), ("encoder_momentum", 1.0),
                                         ("encoder_momentum_schedule", "linear"), ("projection_dim", 0)])
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        UniGradConfig.from_flat({field: value})


def test_projector_is_the_official_three_layers_and_the_views_two_draws():
    method = _unigrad()
    kinds = [type(m) for m in method.projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    linears = [m for m in method.projector if isinstance(m, nn.Linear)]
    assert [m.bias is not None for m in linears] == [False, False, True]
    assert (linears[0].in_features, linears[0].out_features, linears[-1].out_features) == (method.backbone.out_dim, 32, D)
    (view,) = UniGrad.views(method.config, 32)
    assert view.keys() == ("view_0", "view_1")
    assert (view.scale, view.jitter, view.jitter_prob, view.grayscale) == ((0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
    assert method.unused_parameters() == [] and method.kept_in_sync() == [method.target]
    assert method.correlation.dtype == torch.float32 and "correlation" in method.state_dict()


# --- the loss -----------------------------------------------------------------------------
def test_gradient_is_the_unified_gradient_over_2b_and_the_value_readme_l():
    n = 6
    z1, z2 = (_unit_rows(n, D, s).requires_grad_(True) for s in (1, 2))
    z1m, z2m = _unit_rows(n, D, 3), _unit_rows(n, D, 4)
    corr = correlation_estimate(z1m, z2m)
    loss, pos_sim = unigrad_loss(z1, z2, z1m, z2m, corr, LAMBD)
    loss.backward()
    with torch.no_grad():
        # official: grad1 = -z2m + λ z1 F, loss = ½(mean⟨sg(grad1), z1⟩ + mean⟨sg(grad2), z2⟩)
        torch.testing.assert_close(z1.grad, (-z2m + LAMBD * z1 @ corr) / (2 * n), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(z2.grad, (-z1m + LAMBD * z2 @ corr) / (2 * n), rtol=1e-12, atol=1e-12)
        # the value: README L = E[−cos(u1, u2m) + (λ/2) u1ᵀ F u1], symmetrised, row by row
        terms = [-(a[i] @ b[i]) + LAMBD / 2 * (a[i] @ corr @ a[i]) for a, b in ((z1, z2m), (z2, z1m)) for i in range(n)]
        assert loss.item() == pytest.approx(sum(terms).item() / (2 * n), rel=1e-12)
        pos = [(z1[i] @ z2m[i] + z2[i] @ z1m[i]) / 2 for i in range(n)]
        assert pos_sim.item() == pytest.approx(sum(pos).item() / n, rel=1e-12)
    assert not pos_sim.requires_grad


def test_correlation_estimate_is_the_mean_outer_product_of_both_views():
    z1m, z2m = _unit_rows(5, D, 1), _unit_rows(5, D, 2)
    expected = sum(torch.outer(z[i], z[i]) for z in (z1m, z2m) for i in range(5)) / 10
    torch.testing.assert_close(correlation_estimate(z1m, z2m), expected)
    assert correlation_estimate(z1m, z2m).trace().item() == pytest.approx(1.0, abs=1e-12)


def test_correlation_is_the_first_batch_estimate_then_an_ema_with_rho():
    method = _unigrad(rho=0.9)
    batches = [(_unit_rows(8, D, 2 * s, torch.float32), _unit_rows(8, D, 2 * s + 1, torch.float32)) for s in range(3)]
    estimates = [correlation_estimate(*b) for b in batches]
    method.update_correlation(*batches[0])
    assert torch.equal(method.correlation, estimates[0]) and method.correlation_updates.item() == 1
    expected = estimates[0]
    for b, estimate in zip(batches[1:], estimates[1:]):
        method.update_correlation(*b)
        expected = 0.9 * expected + (1 - 0.9) * estimate
        torch.testing.assert_close(method.correlation, expected, rtol=0, atol=1e-7)
    assert method.correlation.trace().item() == pytest.approx(1.0, abs=1e-6)


def test_training_keeps_trace_f_at_one_and_builds_f_from_the_momentum_branch():
    method = _unigrad()
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=8)
    for step in range(4):
        batch = _random_views(step)
        if step == 0:  # the first F is the estimate from the momentum branch's outputs of both views
            with torch.no_grad():
                twin = copy.deepcopy(method)
                z1m, z2m = (F.normalize(twin.target(batch[k]), dim=1) for k in ("view_0", "view_1"))
        out = method(batch, step_context(step))
        loss, metrics = out.loss, out.metrics
        if step == 0:
            torch.testing.assert_close(method.correlation, correlation_estimate(z1m, z2m))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        method.after_step(batch, out, step_context(step))
        assert method.correlation.trace().item() == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(method.correlation, method.correlation.T)
        assert set(metrics) == {"loss", "pos_sim"} and -1 <= metrics["pos_sim"].item() <= 1
    assert method.correlation_updates.item() == 4


def test_a_step_asks_the_device_nothing():
    method = _unigrad()
    for step in range(2):
        batch = _random_views(step)
        with count_host_syncs() as syncs:
            out = method(batch, step_context(step))
            out.loss.backward()
            method.after_step(batch, out, step_context(step))
        assert sum(syncs.values()) == 0, dict(syncs)


# --- momentum branch -----------------------------------------------------------------------
def test_momentum_branch_moves_on_the_cosine_schedule_after_the_optimiser_step():
    method = _unigrad()
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1)
    ema_before = copy.deepcopy(method.target.ema)
    out = method(_random_views(0), step_context(0))
    out.loss.backward()
    optimizer.step()
    method.after_step(_random_views(0), out, step_context(3, total=10))
    m = cosine_momentum(0.996, 0.3)
    online = dict(nn.Sequential(method.backbone, method.projector).named_parameters())
    for name, p in method.target.ema.named_parameters():
        old = dict(ema_before.named_parameters())[name]
        torch.testing.assert_close(p, old + (1 - m) * (online[name] - old))
    assert not any(p.requires_grad for p in method.target.parameters())


def test_without_momentum_encoder_the_target_is_the_online_network_under_stop_gradient():
    method = _unigrad(encoder_momentum=0.0)
    assert method.target is None and not any(k.startswith("target.") for k in method.state_dict())
    assert method.kept_in_sync() == []
    batch = _random_views(0)
    z1, z2, z1m, z2m = method.branches(batch["view_0"], batch["view_1"])
    assert torch.equal(z1m, z1) and torch.equal(z2m, z2) and not z1m.requires_grad and z1.requires_grad
    # the same values as the target branch without a momentum encoder (the online modules under no_grad)
    torch.testing.assert_close(z1m, F.normalize(method.target_projection(batch["view_0"]), dim=1), rtol=0, atol=0)
    out = method(batch, step_context(0))
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.parameters())
    before = copy.deepcopy(method.state_dict())
    method.after_step(batch, out, step_context(0))
    assert all(torch.equal(v, method.state_dict()[k]) for k, v in before.items())


def test_invariance_pair_is_normalised_online_projections():
    method = _unigrad().eval()
    g = torch.Generator().manual_seed(0)
    a, b = method.invariance_pair({"clean": torch.randn(4, 3, 16, 16, generator=g),
                                   "transformed": torch.randn(4, 3, 16, 16, generator=g)})
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    assert b.shape == (4, D) and not a.requires_grad


# --- checkpoint ------------------------------------------------------------------------------
def _train_steps(method: UniGrad, optimizer, steps: range) -> list[torch.Tensor]:
    return train_steps(method, optimizer, [(_random_views(step), step_context(step)) for step in steps])


def test_a_resumed_run_takes_the_next_step_bit_for_bit():
    method = _unigrad(seed=0)
    optimizer = build_optimizer(method.parameter_groups(), method.config.optim, global_batch=8)
    _train_steps(method, optimizer, range(3))
    saved = copy.deepcopy((method.state_dict(), optimizer.state_dict()))
    assert saved[0]["correlation_updates"].item() == 3 and any(k.startswith("target.ema.") for k in saved[0])

    resumed = _unigrad(seed=123)  # other weights, F and momentum branch until loaded
    assert not torch.equal(resumed.correlation, method.correlation)
    resumed_optimizer = build_optimizer(resumed.parameter_groups(), resumed.config.optim, global_batch=8)
    resumed.load_state_dict(saved[0])
    resumed_optimizer.load_state_dict(saved[1])
    (expected,) = _train_steps(method, optimizer, range(3, 4))
    (got,) = _train_steps(resumed, resumed_optimizer, range(3, 4))
    assert torch.equal(got, expected)
    state, resumed_state = method.state_dict(), resumed.state_dict()
    assert all(torch.equal(v, resumed_state[k]) for k, v in state.items()), \
        [k for k, v in state.items() if not torch.equal(v, resumed_state[k])]


# --- two workers -------------------------------------------------------------------------------
def _step_after_the_projector(z1, z2, z1m, z2m, z1m_before, z2m_before, *, out: str):
    """What a step computes from the raw projections, F already moved once (by ``*_before``):
    normalise, move F with this batch's momentum rows, the loss. Saves F per worker in ``out``."""
    method = _unigrad()
    method.update_correlation(F.normalize(z1m_before, dim=1), F.normalize(z2m_before, dim=1))
    z1, z2, z1m, z2m = (F.normalize(z, dim=1) for z in (z1, z2, z1m, z2m))
    correlation = method.update_correlation(z1m, z2m)
    world = dist.get_world_size() if dist.is_initialized() else 1
    torch.save(correlation.clone(), f"{out}/correlation-{world}-{dist.get_rank() if world > 1 else 0}.pt")
    loss, _ = unigrad_loss(z1, z2, z1m, z2m, correlation.double(), LAMBD)
    return loss


def test_two_workers_share_f_and_match_one_worker_on_the_global_batch(tmp_path):
    """F identical on both workers and equal to one worker's on the global batch; the loss's
    gradients, divided by the workers as DDP averages, equal one worker's."""
    g = torch.Generator().manual_seed(0)
    names = ("z1", "z2", "z1m", "z2m", "z1m_before", "z2m_before")
    inputs = {k: torch.randn(8, D, generator=g, dtype=torch.float64) for k in names}
    step = functools.partial(_step_after_the_projector, out=str(tmp_path))
    assert_two_workers_match_one(step, inputs, tmp_path, same_value=False)
    single, *workers = (torch.load(tmp_path / f"correlation-{w}-{r}.pt") for w, r in ((1, 0), (2, 0), (2, 1)))
    assert torch.equal(workers[0], workers[1]), "the workers' F differ"
    torch.testing.assert_close(workers[0], single, rtol=0, atol=1e-6)
    # not vacuous: a worker's own half of the batches gives another F
    half = _unigrad()
    for z1m, z2m in ((inputs["z1m_before"], inputs["z2m_before"]), (inputs["z1m"], inputs["z2m"])):
        half.update_correlation(F.normalize(z1m[:4], dim=1).float(), F.normalize(z2m[:4], dim=1).float())
    assert not torch.allclose(half.correlation, single, atol=1e-3)
