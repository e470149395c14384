"""The colour machinery of colourisation and the split-brain autoencoder: sRGB ↔ Lab, the Lab view,
the in-gamut ab bins, soft encoding, the grey-image mask, the rebalancing weights and the prior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from method_testing import random_images

from sslab.methods.blocks.colour_bins import (ColourPrior, bin_mass, colourful, gamut_bins, rebalancing_weights,
                                              soft_encode)
from sslab.methods.views import CIFAR10, Normalization, Uint8Pixels, apply_views
from sslab.methods.views.lab import LabView, lab_to_srgb, srgb_to_lab

PIXELS = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


# --------------------------------------------------------------------------- sRGB -> Lab


@pytest.mark.parametrize("rgb, lab", [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    # the usual sRGB (D65) references (scikit-image's rgb2lab, Lindbloom's calculator)
    ((1.0, 0.0, 0.0), (53.2408, 80.0925, 67.2032)),
    ((0.0, 1.0, 0.0), (87.7347, -86.1827, 83.1793)),
    ((0.0, 0.0, 1.0), (32.2970, 79.1875, -107.8602)),
])
def test_lab_of_known_colours(rgb, lab):
    np.testing.assert_allclose(srgb_to_lab(np.array(rgb)), lab, atol=0.01)


def test_lab_by_hand_on_both_branches_of_each_curve():
    # mid grey: Y = ((0.5 + 0.055) / 1.055)^2.4, L = 116 Y^(1/3) - 16 (the power branches)
    y = ((0.5 + 0.055) / 1.055) ** 2.4
    np.testing.assert_allclose(srgb_to_lab(np.full(3, 0.5)), (116 * y ** (1 / 3) - 16, 0, 0), atol=0.01)
    # a dark grey: both linear branches, Y = v / 12.92 and L = 116 (7.787 Y + 16/116) - 16
    y = 0.02 / 12.92
    np.testing.assert_allclose(srgb_to_lab(np.full(3, 0.02)), (116 * 7.787 * y, 0, 0), atol=1e-3)


def test_lab_round_trip_and_batch_shape():
    rgb = np.random.default_rng(0).random((4, 3, 5, 6))
    lab = srgb_to_lab(rgb)
    assert lab.shape == rgb.shape
    np.testing.assert_allclose(lab[2, :, 3, 4], srgb_to_lab(rgb[2, :, 3, 4]))
    np.testing.assert_allclose(lab_to_srgb(lab), rgb, atol=1e-6)


# --------------------------------------------------------------------------- the Lab view


def test_lab_view_outputs_the_grey_rendering_and_float_targets():
    view = LabView(chroma=True)
    out = apply_views([view], random_images(4), np.random.default_rng(1), train=False, stats=PIXELS)
    assert set(out) == {"lab", "lab_ab", "lab_l", "lab_chroma"}
    assert out["lab_ab"].shape == (4, 2, 32, 32) and out["lab_l"].shape == (4, 1, 32, 32)
    # evaluation form at the image's own size: the targets are the image's Lab
    lab = srgb_to_lab(random_images(4).transpose(0, 3, 1, 2) / 255.0)
    np.testing.assert_allclose(out["lab_ab"], lab[:, 1:], atol=1e-3)
    np.testing.assert_allclose(out["lab_l"], lab[:, :1], atol=1e-3)
    # the input: one grey in all three channels, of the image's lightness and no colour
    grey = out["lab"]
    np.testing.assert_allclose(grey[:, 0], grey[:, 1], atol=1e-4)
    np.testing.assert_allclose(grey[:, 2], grey[:, 1], atol=1e-4)
    grey_lab = srgb_to_lab(grey)
    np.testing.assert_allclose(grey_lab[:, 0], lab[:, 0], atol=1e-3)
    assert np.abs(grey_lab[:, 1:]).max() < 0.02
    # the chroma image: the colours at L = 50 (clipped to the gamut where they leave it)
    chroma_lab = srgb_to_lab(out["lab_chroma"])
    inside = ((out["lab_chroma"] > 1e-6) & (out["lab_chroma"] < 1 - 1e-6)).all(axis=1)  # not clipped
    assert inside.mean() > 0.5
    np.testing.assert_allclose(chroma_lab[:, 0][inside], 50.0, atol=1e-3)
    np.testing.assert_allclose(chroma_lab[:, 1][inside], lab[:, 1][inside], atol=1e-2)
    np.testing.assert_allclose(chroma_lab[:, 2][inside], lab[:, 2][inside], atol=1e-2)


def test_lab_view_sends_pixels_as_uint8_and_targets_as_float32():
    out = apply_views([LabView(chroma=True)], random_images(4), np.random.default_rng(0),
                      stats=Uint8Pixels(CIFAR10.mean, CIFAR10.std))
    assert out["lab"].dtype == out["lab_chroma"].dtype == np.uint8
    assert out["lab_ab"].dtype == out["lab_l"].dtype == np.float32
    empty = LabView(chroma=True).empty(0)
    assert {k: v.dtype for k, v in empty.items()} == {k: np.float32 for k in LabView(chroma=True).keys()}


def test_lab_view_training_draws_from_the_generator_only():
    view = LabView(scale=(0.3, 1.0))
    a = apply_views([view], random_images(4), np.random.default_rng(5), stats=CIFAR10)
    b = apply_views([view], random_images(4), np.random.default_rng(5), stats=CIFAR10)
    c = apply_views([view], random_images(4), np.random.default_rng(6), stats=CIFAR10)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["lab_ab"], c["lab_ab"])


@pytest.mark.parametrize("field, value", [("scale", (0.0, 1.0)), ("size", 0), ("chroma_lightness", 0.0),
                                          ("chroma_lightness", 100.0), ("name", ""), ("flip", 1)])
def test_lab_view_refuses_bad_fields_naming_them(field, value):
    with pytest.raises(ValueError, match=field):
        LabView(**{field: value})


# --------------------------------------------------------------------------- the bins


def test_the_in_gamut_bins():
    bins = gamut_bins()
    assert bins.shape == (261, 2)  # Q at grid 10 (Zhang's hull: 313)
    assert torch.equal(bins, bins.round()) and bool((bins % 10 == 0).all())
    keys = (bins[:, 0] * 1000 + bins[:, 1]).tolist()
    assert keys == sorted(set(keys))
    # every colour of a dense grid of the whole RGB cube rounds to a bin, and every bin is hit
    levels = np.r_[np.arange(0, 256, 3), 255] / 255.0
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)
    cells = np.round(srgb_to_lab(cube)[1:, :, 0].T / 10).astype(int) * 10
    hit = {(int(a), int(b)) for a, b in np.unique(cells, axis=0)}
    assert hit == {(int(a), int(b)) for a, b in bins.tolist()}


def test_soft_encoding_weights_sum_to_one_peak_at_the_nearest_bin_and_follow_the_gaussian():
    bins = gamut_bins()
    ab = torch.tensor([[[[3.0, 41.0]], [[-2.0, -58.5]]]])  # N=1, 2 x 1 x 2 (two pixels)
    z = soft_encode(ab, bins, neighbours=10, sigma=5.0)
    assert z.shape == (1, 261, 1, 2)
    torch.testing.assert_close(z.sum(dim=1), torch.ones(1, 1, 2))
    assert ((z > 0).sum(dim=1) == 10).all()
    for j, (a, b) in enumerate([(3.0, -2.0), (41.0, -58.5)]):
        d2 = ((bins.double() - torch.tensor([a, b], dtype=torch.float64)) ** 2).sum(1)
        near = torch.argsort(d2)[:10]
        expected = torch.zeros(261, dtype=torch.float64)
        expected[near] = torch.exp(-d2[near] / (2 * 25.0))
        expected /= expected.sum()
        torch.testing.assert_close(z[0, :, 0, j].double(), expected, atol=1e-6, rtol=1e-5)
        assert int(z[0, :, 0, j].argmax()) == int(torch.argmin(d2))


def test_the_grey_image_mask():
    ab = torch.zeros(4, 2, 3, 3)
    ab[0] = 4.9  # every pixel just under the threshold: grey
    ab[1, 0, 2, 2] = 5.1  # one pixel's a above it
    ab[2, 1, 0, 1] = -6.0  # one pixel's b below -5
    assert colourful(ab).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert colourful(ab, threshold=6.0).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_rebalancing_weights_follow_the_formula_and_have_mean_one_under_the_prior():
    prior = torch.tensor([0.7, 0.2, 0.1, 0.0], dtype=torch.float64)
    gamma, alpha = 0.5, 1.0
    w = rebalancing_weights(prior, gamma, alpha)
    raw = [((1 - gamma) * p + gamma / 4) ** -alpha for p in prior.tolist()]
    scale = sum(p * r for p, r in zip(prior.tolist(), raw))
    torch.testing.assert_close(w, torch.tensor([r / scale for r in raw], dtype=torch.float64))
    assert float((prior * w).sum()) == pytest.approx(1.0)
    assert w[3] > w[2] > w[1] > w[0]  # rarer colours weigh more
    w2 = rebalancing_weights(prior, gamma, 2.0)
    assert float((prior * w2).sum()) == pytest.approx(1.0)
    assert float(w2[3] / w2[0]) == pytest.approx(float(w[3] / w[0]) ** 2)
    # a uniform prior, γ = 1 or α = 0: no rebalancing
    for p, g, a in ((torch.full((4,), 0.25), 0.5, 1.0), (prior, 1.0, 1.0), (prior, 0.5, 0.0)):
        torch.testing.assert_close(rebalancing_weights(p, g, a), torch.ones(4, dtype=p.dtype))


def test_the_prior_starts_uniform_and_accumulates_the_non_grey_soft_targets():
    prior = ColourPrior(5)
    torch.testing.assert_close(prior.distribution(), torch.full((5,), 0.2))
    z = torch.zeros(2, 5, 1, 2)
    z[0, 1], z[0, 3, 0, 1] = 0.5, 0.5
    z[0, 2, 0, 0], z[1, 4] = 0.5, 1.0
    prior.accumulate(bin_mass(z, torch.tensor([1.0, 0.0])))  # image 1 is grey: not counted
    torch.testing.assert_close(prior.mass, torch.tensor([0.0, 1.0, 0.5, 0.5, 0.0], dtype=torch.float64))
    torch.testing.assert_close(prior.distribution(), torch.tensor([0.0, 0.5, 0.25, 0.25, 0.0]))
    assert "mass" in prior.state_dict() and prior.mass.dtype == torch.float64
    assert math.isclose(float(prior.distribution().sum()), 1.0, rel_tol=1e-6)
