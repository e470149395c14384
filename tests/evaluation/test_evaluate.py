"""kNN, linear probes and feature extraction against small hand-checked cases."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslab.methods.blocks.backbone import TAPS, Backbone
from sslab.methods.views import CIFAR10
from sslab.evaluation.evaluate import evaluate, knn_top1, linear_probe_top1, pooled_features


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


def test_invariance_is_the_distance_between_the_two_representations_of_each_image():
    """Against representations whose distances are known in closed form: a pair that ignores the
    transformation (distance 0), one that maps an image's two views to unit vectors at the angle
    given by its mean brightness (distance 2 sin(θ/2)), both computed in evaluation mode."""
    from sslab.methods.views import ImageView
    from sslab.evaluation.evaluate import invariance_distances

    images = np.random.default_rng(0).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    angles = torch.from_numpy(images.reshape(7, -1).mean(1) / 255 * np.pi)  # in [0, π]
    modes = []

    class Toy(torch.nn.Module):
        config = None
        rotate = True

        @staticmethod
        def invariance_views(config, size):
            return [ImageView(name="a", size=size), ImageView(name="b", size=size)]

        def invariance_pair(self, batch):
            modes.append(self.training)
            n = len(batch["a"])
            theta = angles[:n] if self.rotate else torch.zeros(n)
            first = torch.stack([torch.ones(n), torch.zeros(n)], 1)
            second = torch.stack([torch.cos(theta), torch.sin(theta)], 1).float()
            return first, second

    toy = Toy().train()
    distances = invariance_distances(toy, images, stats=CIFAR10, batch_size=7)
    np.testing.assert_allclose(distances, (2 * torch.sin(angles / 2)).numpy(), rtol=1e-5)
    assert modes == [False] and toy.training  # evaluated in eval mode, the caller's mode restored
    toy.rotate = False
    np.testing.assert_allclose(invariance_distances(toy, images, stats=CIFAR10), np.zeros(7), atol=1e-7)


def test_pirls_invariance_is_the_distance_between_f_of_the_image_and_g_of_its_jigsaw():
    """PIRL's measurement (Fig. 3): ‖f(v_I) − g(v_I^t)‖ of its evaluation views, by hand."""
    from sslab import methods
    from sslab.methods.views import apply_views
    from sslab.evaluation.evaluate import invariance_distances

    torch.manual_seed(0)
    cls = methods.get("pirl")
    method = cls(cls.Config(num_negatives=4), Backbone("resnet10", cifar_stem=True, width=4), num_samples=8)
    images = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    views = apply_views(cls.invariance_views(method.config, 32), images, np.random.default_rng(5), train=False,
                        stats=CIFAR10)
    method.eval()
    with torch.no_grad():
        f = F.normalize(method.image_head(method.backbone(torch.from_numpy(views["image"]))), dim=1)
        patches = torch.from_numpy(views["jigsaw"])
        per_patch = method.patch_head(method.backbone(patches.flatten(0, 1)))
        g = F.normalize(method.jigsaw_head(per_patch.reshape(6, -1)), dim=1)
    method.train()
    measured = invariance_distances(method, images, stats=CIFAR10, seed=5)
    np.testing.assert_allclose(measured, (f - g).norm(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    assert measured.std() > 0  # a distance per image, not one number


def test_the_trials_probe_accuracy_is_measured_on_the_test_split_not_the_training_split():
    """Guards against the probe reporting its accuracy on the training split.

    Through ``evaluate_for_profile`` (what a trial and the random-init baseline call): the test
    split is the training images again, each labelled with the next class. 16 images have
    linearly separable pooled res4 (32 channels) and res5 (64 channels) features, so the probe
    fits the training labels exactly, and then gets every test label wrong: training accuracy
    1.0, test accuracy 0.0."""
    from sslab.evaluation.evaluate import evaluate_for_profile
    from sslab.plan.profiles import Profile

    torch.manual_seed(0)
    backbone = Backbone("resnet18", cifar_stem=True, width=8)
    images = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    train_labels = np.arange(16) % 4
    test_labels = (train_labels + 1) % 4  # the same images, every one labelled otherwise
    arrays = {"train_images": images, "train_labels": train_labels, "test_images": images,
              "test_labels": test_labels, "stats": CIFAR10}
    profile = Profile(name="probe", width=8, knn_k=5, probe_epochs=100, invariance_samples=0)
    metrics = evaluate_for_profile(backbone, arrays, profile, seed=0)

    features = pooled_features(backbone, images, TAPS, stats=CIFAR10)
    y_train = torch.as_tensor(train_labels)
    for tap in TAPS:
        # the same probe (same data, seed and epochs) scored on its own training split
        train_accuracy = linear_probe_top1(features[tap], y_train, features[tap], y_train, epochs=100, seed=0)
        # an image the probe gets right on the training split it gets wrong on the test split
        assert metrics[f"probe_{tap}_top1"] <= 1.0 - train_accuracy, tap
        if tap in ("res4", "res5"):  # separable: a perfect fit, so no test label right
            assert (train_accuracy, metrics[f"probe_{tap}_top1"]) == (1.0, 0.0), tap
