"""Exemplar-CNN: the seed location, the geometric and photometric transformations against
hand-built examples, the surrogate-class mapping, the loss against a hand-written cross-entropy,
and configuration checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from host_syncs import count_host_syncs
from method_testing import CTX, build_method, view_batch

from sslab.methods.base import DataInfo
from sslab.methods.losses import surrogate_loss
from sslab.methods.pretext.exemplar import Exemplar, ExemplarConfig, surrogate_classes
from sslab.methods.views import CIFAR10, Augmented, Normalization, apply_views
from sslab.methods.views.exemplar import ExemplarView, hsv_contrast, pca_contrast, seed_positions, transform_seeds

IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
#: only the geometry: every photometric op off
GEOMETRY_ONLY = dict(pca_contrast=(1.0, 1.0), sv_power=(1.0, 1.0), sv_factor=(1.0, 1.0), sv_shift=0.0, hue=0.0)


def _exemplar(num_samples: int = 100, **config) -> Exemplar:
    return build_method(Exemplar, data=DataInfo(num_samples=num_samples, num_classes=10, image_size=32), **config)


def _tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W in [0, 1], as ``apply_views`` passes them."""
    return torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255)


def _blob(centre: tuple[float, float], sigma: float = 1.5, size: int = 32) -> np.ndarray:
    """A gray image (1 x size x size x 3 uint8) holding one bright Gaussian blob at (x, y)."""
    ys, xs = np.mgrid[:size, :size] + 0.5
    g = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    return np.repeat(np.rint(255 * g).astype(np.uint8)[None, :, :, None], 3, axis=3)


def _centroid(x: np.ndarray) -> tuple[float, float]:
    """(x, y) centroid of a 3 x H x W patch's first channel, in edge coordinates."""
    w = x[0].astype(np.float64)
    ys, xs = np.mgrid[:w.shape[0], :w.shape[1]] + 0.5
    return float((w * xs).sum() / w.sum()), float((w * ys).sum() / w.sum())


# --------------------------------------------------------------------------- the seed


def test_the_seed_covers_the_one_high_gradient_square_and_a_flat_image_gets_the_centre():
    images = np.full((3, 32, 32, 3), 90, dtype=np.uint8)
    images[0, 2:8, 23:29] = 255  # a bright 6 x 6 square near the top-right corner
    images[1, 25:31, 1:5] = 0  # a dark one near the bottom-left
    x0, y0 = seed_positions(_tensor(images).numpy(), 24)
    assert x0.dtype == y0.dtype == np.int64
    assert (x0[0] <= 23 and x0[0] + 24 >= 29) and (y0[0] <= 2 and y0[0] + 24 >= 8)
    assert (x0[1] <= 1 and x0[1] + 24 >= 5) and (y0[1] <= 25 and y0[1] + 24 >= 31)
    # every window holding the square and its edges (the differences to the pixels around it)
    # scores alike: the most central of them wins
    assert (x0[0], y0[0]) == (6, 1) and (x0[1], y0[1]) == (0, 8)
    assert (x0[2], y0[2]) == (4, 4)  # flat: no gradient anywhere


def test_the_evaluation_form_is_the_seed_window_itself_and_draws_nothing():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    view = ExemplarView(size=24)  # the seed's own side: exactly its pixels
    state = rng.bit_generator.state
    out = view.apply(_tensor(images), rng, train=False, stats=IDENTITY)["patch"]
    assert rng.bit_generator.state == state
    x0, y0 = seed_positions(_tensor(images).numpy(), 24)
    for i in range(4):
        crop = images[i, y0[i]:y0[i] + 24, x0[i]:x0[i] + 24].transpose(2, 0, 1) / 255
        np.testing.assert_allclose(out[i], crop, atol=1e-6)
    # at the image size the seed is resampled (24 -> 32), as the training views are
    again = ExemplarView().apply(_tensor(images), np.random.default_rng(5), train=False, stats=CIFAR10)["patch"]
    assert again.shape == (4, 3, 32, 32) and again.dtype == np.float32
    np.testing.assert_array_equal(again, ExemplarView().apply(_tensor(images), rng, train=False, stats=CIFAR10)["patch"])


# --------------------------------------------------------------------------- the transformations


def test_a_pure_translation_moves_a_marker_by_the_shift_and_a_rotation_turns_the_patch():
    rng = np.random.default_rng(1)
    images = rng.random((1, 3, 32, 32), dtype=np.float32)
    x0, y0 = np.array([5]), np.array([3])
    one, zero = np.ones(1), np.zeros(1)
    crop = images[0, :, 3:27, 5:29]
    shifted = transform_seeds(torch.from_numpy(images), x0, y0, 24, 24, one, zero, np.array([2.0]), np.array([-3.0]))
    # the window moves 2 px right and 3 px up: output (i, j) is source (3 + i - 3, 5 + j + 2)
    np.testing.assert_allclose(shifted[0, :, 3:, :-2], images[0, :, 3:24, 7:29], atol=1e-6)
    turned = transform_seeds(torch.from_numpy(images), x0, y0, 24, 24, one, np.array([math.pi / 2]), zero, zero)
    # θ = 90°: the content turns a quarter counter-clockwise on screen, numpy's rot90
    np.testing.assert_allclose(turned[0], np.rot90(crop, k=1, axes=(1, 2)), atol=1e-5)
    doubled = transform_seeds(torch.from_numpy(images), x0, y0, 24, 12, np.array([1.0]), zero, zero, zero)
    # 12 outputs over the 24-px window: each samples between two source pixels (a 2x2 mean)
    np.testing.assert_allclose(doubled[0], crop.reshape(3, 12, 2, 12, 2).mean(axis=(2, 4)), atol=1e-6)


def test_drawn_translations_scales_and_rotations_stay_in_the_papers_ranges():
    images = np.repeat(_blob((16, 16)), 400, axis=0)  # the seed is centred on the blob
    translated = ExemplarView(size=24, scale=(1.0, 1.0), rotation=0.0, **GEOMETRY_ONLY)
    out = translated.apply(_tensor(images), np.random.default_rng(0), train=True, stats=IDENTITY)["patch"]
    shifts = np.array([_centroid(x) for x in out]) - 12  # output = source pixels at this size
    assert np.abs(shifts).max() <= 0.2 * 24 + 0.05  # the blob moves against the window
    assert np.abs(shifts).max() > 0.18 * 24 and np.abs(shifts).mean() > 1.5  # and uses the range
    blob = np.repeat(_blob((16, 16), sigma=3.0), 400, axis=0)
    scaled = ExemplarView(size=24, translation=0.0, rotation=0.0, **GEOMETRY_ONLY)
    out = scaled.apply(_tensor(blob), np.random.default_rng(0), train=True, stats=IDENTITY)["patch"]
    ys, xs = np.mgrid[:24, :24] + 0.5
    radius = np.array([math.sqrt((x[0] * ((xs - 12) ** 2 + (ys - 12) ** 2)).sum() / x[0].sum()) for x in out])
    # a window s times the seed shows the blob (rms radius sqrt(2) sigma) 1/s times as large
    scale = math.sqrt(2) * 3.0 / radius
    assert scale.min() >= 0.7 - 0.03 and scale.max() <= 1.4 + 0.03
    assert scale.min() < 0.75 and scale.max() > 1.3  # both ends reached
    assert np.median(scale) == pytest.approx(1.0, abs=0.06)  # log-uniform: the median factor is 1
    ys, xs = np.mgrid[:32, :32] + 0.5
    bar = np.exp(-((xs - 16) ** 2 / (2 * 6.0 ** 2) + (ys - 16) ** 2 / (2 * 1.5 ** 2)))  # horizontal
    bars = np.repeat(np.rint(255 * bar).astype(np.uint8)[None, :, :, None], 3, axis=3).repeat(400, axis=0)
    rotated = ExemplarView(size=24, translation=0.0, scale=(1.0, 1.0), **GEOMETRY_ONLY)
    out = rotated.apply(_tensor(bars), np.random.default_rng(0), train=True, stats=IDENTITY)["patch"][:, 0]
    ys, xs = np.mgrid[:24, :24] - 11.5
    moments = [((x * xs * xs).sum(), (x * ys * ys).sum(), (x * xs * ys).sum()) for x in out]
    angles = np.degrees([0.5 * math.atan2(2 * xy, xx - yy) for xx, yy, xy in moments])
    assert np.abs(angles).max() <= 20.5 and np.abs(angles).max() > 18 and np.abs(angles).mean() > 7


def test_contrast_1_scales_the_principal_components_about_the_patch_mean():
    rng = np.random.default_rng(2)
    x = 0.3 + 0.4 * rng.random((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(pca_contrast(x, np.ones((2, 3))), x, atol=1e-6)
    mean = x.mean(axis=(2, 3), keepdims=True)
    # equal factors on every component: V diag(f) Vᵀ = f I
    np.testing.assert_allclose(pca_contrast(x, np.full((2, 3), 0.5)), mean + 0.5 * (x - mean), atol=1e-6)
    # a patch whose colours vary along one direction only: the largest factor (last) scales it
    line = np.stack([0.5 + 0.1 * t for t in (rng.standard_normal((8, 8)),)] * 3)[None].astype(np.float32)
    out = pca_contrast(line, np.array([[1.0, 1.0, 2.0]]))
    m = line.mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(out, np.clip(m + 2 * (line - m), 0, 1), atol=1e-5)


def test_contrast_2_maps_saturation_and_value_and_keeps_the_hue():
    rng = np.random.default_rng(3)
    x = rng.random((2, 3, 4, 4)).astype(np.float32)
    identity = np.tile(np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]), (2, 1, 1))  # (power, factor, shift) x (S, V)
    np.testing.assert_allclose(hsv_contrast(x, identity), x, atol=1e-6)
    # V squared, S unchanged: every channel scales with the new value, c' = c V' / V
    square_v = np.tile(np.array([[1.0, 2.0], [1.0, 1.0], [0.0, 0.0]]), (2, 1, 1))
    value = x.max(axis=1, keepdims=True)
    np.testing.assert_allclose(hsv_contrast(x, square_v), x * value, atol=1e-6)
    # the hue of the hand-made pixel (0.8, 0.4, 0.2): S = 0.75, V = 0.8; S -> S * 0.5 + 0.1 = 0.475
    pixel = np.array([0.8, 0.4, 0.2], dtype=np.float32).reshape(1, 3, 1, 1)
    out = hsv_contrast(pixel, np.array([[[1.0, 1.0], [0.5, 1.0], [0.1, 0.0]]]))[0, :, 0, 0]
    low = 0.8 * (1 - 0.475)  # new min; green keeps its place 1/3 of the way from min to max
    np.testing.assert_allclose(out, [0.8, low + (0.8 - low) / 3, low], atol=1e-6)
    gray = np.full((1, 3, 2, 2), 0.5, dtype=np.float32)
    out = hsv_contrast(gray, np.array([[[1.0, 1.0], [1.0, 1.0], [0.3, 0.0]]]))
    np.testing.assert_allclose(out, 0.5 * (1 - 0.3), atol=1e-6)  # gray stays gray (saturation has no hue)


def test_training_views_are_random_seeded_and_in_the_pixel_range():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    (view,) = Exemplar.views(ExemplarConfig(), 32)
    a = apply_views([view], images, np.random.default_rng(9), stats=IDENTITY)["patch"]
    b = apply_views([view], images, np.random.default_rng(9), stats=IDENTITY)["patch"]
    c = apply_views([view], images, np.random.default_rng(10), stats=IDENTITY)["patch"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and a.min() >= 0 and a.max() <= 1
    assert (view.scale, view.rotation, view.translation, view.pca_contrast, view.sv_power, view.sv_factor,
            view.sv_shift, view.hue) == ((0.7, 1.4), 20.0, 0.2, (0.5, 2.0), (0.25, 4.0), (0.7, 1.4), 0.1, 0.1)


# --------------------------------------------------------------------------- the surrogate classes


def test_every_image_is_a_class_up_to_k_then_k_seeded_images_are():
    torch.testing.assert_close(surrogate_classes(50, 50, 0), torch.arange(50))
    classes = surrogate_classes(1000, 64, seed=3)
    assert classes.dtype == torch.int64 and classes.shape == (1000,)
    seeds = torch.nonzero(classes >= 0).flatten()
    assert len(seeds) == 64 and set(classes[seeds].tolist()) == set(range(64))
    assert torch.equal(classes[seeds], torch.arange(64))  # classes in ascending idx order
    assert ((classes == -1) | (classes >= 0)).all()
    torch.testing.assert_close(surrogate_classes(1000, 64, seed=3), classes)  # stable across calls
    assert not torch.equal(surrogate_classes(1000, 64, seed=4), classes)
    method = _exemplar(num_samples=1000, num_surrogate_classes=64, class_seed=3)
    assert method.num_classes == 64 and method.classifier[-1].out_features == 64
    torch.testing.assert_close(method.surrogate_class, classes)
    assert "surrogate_class" in method.state_dict()
    assert _exemplar(num_samples=100).num_classes == 100  # K = 16,000 > N: one class per image


def test_the_loss_is_the_weighted_cross_entropy_written_out():
    rng = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=rng, dtype=torch.float64)
    classes = torch.tensor([0, 4, -1, 2, -1, 3])
    fraction = 5 / 20
    loss, accuracy = surrogate_loss(logits, classes, fraction)
    by_hand = [math.log(sum(math.exp(v) for v in logits[b].tolist())) - logits[b, classes[b]].item()
               for b in range(6) if classes[b] >= 0]
    assert loss.item() == pytest.approx(sum(by_hand) / (6 * fraction), rel=1e-12)
    hits = [logits[b].argmax().item() == classes[b].item() for b in range(6) if classes[b] >= 0]
    assert accuracy.item() == pytest.approx(sum(hits) / 4)
    every = torch.tensor([0, 4, 1, 2, 1, 3])  # every image a seed: the plain mean
    torch.testing.assert_close(surrogate_loss(logits, every, 1.0)[0], torch.nn.functional.cross_entropy(logits, every))
    # the constant normaliser: two workers' halves average to the whole batch (DDP's gradient mean)
    halves = [surrogate_loss(logits[i:i + 3], classes[i:i + 3], fraction)[0] for i in (0, 3)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, loss)
    assert surrogate_loss(logits[[2, 4]], classes[[2, 4]], fraction)[1].item() == 0  # no seeds: no accuracy


def test_a_training_step_classifies_idx_s_surrogate_class_and_asks_the_device_nothing():
    method = _exemplar(num_samples=40, num_surrogate_classes=16)
    batch = view_batch(Exemplar.views(method.config, 32), 8)
    batch["idx"] = torch.arange(8) * 5
    with count_host_syncs() as syncs:
        out = method.training_step(batch, CTX)
        loss, metrics = out.loss, out.metrics
        loss.backward()
    assert sum(syncs.values()) == 0, dict(syncs)
    with torch.no_grad():
        logits = method.classifier(method.backbone(batch["patch"])).float()
    expected, accuracy = surrogate_loss(logits, method.surrogate_class[batch["idx"]], 16 / 40)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(metrics) == {"loss", "accuracy"} and metrics["accuracy"].item() == pytest.approx(accuracy.item())
    assert all(p.grad is not None for p in method.parameters())


def test_m_transformations_of_each_seed_are_m_samples_of_its_class_in_one_step():
    method = _exemplar(num_samples=40, num_surrogate_classes=16, transformations=3)
    views = Exemplar.views(method.config, 32)
    assert [v.keys() for v in views] == [("patch",), ("patch_2",), ("patch_3",)]
    batch = view_batch(views, 8)
    assert all((batch["patch"] - batch[k]).abs().flatten(1).amax(1).min() > 0 for k in ("patch_2", "patch_3"))
    batch["idx"] = torch.arange(8) * 5
    loss = method.training_step(batch, CTX).loss
    with torch.no_grad():  # one backbone call over the 3 B patches, as BatchNorm saw them
        logits = method.classifier(method.backbone(torch.cat([batch[k] for k in ("patch", "patch_2", "patch_3")])))
    classes = method.surrogate_class[batch["idx"]]
    per_transformation = [surrogate_loss(logits[m * 8:(m + 1) * 8].float(), classes, 16 / 40)[0] for m in range(3)]
    assert loss.item() == pytest.approx(sum(per_transformation).item() / 3, rel=1e-5)
    with pytest.raises(ValueError, match="transformations"):
        ExemplarConfig(transformations=0)


def test_invariance_compares_the_seed_with_one_transformation_of_it():
    method = _exemplar().eval()
    views = Exemplar.invariance_views(method.config, 32)
    assert isinstance(views[0], ExemplarView) and isinstance(views[1], Augmented)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    batch = {k: torch.from_numpy(v) for k, v in apply_views(views, images, rng, train=False, stats=CIFAR10).items()}
    seed_only = ExemplarView().apply(_tensor(images), rng, train=False, stats=CIFAR10)["patch"]
    np.testing.assert_allclose(batch["seed"].numpy(), seed_only, atol=1e-5)
    a, b = method.invariance_pair(batch)
    assert a.shape == b.shape == (4, method.backbone.out_dim)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
    assert (a - b).norm(dim=1).min() > 0


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("field, value", [("num_surrogate_classes", 1), ("patch_fraction", 0.0),
                                          ("scale_min", 1.2), ("scale_max", 0.9), ("pca_contrast", 0.5),
                                          ("hue", 0.6), ("head_hidden_dim", -1), ("temperature", -0.1)])
def test_config_refuses_out_of_range_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ExemplarConfig.from_flat({field: value})


@pytest.mark.parametrize("field, value", [("patch_fraction", 1.5), ("scale", (0.0, 1.0)), ("scale", (1.4, 0.7)),
                                          ("sv_power", (1.0,)), ("rotation", -5.0), ("hue", 0.7), ("size", 0)])
def test_view_refuses_bad_fields_naming_them(field, value):
    with pytest.raises(ValueError, match=field):
        ExemplarView(**{field: value})


def test_the_heads_and_a_method_needing_two_images():
    linear = _exemplar(head_hidden_dim=0).classifier
    assert len(linear) == 1 and isinstance(linear[0], torch.nn.Linear) and linear[0].out_features == 100
    paper = _exemplar().classifier  # Linear(f, 128) -> ReLU -> Linear(K)
    assert [type(m) for m in paper] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert paper[0].out_features == 128 and paper[2].bias is not None
    cosine = _exemplar(temperature=0.1).classifier[-1]
    x = torch.randn(3, 128, dtype=torch.float64)
    w = cosine.weight.detach().double()
    by_hand = [[(x[i] @ w[k] / (x[i].norm() * w[k].norm())).item() / 0.1 for k in range(100)] for i in range(3)]
    torch.testing.assert_close(cosine.double()(x), torch.tensor(by_hand, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_samples"):
        _exemplar(num_samples=1)
