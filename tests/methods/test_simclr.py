"""SimCLR: its loss against NT-Xent written out by hand, its views, heads and optimiser groups."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslab.methods.base import StepContext
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.simclr import SimCLR, SimCLRConfig
from sslab.methods.views import CIFAR10, Augmented, ImageView, apply_views

CTX = StepContext(step=0, total_steps=1, epoch=0)


def _simclr(**config) -> SimCLR:
    torch.manual_seed(0)
    return SimCLR(SimCLRConfig(projection_dim=16, **config), Backbone(width=4))


def _batch(views, n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return {k: torch.from_numpy(v) for k, v in apply_views(views, images, rng, stats=CIFAR10).items()}


def test_loss_is_nt_xent_over_the_2n_projections_written_out():
    method = _simclr(temperature=0.3)
    batch = _batch(SimCLR.views(method.config, 32))
    loss, metrics = method.training_step(batch, CTX)
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
    batch = _batch([view])
    assert not torch.equal(batch["view_0"], batch["view_1"])  # independent draws


def test_invariance_compares_the_clean_image_with_one_training_augmentation():
    method = _simclr().eval()
    views = SimCLR.invariance_views(method.config, 32)
    assert isinstance(views[0], ImageView) and isinstance(views[1], Augmented)
    batch = _batch(views)
    clean = _batch([ImageView(name="clean")])["clean"]
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
    assert method.after_step_updates() == () and method.unused_parameters() == set()
