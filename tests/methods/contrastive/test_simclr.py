"""SimCLR: its loss against NT-Xent written out by hand, its views, heads and optimiser groups."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from sslab.methods.base import StepContext
from sslab.methods.contrastive.simclr import SimCLR, SimCLRConfig
from sslab.methods.losses import momentum_nt_xent_loss
from sslab.methods.views import Augmented, ImageView

from global_batch import assert_two_workers_match_one
from host_syncs import count_host_syncs
from method_testing import CTX, build_method, view_batch


def _simclr(**config) -> SimCLR:
    return build_method(SimCLR, arch="resnet18", projection_dim=16, **config)


def test_loss_is_nt_xent_over_the_2n_projections_written_out():
    method = _simclr(temperature=0.3)
    batch = view_batch(SimCLR.views(method.config, 32))
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    with torch.no_grad():
        z = F.normalize(torch.cat([method.project(batch["view_0"]), method.project(batch["view_1"])]), dim=1)
    n = len(z) // 2
    terms = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)  # the other view of the same image
        sims = {k: float(z[i] @ z[k]) / 0.3 for k in range(2 * n) if k != i}
        terms.append(-sims[positive] + math.log(sum(math.exp(s) for s in sims.values())))
    assert loss.item() == pytest.approx(sum(terms) / (2 * n), rel=1e-5)
    assert {k: v.item() for k, v in metrics.items()} == {"loss": pytest.approx(loss.item())}


def test_views_are_two_draws_of_the_cifar_augmentation_at_strength_s():
    config = SimCLRConfig(color_strength=0.5, crop_min_scale=0.08)
    (view,) = SimCLR.views(config, 32)
    assert view.keys() == ("view_0", "view_1")
    assert (view.scale, view.jitter, view.jitter_prob, view.grayscale, view.blur_prob) == (
        (0.08, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.0)  # ColorJitter(0.8s, 0.8s, 0.8s, 0.2s), p 0.8
    batch = view_batch([view])
    assert not torch.equal(batch["view_0"], batch["view_1"])  # independent draws


def test_invariance_compares_the_clean_image_with_one_training_augmentation():
    method = _simclr().eval()
    views = SimCLR.invariance_views(method.config, 32)
    assert isinstance(views[0], ImageView) and isinstance(views[1], Augmented)
    batch = view_batch(views)
    clean = view_batch([ImageView(name="clean")])["clean"]
    torch.testing.assert_close(batch["clean"], clean)  # evaluation form: the whole image
    a, b = method.invariance_pair(batch)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    torch.testing.assert_close(b.norm(dim=1), torch.ones(len(b)))
    assert (a - b).norm(dim=1).min() > 0  # the augmentation is drawn even in evaluation mode


def test_head_width_follows_the_backbone_and_norms_and_biases_skip_decay_and_lars():
    method = _simclr()
    first, last = method.projector[0], method.projector[-1]
    assert first.in_features == first.out_features == method.backbone.out_dim  # hidden width 0 = backbone's
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    weights, norms = method.parameter_groups()
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim <= 1 for p in norms["params"])
    assert norms["weight_decay"] == 0.0 and norms["lars_exclude"]
    assert method.kept_in_sync() == [] and method.unused_parameters() == []


# --- with a momentum encoder (UniGrad's loss_simclr_grad_mm) ---------------------------------------
def test_default_has_no_momentum_branch():
    method = _simclr()
    assert method.target is None and not any(k.startswith("target.") for k in method.state_dict())


def test_momentum_loss_contrasts_online_anchors_with_every_momentum_embedding_written_out():
    method = _simclr(temperature=0.3, encoder_momentum=0.99)
    with torch.no_grad():  # a momentum branch apart from the online one
        for p in method.target.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = view_batch(SimCLR.views(method.config, 32))
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    with torch.no_grad():
        z = F.normalize(torch.cat([method.project(batch["view_0"]), method.project(batch["view_1"])]), dim=1)
        zm = F.normalize(torch.cat([method.target.ema(batch["view_0"]), method.target.ema(batch["view_1"])]), dim=1)
    n = len(z) // 2
    terms = []
    for i in range(2 * n):
        sims = [float(z[i] @ zm[k]) / 0.3 for k in range(2 * n)]  # all 2N momentum embeddings, own view included
        terms.append(-sims[(i + n) % (2 * n)] + math.log(sum(math.exp(s) for s in sims)))
    assert loss.item() == pytest.approx(sum(terms) / (2 * n), rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(loss.item())
    loss.backward()
    assert all(p.grad is None for p in method.target.parameters())  # stop-gradient on the momentum branch
    assert method.backbone.conv1.weight.grad is not None


def test_momentum_loss_gradient_is_unigrads_closed_form():
    """∂L/∂z1_i = (I − z1_i z1_iᵀ)(−z2m_i + Σ_k softmax_k(z1_i·c_k/τ) c_k) / (τ · 2B) on unit z1 (UniGrad's
    grad1, mean over the 2B anchors, through the normalisation)."""
    torch.manual_seed(0)
    b, d, tau = 4, 5, 0.2
    z1, z2, z1m, z2m = (F.normalize(torch.randn(b, d, dtype=torch.float64), dim=1) for _ in range(4))
    z1.requires_grad_(True)
    momentum_nt_xent_loss(z1, z2, z1m, z2m, tau).backward()
    candidates = torch.cat([z1m, z2m])
    with torch.no_grad():
        weights = torch.softmax(z1 @ candidates.T / tau, dim=1)
        grad = (-z2m + weights @ candidates) / tau
        tangent = grad - (grad * z1).sum(1, keepdim=True) * z1
    torch.testing.assert_close(z1.grad, tangent / (2 * b))


def test_momentum_loss_on_two_workers_equals_one_worker_on_the_globalview_batch(tmp_path):
    torch.manual_seed(1)
    inputs = {name: torch.randn(8, 6) for name in ("z1", "z2", "z1m", "z2m")}
    assert_two_workers_match_one(partial(momentum_nt_xent_loss, temperature=0.2), inputs, tmp_path, same_value=False)


def test_the_momentum_encoder_moves_by_its_ema_on_a_cosine():
    method = _simclr(encoder_momentum=0.9)
    assert method.kept_in_sync() == [method.target]
    batch = view_batch(SimCLR.views(method.config, 32))
    optimizer = torch.optim.SGD(method.parameters(), lr=0.5)
    ctx = StepContext(step=1, total_steps=4, epoch=0)
    with count_host_syncs() as syncs:
        out = method.training_step(batch, ctx)
        out.loss.backward()
    assert sum(syncs.values()) == 0, dict(syncs)
    optimizer.step()
    online = dict(method.backbone.named_parameters(prefix="0")) | dict(method.projector.named_parameters(prefix="1"))
    before = {n: p.clone() for n, p in method.target.ema.named_parameters()}
    method.after_step(batch, out, ctx)
    m = 1 - (1 - 0.9) * (math.cos(math.pi * 0.25) + 1) / 2  # BYOL's schedule at progress 1/4
    moved = 0
    for name, p in method.target.ema.named_parameters():
        torch.testing.assert_close(p, m * before[name] + (1 - m) * online[name], msg=name)
        moved += not torch.equal(p, before[name])
    assert moved > 0
