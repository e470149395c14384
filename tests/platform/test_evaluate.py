"""kNN, linear probes and feature extraction against small hand-checked cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslab.methods.blocks.backbone import TAPS, Backbone
from sslab.methods.views import CIFAR10
from sslab.platform.evaluate import evaluate, knn_top1, linear_probe_top1, pooled_features


def _knn_by_hand(train_x, train_y, test_x, k, tau, num_classes):
    predictions = []
    for query in test_x:
        sims = [float(F.cosine_similarity(query, row, dim=0)) for row in train_x]
        nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = [0.0] * num_classes
        for i in nearest:
            votes[int(train_y[i])] += np.exp(sims[i] / tau)
        predictions.append(int(np.argmax(votes)))
    return predictions


def test_knn_matches_the_weighted_vote_formula():
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(60, 5, generator=g), torch.randn(25, 5, generator=g)
    train_y, test_y = torch.randint(0, 3, (60,), generator=g), torch.randint(0, 3, (25,), generator=g)
    for k, tau in [(1, 0.07), (7, 0.1), (60, 1.0)]:
        expected = _knn_by_hand(train_x, train_y, test_x, k, tau, 3)
        accuracy = float(np.mean(np.array(expected) == test_y.numpy()))
        assert knn_top1(train_x, train_y, test_x, test_y, k=k, temperature=tau, chunk=7) == pytest.approx(accuracy)


def test_knn_is_perfect_on_separated_clusters():
    centers = torch.eye(4) * 10
    train_x = centers.repeat_interleave(10, 0) + torch.randn(40, 4) * 0.1
    test_x = centers + torch.randn(4, 4) * 0.1
    assert knn_top1(train_x, torch.arange(4).repeat_interleave(10), test_x, torch.arange(4), k=5) == 1.0


def test_linear_probe_learns_a_linear_rule_and_not_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1200, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    assert linear_probe_top1(x[:1000], y[:1000], x[1000:], y[1000:], epochs=30) > 0.95
    noise_y = torch.randint(0, 2, (400,), generator=g)
    assert linear_probe_top1(x[:300], noise_y[:300], x[300:400], noise_y[300:], epochs=30) < 0.7


def test_pooled_features_have_one_vector_per_image_and_tap():
    backbone = Backbone("resnet18", cifar_stem=True, width=8)
    images = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    features = pooled_features(backbone, images, TAPS, stats=CIFAR10, batch_size=4)
    assert {tap: tuple(f.shape) for tap, f in features.items()} == {
        tap: (10, backbone.tap_channels[tap]) for tap in TAPS
    }
    assert backbone.training  # the caller's mode is restored


def test_evaluate_reports_every_tap_and_invariance_in_range():
    from sslab import methods

    torch.manual_seed(0)
    backbone = Backbone("resnet18", cifar_stem=True, width=8)
    cls = methods.get("pirl")
    method = cls(cls.Config(num_negatives=16), backbone, num_samples=40)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(60) % 3
    result = evaluate(
        backbone, images[:40], labels[:40], images[40:], labels[40:],
        stats=CIFAR10, method=method, knn_k=5, probe_epochs=2, invariance_samples=12,
    )
    assert set(result.metrics) == {"knn_top1", "invariance_l2_mean", *(f"probe_{t}_top1" for t in TAPS)}
    assert all(0.0 <= v <= 1.0 for k, v in result.metrics.items() if k != "invariance_l2_mean")
    assert result.invariance.shape == (12,)
    assert np.all((result.invariance >= 0) & (result.invariance <= 2 + 1e-5))  # unit vectors
    assert result.metrics["invariance_l2_mean"] == pytest.approx(float(result.invariance.mean()))
