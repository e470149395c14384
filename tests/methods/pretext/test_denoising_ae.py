"""Denoising autoencoder: the corruption (masking noise zeroes exactly ν of the pixels, Gaussian noise
of std σ), the loss against a hand-written squared error, the step and the configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sslab.methods.losses import reconstruction_loss
from sslab.methods.pretext.denoising_ae import DenoisingAE, DenoisingAEConfig
from sslab.methods.views import CIFAR10, Normalization, apply_views
from sslab.methods.views.corrupted import CorruptedView, masking_noise_mask

from host_syncs import count_host_syncs
from method_testing import CTX, build_method, random_images

RAW = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # leaves [0, 1] pixels as they are


def _nonblack_images(size: int = 32) -> np.ndarray:
    return random_images(6, size, low=1)  # no black pixel to begin with


def _method(**config) -> DenoisingAE:
    return build_method(DenoisingAE, **config)


@pytest.mark.parametrize("nu", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_masking_noise_zeroes_exactly_nu_of_the_pixels_in_all_channels(nu):
    view = CorruptedView(name="x", corruption="masking", level=nu, size=16)
    out = apply_views([view], _nonblack_images(size=16), np.random.default_rng(1), stats=RAW)
    corrupted, clean, mask = out["x"], out["x_target"], out["x_mask"]
    assert mask.dtype == np.float32 and mask.shape == (6, 1, 16, 16)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert (mask.sum(axis=(1, 2, 3)) == round(nu * 256)).all()
    zeroed = (corrupted == 0).all(axis=1, keepdims=True)
    np.testing.assert_array_equal(zeroed, mask > 0)  # the source has no black pixel
    np.testing.assert_array_equal(corrupted, clean * (1 - mask))  # the rest is the clean crop


def test_masking_noise_picks_every_pixel_equally_often():
    mask = masking_noise_mask(np.random.default_rng(0), 4000, 4, 4, 0.25)
    frequency = mask.mean(axis=0).ravel()
    assert np.abs(frequency - 0.25).max() < 0.03  # 4000 draws: std 0.007
    assert (mask.sum(axis=(1, 2, 3)) == 4).all()


def test_gaussian_noise_has_std_sigma_and_corrupts_every_pixel():
    gray = np.full((50, 16, 16, 3), 128, dtype=np.uint8)
    view = CorruptedView(name="x", corruption="gaussian", level=0.05, size=16)
    out = apply_views([view], gray, np.random.default_rng(0), stats=RAW)
    noise = out["x"] - out["x_target"]
    assert abs(noise.mean()) < 2e-3 and noise.std() == pytest.approx(0.05, rel=0.02)
    assert (out["x_mask"] == 1).all()


def test_input_and_target_are_the_same_crop_normalised_and_uint8_keeps_the_mask_float():
    images = _nonblack_images()
    view = CorruptedView(name="x", corruption="masking", level=0.3)
    raw = apply_views([view], images, np.random.default_rng(3), stats=RAW)
    normalised = apply_views([view], images, np.random.default_rng(3), stats=CIFAR10)
    np.testing.assert_allclose(normalised["x_target"], CIFAR10.apply(raw["x_target"]), atol=1e-6)
    np.testing.assert_allclose(normalised["x"], CIFAR10.apply(raw["x"]), atol=1e-6)
    as_uint8 = apply_views([view], images, np.random.default_rng(3), stats=CIFAR10.for_transfer("uint8"))
    assert as_uint8["x"].dtype == as_uint8["x_target"].dtype == np.uint8
    assert as_uint8["x_mask"].dtype == np.float32
    np.testing.assert_array_equal(as_uint8["x_mask"], raw["x_mask"])


def test_evaluation_form_is_the_whole_image_and_repeatable():
    images = _nonblack_images()
    view = CorruptedView(name="x", corruption="masking", level=0.3)
    a = apply_views([view], images, np.random.default_rng(5), train=False, stats=RAW)
    b = apply_views([view], images, np.random.default_rng(5), train=False, stats=RAW)
    np.testing.assert_allclose(a["x_target"], images.transpose(0, 3, 1, 2) / 255.0, atol=1e-6)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_reconstruction_loss_against_hand_written_squared_error():
    rng = np.random.default_rng(0)
    y, x = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    m = (rng.random((2, 1, 4, 5)) < 0.4).astype(np.float64)
    total = sum((y[n, c, i, j] - x[n, c, i, j]) ** 2 for n in range(2) for c in range(3) for i in range(4)
                for j in range(5))
    masked = sum((y[n, c, i, j] - x[n, c, i, j]) ** 2 for n in range(2) for c in range(3) for i in range(4)
                 for j in range(5) if m[n, 0, i, j])
    t = torch.from_numpy
    assert reconstruction_loss(t(y), t(x)).item() == pytest.approx(total / y.size, rel=1e-12)
    assert reconstruction_loss(t(y), t(x), t(m)).item() == pytest.approx(masked / (3 * m.sum()), rel=1e-12)
    assert reconstruction_loss(t(y), t(x), t(np.zeros_like(m))).item() == 0.0


@pytest.mark.parametrize("loss_on", ["all", "corrupted"])
def test_step_reconstructs_the_clean_crop_from_the_corrupted_one(loss_on):
    method = _method(loss_on=loss_on, tap="res4")
    arrays = apply_views(DenoisingAE.views(method.config, 32), _nonblack_images(), np.random.default_rng(0), stats=CIFAR10)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with count_host_syncs() as syncs:
        out = method.training_step(batch, CTX)
        loss, metrics = out.loss, out.metrics
    assert sum(syncs.values()) == 0, dict(syncs)
    with torch.no_grad():
        y = method.decoder(method.backbone.features(batch["noised"], ("res4",))["res4"])
    squared = (y - batch["noised_target"]).square()
    if loss_on == "all":
        assert "noised_mask" not in batch  # the view sends the mask only when the loss reads it
        expected = squared.mean()
    else:
        m = batch["noised_mask"]
        expected = (squared * m).sum() / (3 * m.sum())
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(loss.item())


def test_invariance_pair_is_unit_norm_and_zero_without_corruption():
    images = _nonblack_images()
    for level, zero in ((0.0, True), (0.5, False)):
        method = _method(noise_level=level).eval()
        arrays = apply_views(DenoisingAE.invariance_views(method.config, 32), images, np.random.default_rng(0),
                             train=False, stats=CIFAR10)
        f, g = method.invariance_pair({k: torch.from_numpy(v) for k, v in arrays.items()})
        assert torch.allclose(f.norm(dim=1), torch.ones(6)) and torch.allclose(g.norm(dim=1), torch.ones(6))
        assert ((f - g).norm(dim=1).max().item() < 1e-6) == zero


@pytest.mark.parametrize("field, value", [("corruption", "salt"), ("noise_level", 1.5), ("loss_on", "hole"),
                                          ("tap", "res6"), ("decoder_width", -1)])
def test_invalid_configuration_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        DenoisingAEConfig.from_flat({field: value})


@pytest.mark.parametrize("field, kwargs", [("corruption", dict(corruption="blur")), ("level", dict(level=1.2)),
                                           ("level", dict(corruption="gaussian", level=-0.1)),
                                           ("size", dict(size=1))])
def test_invalid_view_is_refused_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        CorruptedView(**kwargs)
