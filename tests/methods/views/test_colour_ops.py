"""The photometric ops of ``methods/views/colour.py`` against torchvision's functional ops on the same
parameters, sample by sample, and the probabilities of each op through ``ImageView``, statistically."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as TV
import torchvision.transforms.v2.functional as TF
from method_testing import denormalise, random_images

from sslab.methods.views import CIFAR10, ImageView, apply_views, colour
from sslab.methods.views.image import random_resized_crop

STATS = CIFAR10


# --------------------------------------------------------------------------- photometric ops vs torchvision


def _float_images(n: int, h: int = 12, w: int = 14, seed: int = 0) -> np.ndarray:
    """float32 n x 3 x h x w in [0, 1], from uint8 so that channel ties and gray pixels occur."""
    x = np.random.default_rng(seed).integers(0, 256, (n, 3, h, w)).astype(np.float32) / 255
    x[0] = x[0, :1]  # one gray image
    x[1, :, :2] = 1.0  # saturated and black corners
    x[1, :, -2:] = 0.0
    x[2, 1] = x[2, 0]  # red == green everywhere (ties in the max)
    return x


def test_adjust_hue_matches_torchvision_per_sample():
    x = _float_images(24)
    shifts = np.random.default_rng(1).uniform(-0.5, 0.5, 24).astype(np.float32)
    shifts[:4] = [0.0, 0.5, -0.5, 1 / 3]
    got = colour.adjust_hue(x, shifts)
    for i in range(len(x)):
        want = TF.adjust_hue(torch.from_numpy(x[i]), float(shifts[i])).numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-5, err_msg=f"sample {i}, shift {shifts[i]}")


def test_apply_jitter_matches_torchvision_ops_in_the_given_order():
    n = 48
    x = _float_images(n, seed=2)
    rng = np.random.default_rng(3)
    factors = np.empty((n, 4), dtype=np.float32)
    factors[:, :3] = rng.uniform(0.2, 1.8, (n, 3))
    factors[:, 3] = rng.uniform(-0.5, 0.5, n)
    order = np.argsort(rng.random((n, 4)), axis=1)
    order[:8, :3] = np.argsort(rng.random((8, 3)), axis=1)  # some rows without hue, as a 3-op jitter
    order[:8, 3] = order[:8, 2]  # (an op repeated is applied twice: both sides do so)
    got = colour.apply_jitter(x.copy(), factors, order)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(n):
        want = torch.from_numpy(x[i])
        for op in order[i]:
            want = ops[op](want, float(factors[i, op]))
        np.testing.assert_allclose(got[i], want.numpy(), atol=2e-5, err_msg=f"sample {i}, order {order[i]}")


def test_random_color_jitter_is_torchvision_color_jitter_with_the_documented_draws():
    """ColorJitter(b, c, s, h) with its random order of 4 ops, on parameters re-drawn in the documented order."""
    n, strengths = 40, (0.4, 0.3, 0.2, 0.1)
    x = _float_images(n, seed=4)
    got = colour.random_color_jitter(x.copy(), np.random.default_rng(9), strengths)
    rng = np.random.default_rng(9)
    bcs = rng.uniform([0.6, 0.7, 0.8], [1.4, 1.3, 1.2], (n, 3))
    hue = rng.uniform(-0.1, 0.1, n)
    order = np.argsort(rng.random((n, 4)), axis=1)
    assert len({tuple(o) for o in order}) > 12  # the order really varies (24 possible)
    for i in range(n):
        params = dict(fn_idx=torch.from_numpy(order[i]), brightness_factor=float(np.float32(bcs[i, 0])),
                      contrast_factor=float(np.float32(bcs[i, 1])), saturation_factor=float(np.float32(bcs[i, 2])),
                      hue_factor=float(np.float32(hue[i])))
        want = TV.ColorJitter(*strengths).transform(torch.from_numpy(x[i]), params).numpy()
        np.testing.assert_allclose(got[i], want, atol=2e-5, err_msg=f"sample {i}")


def test_separate_strengths_brightness_only():
    """jitter=(0.4, 0, 0, 0): each sample is scaled by one factor in [0.6, 1.4], nothing else happens."""
    x = np.random.default_rng(0).uniform(0.05, 0.7, (400, 3, 4, 4)).astype(np.float32)  # no clipping at 1.4
    y = colour.random_color_jitter(x.copy(), np.random.default_rng(1), (0.4, 0.0, 0.0, 0.0))
    ratio = y / x
    per_sample = ratio.reshape(400, -1)
    np.testing.assert_allclose(per_sample, np.broadcast_to(per_sample[:, :1], per_sample.shape), rtol=1e-5)
    f = per_sample[:, 0]
    assert 0.6 <= f.min() < 0.62 and 1.38 < f.max() <= 1.4


def test_hue_only_keeps_each_pixels_channel_extremes():
    """A hue rotation keeps value (max) and the min channel per pixel; only the middle channel and the
    positions change."""
    view = ImageView(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, jitter=(0, 0, 0, 0.5), grayscale=0.0)
    images = random_images(32)
    out = denormalise(apply_views([view], images, np.random.default_rng(0), stats=STATS)["image"])
    src = images.transpose(0, 3, 1, 2) / np.float32(255)
    np.testing.assert_allclose(out.max(axis=1), src.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(out.min(axis=1), src.min(axis=1), atol=1e-5)
    assert np.abs(out - src).max() > 0.3  # the hue did move


@pytest.mark.parametrize("kernel_size", [3, 5, 23])
def test_gaussian_blur_matches_torchvision_per_sample(kernel_size):
    x = _float_images(6, 32, 30, seed=5)
    sigmas = np.array([0.1, 0.5, 1.0, 1.5, 2.0, 3.7])
    got = colour.gaussian_blur(x, sigmas, kernel_size)
    for i in range(len(x)):
        want = TF.gaussian_blur(torch.from_numpy(x[i]), [kernel_size, kernel_size], [float(sigmas[i])] * 2)
        np.testing.assert_allclose(got[i], want.numpy(), atol=1e-5, err_msg=f"sigma {sigmas[i]}")


def test_blur_kernel_size_is_simclrs_ten_percent_odd():
    assert [colour.blur_kernel_size(s) for s in (8, 10, 32, 64, 96, 224)] == [1, 1, 3, 7, 9, 23]


def test_solarize_matches_torchvision():
    x = _float_images(4)
    x[0, 0, 0, :3] = [0.5, np.nextafter(np.float32(0.5), np.float32(0)), 1.0]  # the threshold is inclusive
    np.testing.assert_array_equal(colour.solarize(x), TF.solarize(torch.from_numpy(x), 0.5).numpy())


# --------------------------------------------------------------------------- probabilities through ImageView

_STILL = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, grayscale=0.0)  # geometry off (size as input)


def _changed_fraction(view: ImageView, n: int = 2000, seed: int = 0) -> float:
    images = random_images(n, view.size, seed=seed)
    out = denormalise(apply_views([view], images, np.random.default_rng(seed), stats=STATS)[view.name])
    src = images.transpose(0, 3, 1, 2) / np.float32(255)
    return float((np.abs(out - src) > 1e-4).any(axis=(1, 2, 3)).mean())


@pytest.mark.parametrize("field, p, extra", [
    ("blur_prob", 0.5, dict(jitter=0.0, blur_sigma=(0.5, 2.0))),  # sigma >= 0.5 so every blur shows
    ("solarize_prob", 0.3, dict(jitter=0.0)),
    ("jitter_prob", 0.8, dict(jitter=(0.4, 0.4, 0.4, 0.1))),
])
def test_probabilities_hold_statistically(field, p, extra):
    """2000 images: the fraction changed is p within 5 binomial standard deviations (~0.05)."""
    fraction = _changed_fraction(ImageView(**_STILL, **extra, **{field: p}))
    assert abs(fraction - p) < 5 * math.sqrt(p * (1 - p) / 2000), fraction
    assert _changed_fraction(ImageView(**_STILL, **extra, **{field: 1.0}), n=200) == 1.0
    assert _changed_fraction(ImageView(**_STILL, **extra, **{field: 0.0}), n=200) == 0.0


def test_blur_and_solarize_through_image_view_are_the_functional_ops():
    images = random_images(16)
    src = images.transpose(0, 3, 1, 2) / np.float32(255)
    solar = denormalise(apply_views([ImageView(**_STILL, jitter=0.0, solarize_prob=1.0)], images,
                                     np.random.default_rng(0), stats=STATS)["image"])
    np.testing.assert_allclose(solar, colour.solarize(src), atol=1e-5)
    blurred = denormalise(apply_views([ImageView(**_STILL, jitter=0.0, blur_prob=1.0)], images,
                                       np.random.default_rng(0), stats=STATS)["image"])
    rng = np.random.default_rng(0)
    random_resized_crop(rng, 16, 32, 32, (1.0, 1.0), (1.0, 1.0))  # the crop's draws come first
    sigmas = rng.uniform(0.1, 2.0, 16)  # then, with p = 1, one sigma per image and nothing else
    np.testing.assert_allclose(blurred, colour.gaussian_blur(src, sigmas, 3), atol=1e-5)
