"""SupCon: L_out and L_in against the paper's sums written out by hand, their relations to each
other and to NT-Xent, the global batch over two workers, the method's views, head and optimiser."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from global_batch import assert_two_workers_match_one
from host_syncs import count_host_syncs
from method_testing import CTX, build_method, view_batch

from sslab.methods.contrastive.supcon import SupCon, SupConConfig
from sslab.methods.losses import nt_xent_loss, supcon_loss
from sslab.methods.views import Augmented, ImageView


def _features(batch: int, views: int, dim: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, views, dim, dtype=torch.float64, generator=generator), dim=2)


def _by_hand(features: torch.Tensor, labels: torch.Tensor, tau: float, base_tau: float, form: str) -> float:
    """Eq. 2 (out) or eq. 3 (in) of the paper, one anchor and one positive at a time, averaged over
    every anchor (an anchor without a positive adds 0 and still counts)."""
    z = [(features[b, v].tolist(), int(labels[b])) for v in range(features.shape[1]) for b in range(len(labels))]
    total = 0.0
    for i, (zi, yi) in enumerate(z):
        sim = [sum(a * b for a, b in zip(zi, za)) / tau for za, _ in z]
        denominator = sum(math.exp(sim[a]) for a in range(len(z)) if a != i)
        positives = [p for p, (_, yp) in enumerate(z) if p != i and yp == yi]
        if not positives:
            continue
        if form == "out":
            total += -sum(math.log(math.exp(sim[p]) / denominator) for p in positives) / len(positives)
        else:
            total += -math.log(sum(math.exp(sim[p]) / denominator for p in positives) / len(positives))
    return (tau / base_tau) * total / len(z)


@pytest.mark.parametrize("form", ["out", "in"])
@pytest.mark.parametrize("views, labels", [
    (2, [0, 1, 0, 2, 1, 0]),  # several positives per anchor, the other view among them
    (1, [3, 1, 3, 1, 1, 7]),  # label 7 appears once: its anchor has no positive
])
def test_loss_is_the_papers_sum_over_anchors_and_positives(form, views, labels):
    labels = torch.tensor(labels)
    features = _features(len(labels), views)
    loss = supcon_loss(features, labels, 0.3, 0.07, form)
    assert loss.item() == pytest.approx(_by_hand(features, labels, 0.3, 0.07, form), rel=1e-12)


@pytest.mark.parametrize("form", ["out", "in"])
def test_an_anchor_without_positive_adds_zero_but_counts_in_the_mean(form):
    labels = torch.tensor([0, 0, 1])  # one view: the image of label 1 has no positive
    features = _features(3, 1).requires_grad_()
    loss = supcon_loss(features, labels, 0.1, 0.1, form)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(features.grad).all()
    z = features.detach()[:, 0]
    sims = z @ z.T / 0.1
    # anchors 0 and 1 (one positive each: L_out = L_in), candidates: the two others
    terms = [-(sims[i, 1 - i] - torch.logsumexp(sims[i, [1 - i, 2]], 0)) for i in (0, 1)]
    assert loss.item() == pytest.approx(sum(terms).item() / 3, rel=1e-12)  # divided by 3, not 2
    everything_singleton = supcon_loss(_features(3, 1), torch.tensor([0, 1, 2]), 0.1, 0.1, form)
    assert everything_singleton.item() == 0.0


def test_l_in_is_at_most_l_out():
    for seed in range(5):
        features = _features(8, 2, seed=seed)
        labels = torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(seed))
        assert supcon_loss(features, labels, 0.2, 0.07, "in") <= supcon_loss(features, labels, 0.2, 0.07, "out")


def test_with_every_label_distinct_l_out_is_nt_xent_scaled_by_tau_over_base_tau():
    features = _features(6, 2)
    got = supcon_loss(features, torch.arange(6), 0.5, 0.07, "out")
    torch.testing.assert_close(got, nt_xent_loss(features[:, 0], features[:, 1], 0.5) * 0.5 / 0.07)


def _both_forms(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_out + 2 L_in, so one spawn of two workers checks both forms (module level: picklable)."""
    return supcon_loss(features, labels, 0.2, 0.07, "out") + 2 * supcon_loss(features, labels, 0.2, 0.07, "in")


def test_two_workers_give_the_loss_and_gradients_of_one_worker_on_the_global_batch(tmp_path):
    # labels shared across the two workers' halves, and one label (5) held by one image only;
    # each worker averages over its own anchors, so only the mean of the losses must match
    labels = torch.tensor([0, 1, 2, 5, 1, 0, 2, 2])
    assert_two_workers_match_one(_both_forms, {"features": _features(8, 2), "labels": labels},
                                 tmp_path, same_value=False)


def _supcon(**config) -> SupCon:
    return build_method(SupCon, arch="resnet18", **config)


@pytest.mark.parametrize("form", ["out", "in"])
def test_training_step_contrasts_both_views_normalised_projections_without_host_syncs(form):
    method = _supcon(loss_form=form, temperature=0.2)
    batch = view_batch(SupCon.views(method.config, 32), labels=3)
    with count_host_syncs() as syncs:
        out = method.training_step(batch, CTX)
        loss, metrics = out.loss, out.metrics
        loss.backward()
    assert sum(syncs.values()) == 0, dict(syncs)
    with torch.no_grad():  # one forward of both views, as the official code (BatchNorm over 2B)
        z = method.project(torch.cat([batch["view_0"], batch["view_1"]]))
    torch.testing.assert_close(z.norm(dim=1), torch.ones(len(z)))
    features = torch.stack(z.chunk(2), dim=1).double()
    assert loss.item() == pytest.approx(_by_hand(features, batch["label"], 0.2, 0.07, form), rel=1e-5)
    assert {k: v.item() for k, v in metrics.items()} == {"loss": pytest.approx(loss.item())}
    with pytest.raises(KeyError, match="label"):
        method.training_step({k: v for k, v in batch.items() if k != "label"}, CTX)


def test_views_are_two_draws_of_the_two_crop_transform():
    (view,) = SupCon.views(SupConConfig(), 32)
    assert view.keys() == ("view_0", "view_1")
    assert (view.scale, view.flip, view.jitter, view.jitter_prob, view.grayscale, view.blur_prob) == (
        (0.2, 1.0), True, (0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.0)
    method = _supcon().eval()
    views = SupCon.invariance_views(method.config, 32)
    assert isinstance(views[0], ImageView) and isinstance(views[1], Augmented)
    a, b = method.invariance_pair(view_batch(views, labels=3))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    assert (a - b).norm(dim=1).min() > 0


def test_head_is_linear_relu_linear_to_128_without_batchnorm():
    method = _supcon()
    kinds = [type(m) for m in method.projector]
    assert kinds == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert method.projector[0].out_features == method.backbone.out_dim and method.projector[2].out_features == 128
    assert method.kept_in_sync() == [] and method.unused_parameters() == []


def test_optimiser_is_the_readmes_sgd_and_bad_settings_are_refused():
    config = SupConConfig()
    assert (config.optim.optimizer, config.optim.momentum, config.optim.weight_decay, config.optim.exclude_norm_and_bias) == (
        "sgd", 0.9, 1e-4, False)
    assert config.optim.learning_rate(1024) == pytest.approx(0.5)  # README: lr 0.5 at batch 1024
    assert (config.temperature, config.base_temperature, config.loss_form) == (0.1, 0.07, "out")
    for bad in ({"loss_form": "mid"}, {"temperature": 0.0}, {"base_temperature": -1.0}, {"crop_min_scale": 0.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SupConConfig.from_flat(bad)
    with pytest.raises(ValueError, match="form"):
        supcon_loss(_features(4, 2), torch.arange(4), 0.1, 0.07, "mid")
    with pytest.raises(ValueError, match="B, V, D"):
        supcon_loss(_features(4, 2)[:, 0], torch.arange(4), 0.1, 0.07)
