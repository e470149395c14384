"""Relative patch location: the label of every neighbour, colour dropping, the loss against a
hand-written cross-entropy, BatchNorm's running estimates, invariance views, config validation."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from method_testing import CTX, build_method, view_batch

from sslab.methods.pretext.relative_location import RelativeLocation, RelativeLocationConfig
from sslab.methods.views import CIFAR10, ImageView, Normalization, Uint8Pixels, apply_views
from sslab.methods.views.patch_pair import DROP_NOISE, NEIGHBOUR_OFFSETS, PatchPairView, drop_colours

RAW = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # outputs stay in pixel units
#: p + 2 g ... : 3·8 + 2·3 + 2·1 = 32, so the whole image is the layout, pixel for pixel
EXACT = dict(patch_size=8, gap=3.0, jitter=1.0, crop_scale=(1.0, 1.0), colour_drop="none")


def _position_image(n: int) -> np.ndarray:
    """n copies of a 32-px image whose red channel is 8 x and green 8 y (x, y: pixel column, row)."""
    ramp = 8 * np.arange(32, dtype=np.uint8)
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    image[..., 0], image[..., 1] = ramp[None, :], ramp[:, None]
    return np.repeat(image[None], n, axis=0)


def _top_left(patches: np.ndarray, p: int) -> np.ndarray:
    """(row, column) of each patch's top-left corner in the image, from its mean ramp values.

    Bilinear sampling of a linear ramp is exact: sample k of a patch whose corner is at t reads
    8 (t + k + 0.5 - 0.5) / 255, so the patch mean is 8 (t + (p - 1) / 2) / 255."""
    mean = patches[:, :2].mean(axis=(2, 3)) * 255 / 8  # n x (x, y)
    return mean[:, ::-1] - (p - 1) / 2


def _method(**config) -> RelativeLocation:
    return build_method(RelativeLocation, **config)


# --- the view ------------------------------------------------------------------------------------
def test_label_is_the_neighbours_cell_around_the_centre_within_gap_and_jitter_bounds():
    view = PatchPairView(**EXACT)
    assert view.layout == 32
    n = 800
    out = apply_views([view], _position_image(n), np.random.default_rng(0), stats=RAW)
    labels = out["patch_label"]
    assert labels.dtype == np.int64 and set(labels.tolist()) == set(range(8))
    assert np.bincount(labels).min() > n / 8 * 0.6  # drawn uniformly
    centre, neighbour = _top_left(out["patch_centre"], 8), _top_left(out["patch_neighbour"], 8)
    step = 8 + 3.0  # p + g
    # the centre sits in the middle cell, moved by at most the jitter
    assert np.all(np.abs(centre - (1.0 + step)) <= 1.0 + 1e-3)
    offset = neighbour - centre  # n x (row, col)
    cells = np.asarray(NEIGHBOUR_OFFSETS)[labels]
    np.testing.assert_array_equal(np.rint(offset / step), cells)  # 0 1 2 / 3 . 4 / 5 6 7
    assert np.all(np.abs(offset - step * cells) <= 2 * 1.0 + 1e-3)  # both patches jittered by <= j
    assert np.abs(offset - step * cells).max() > 1.0  # ... and the jitter is used
    apart = np.where(cells != 0, np.abs(offset) - 8, np.inf).min(axis=1)
    assert apart.min() >= 3.0 - 2 * 1.0 - 1e-3  # a gap of at least g - 2j along the separating axis
    for corner in (centre, neighbour):  # inside the image, never reading its clamped border
        assert corner.min() >= -1e-3 and corner.max() <= 32 - 8 + 1e-3


def test_evaluation_form_is_deterministic_unjittered_and_cycles_the_labels():
    view = PatchPairView(**{**EXACT, "colour_drop": "drop"})
    a = apply_views([view], _position_image(10), np.random.default_rng(0), train=False, stats=RAW)
    b = apply_views([view], _position_image(10), np.random.default_rng(1), train=False, stats=RAW)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    np.testing.assert_array_equal(a["patch_label"], np.arange(10) % 8)
    offset = _top_left(a["patch_neighbour"], 8) - _top_left(a["patch_centre"], 8)
    np.testing.assert_allclose(offset, 11.0 * np.asarray(NEIGHBOUR_OFFSETS)[a["patch_label"]], atol=1e-3)
    np.testing.assert_allclose(_top_left(a["patch_centre"], 8), 12.0, atol=1e-3)  # j + p + g: no jitter
    assert np.ptp(a["patch_centre"][:, 2]) == 0  # no colour dropped: the blue channel is the image's 0


def test_colour_dropping_keeps_exactly_one_channel_per_patch_and_fills_the_others_with_noise():
    stats = Normalization((0.2, 0.5, 0.7), (1.0, 1.0, 1.0))
    images = np.random.default_rng(5).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    cut = dict(patch_size=8, gap=4.0, jitter=0.5)
    plain = apply_views([PatchPairView(**cut, colour_drop="none")], images, np.random.default_rng(0), stats=stats)
    drop = apply_views([PatchPairView(**cut, colour_drop="drop")], images, np.random.default_rng(0), stats=stats)
    np.testing.assert_array_equal(plain["patch_label"], drop["patch_label"])  # the same patches were cut
    kept = {}
    for key in ("patch_centre", "patch_neighbour"):
        same = np.all(plain[key] == drop[key], axis=(2, 3))  # n x 3: channel unchanged
        assert np.all(same.sum(axis=1) == 1)  # exactly one channel kept per patch
        others = drop[key][~same]  # the dropped channels, normalised: fill - mean = 0, plus noise
        assert np.abs(others).max() <= DROP_NOISE + 1e-6 and others.std() > DROP_NOISE / 4
        kept[key] = same.argmax(axis=1)
        assert set(kept[key].tolist()) == {0, 1, 2}
    assert np.mean(kept["patch_centre"] != kept["patch_neighbour"]) > 0.4  # drawn per patch


def test_colour_drop_probability_and_grayscale_per_image():
    x = np.random.default_rng(0).random((400, 3, 4, 4), dtype=np.float32)
    half = drop_colours(x, np.random.default_rng(1), 0.5, (0.5, 0.5, 0.5))
    untouched = np.all(half == x, axis=(1, 2, 3))
    assert 0.35 < untouched.mean() < 0.65
    assert drop_colours(x, np.random.default_rng(1), 0.0, (0.5, 0.5, 0.5)) is x
    images = np.random.default_rng(2).integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    out = apply_views([PatchPairView(colour_drop="grayscale", colour_drop_prob=0.66)], images,
                      np.random.default_rng(3), stats=RAW)
    gray = {k: np.all(np.ptp(out[k], axis=1) < 1e-6, axis=(1, 2)) for k in ("patch_centre", "patch_neighbour")}
    np.testing.assert_array_equal(gray["patch_centre"], gray["patch_neighbour"])  # one draw per image
    assert 0.55 < gray["patch_centre"].mean() < 0.77


def test_output_size_resamples_the_same_patch_and_uint8_transfer_keeps_labels_int64():
    images = _position_image(16)
    cut = apply_views([PatchPairView(**EXACT)], images, np.random.default_rng(0), stats=RAW)
    big = apply_views([PatchPairView(**EXACT, output_size=16)], images, np.random.default_rng(0), stats=RAW)
    assert big["patch_centre"].shape == (16, 3, 16, 16)
    np.testing.assert_allclose(big["patch_centre"].mean(axis=(2, 3)), cut["patch_centre"].mean(axis=(2, 3)),
                               atol=1e-5)  # the same region of the image
    sent = apply_views([PatchPairView()], images, np.random.default_rng(0), stats=Uint8Pixels(RAW.mean, RAW.std))
    assert sent["patch_centre"].dtype == np.uint8 and sent["patch_label"].dtype == np.int64


def test_dc_layout_scaled_to_the_image_size():
    view = PatchPairView.for_image_size(32)
    assert (view.patch_size, view.gap, view.jitter) == (8, 4.0, pytest.approx(8 * 7 / 96))
    assert PatchPairView.for_image_size(224).patch_size == 54  # 224 · 96 / 398
    with pytest.raises(ValueError, match="image_size"):
        PatchPairView.for_image_size(10)


@pytest.mark.parametrize("field,value", [("patch_size", 0), ("gap", -1.0), ("jitter", float("nan")),
                                         ("crop_scale", (0.5, 0.2)), ("colour_drop", "gray"),
                                         ("colour_drop_prob", 1.5), ("output_size", -1), ("name", "")])
def test_view_fields_are_validated_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        PatchPairView(**{field: value})


# --- the method ----------------------------------------------------------------------------------
def test_loss_is_the_cross_entropy_of_the_neighbours_position_written_out():
    method = _method().double()
    batch = {k: v.double() if v.is_floating_point() else v
             for k, v in view_batch(RelativeLocation.views(method.config, 32), 12).items()}
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    with torch.no_grad():
        logits = method.logits(batch["patch_centre"], batch["patch_neighbour"])  # train mode: same batch statistics
    labels = batch["patch_label"].tolist()
    terms = [-logits[i, y].item() + math.log(sum(math.exp(z) for z in logits[i].tolist()))
             for i, y in enumerate(labels)]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-6)  # the method casts logits to float32
    hits = sum(int(logits[i].argmax()) == y for i, y in enumerate(labels))
    assert metrics["accuracy"].item() == pytest.approx(hits / len(labels))
    assert metrics["loss"].item() == loss.item() and not metrics["loss"].requires_grad


def test_the_classifier_reads_the_centre_then_the_neighbour_of_the_same_image():
    method = _method().eval()
    batch = view_batch(RelativeLocation.views(method.config, 32), 4)
    centre, neighbour = batch["patch_centre"], batch["patch_neighbour"]
    with torch.no_grad():
        logits = method.logits(centre, neighbour)
        for i in range(4):
            row = torch.cat([method.backbone(centre[i:i + 1]), method.backbone(neighbour[i:i + 1])], dim=1)
            torch.testing.assert_close(logits[i], method.classifier(row)[0], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(logits, method.logits(neighbour, centre))  # the order matters


def test_default_head_is_dcs_three_layers_at_twice_the_feature_width():
    method = _method()
    linears = [m for m in method.classifier if isinstance(m, torch.nn.Linear)]
    d = method.backbone.out_dim
    assert [(m.in_features, m.out_features) for m in linears] == [(2 * d, 2 * d), (2 * d, 2 * d), (2 * d, 8)]
    dropped = _method(dropout=0.5, head_layers=2, hidden_dim=16)
    assert [type(m).__name__ for m in dropped.classifier] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear"]


@pytest.mark.parametrize("bn_statistics", ["images", "patches"])
def test_batchnorm_running_estimates_come_from_whole_images_or_from_the_patches(bn_statistics):
    method = _method(bn_statistics=bn_statistics)
    views = RelativeLocation.views(method.config, 32)
    batch = view_batch(views, 8)
    assert ("image" in batch) == (bn_statistics == "images")
    reference = copy.deepcopy(method.backbone).train()
    with torch.no_grad():
        if bn_statistics == "images":
            reference(batch["image"])
        else:
            reference(torch.cat([batch["patch_centre"], batch["patch_neighbour"]]))
    method.training_step(batch, CTX)
    for (name, got), want in zip(method.backbone.state_dict().items(), reference.state_dict().values()):
        if "running" in name:
            torch.testing.assert_close(got, want, rtol=0, atol=0, msg=name)


def test_invariance_compares_the_image_with_its_centre_patch_at_the_image_size():
    method = _method().eval()
    views = RelativeLocation.invariance_views(method.config, 32)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    arrays = apply_views(views, images, rng, train=False, stats=CIFAR10)
    assert arrays["patch_centre"].shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(arrays["clean"], apply_views([ImageView(name="clean")], images, rng,
                                                               train=False, stats=CIFAR10)["clean"])
    a, b = method.invariance_pair({k: torch.from_numpy(v) for k, v in arrays.items()})
    torch.testing.assert_close(a.norm(dim=1), torch.ones(6))
    torch.testing.assert_close(b.norm(dim=1), torch.ones(6))
    assert (a - b).norm(dim=1).min() > 0


@pytest.mark.parametrize("field,value", [("colour_drop", "gray"), ("colour_drop_prob", 1.2), ("head_layers", 0),
                                         ("dropout", 1.0), ("bn_statistics", "both"), ("crop_min_scale", 0.0),
                                         ("gap", -0.5), ("patch_output_size", 2.5), ("hidden_dim", -1)])
def test_config_is_validated_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        RelativeLocationConfig.from_flat({field: value})
