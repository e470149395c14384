"""Context encoder: the masked centre (exactly the centre minus its overlap border), the ×10 weights on
exactly that border, the loss against a hand-written weighted squared error, the adversarial term's
one-backward split of gradients, and the configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sslab.methods.base import DataInfo
from sslab.methods.losses import weighted_mse
from sslab.methods.pretext.context_encoder import ContextEncoder, ContextEncoderConfig, overlap_pixels, overlap_weights
from sslab.methods.views import CIFAR10, apply_views
from sslab.methods.views.corrupted import CorruptedView

from host_syncs import count_host_syncs
from method_testing import CTX, build_method, random_images, view_batch


def _method(size: int = 32, **config) -> ContextEncoder:
    return build_method(ContextEncoder, data=DataInfo(num_samples=8, num_classes=2, image_size=size), **config)


def test_overlap_scales_with_the_image_side():
    assert [overlap_pixels(4 / 128, s) for s in (32, 64, 128)] == [1, 2, 4]
    (view,) = ContextEncoder.views(ContextEncoderConfig(), 128)
    assert view.overlap == 4 and view.keys() == ("masked", "masked_target")  # the weights are fixed: no mask sent


@pytest.mark.parametrize("size, overlap", [(32, 1), (32, 0), (128, 4), (20, 2)])
def test_exactly_the_centre_minus_the_border_is_masked_with_the_mean(size, overlap):
    view = CorruptedView(name="m", size=size, corruption="centre", overlap=overlap)
    out = apply_views([view], random_images(4, size), np.random.default_rng(0), stats=CIFAR10)
    expected = np.zeros((size, size), dtype=bool)
    start, side = size // 4, size // 2
    expected[start + overlap:start + side - overlap, start + overlap:start + side - overlap] = True
    assert out["m_mask"].dtype == np.float32
    np.testing.assert_array_equal(out["m_mask"] > 0, np.broadcast_to(expected, (4, 1, size, size)))
    hole = np.broadcast_to(expected, out["m"].shape)
    np.testing.assert_allclose(out["m"][hole], 0.0, atol=1e-6)  # the dataset mean, normalised
    np.testing.assert_array_equal(out["m"][~hole], out["m_target"][~hole])  # the border and context are kept


def test_uint8_transfer_fills_the_hole_with_the_rounded_mean():
    view = CorruptedView(name="m", corruption="centre", overlap=1)
    out = apply_views([view], random_images(4), np.random.default_rng(0), stats=CIFAR10.for_transfer("uint8"))
    assert out["m"].dtype == np.uint8 and out["m_mask"].dtype == np.float32
    hole = np.broadcast_to(out["m_mask"] > 0, out["m"].shape)
    mean = np.rint(np.asarray(CIFAR10.mean) * 255).astype(np.uint8).reshape(1, 3, 1, 1)
    np.testing.assert_array_equal(out["m"][hole], np.broadcast_to(mean, out["m"].shape)[hole])


@pytest.mark.parametrize("side, overlap", [(16, 1), (64, 4), (8, 0)])
def test_weights_are_ten_exactly_on_the_overlap_border(side, overlap):
    w = overlap_weights(side, overlap, 10.0)[0, 0].numpy()
    border = np.ones((side, side), dtype=bool)
    border[overlap:side - overlap, overlap:side - overlap] = False
    assert (w[border] == 10.0).all() and (w[~border] == 1.0).all()
    assert border.sum() == side * side - (side - 2 * overlap) ** 2


def test_weighted_mse_against_the_hand_written_sum():
    rng = np.random.default_rng(0)
    y, x = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(2, 3, 6, 6))
    w = overlap_weights(6, 1, 10.0, "cpu").double()
    total = 0.0
    for n in range(2):
        for c in range(3):
            for i in range(6):
                for j in range(6):
                    weight = 1.0 if 1 <= i <= 4 and 1 <= j <= 4 else 10.0
                    total += weight * (y[n, c, i, j] - x[n, c, i, j]) ** 2
    got = weighted_mse(torch.from_numpy(y), torch.from_numpy(x), w).item()
    assert got == pytest.approx(total / y.size, rel=1e-12)


def test_step_loss_is_the_weighted_error_on_the_central_square_without_syncs():
    method = _method()
    assert method.discriminator is None and method.unused_parameters() == []
    batch = view_batch(ContextEncoder.views(method.config, 32), images=random_images(4))
    with count_host_syncs() as syncs:
        out = method.training_step(batch, CTX)
        loss, metrics = out.loss, out.metrics
    assert sum(syncs.values()) == 0, dict(syncs)
    with torch.no_grad():
        prediction = method.decoder(method.backbone.features(batch["masked"], ("res5",))["res5"])
    assert prediction.shape == (4, 3, 16, 16)  # res5 is 4 x 4: two upsamplings to the 16-px centre
    error = (prediction - batch["masked_target"][..., 8:24, 8:24]).square()
    weights = torch.ones(16, 16)
    weights[[0, -1], :] = weights[:, [0, -1]] = 10.0
    assert loss.item() == pytest.approx((error * weights).mean().item(), rel=1e-5)
    assert set(metrics) == {"loss", "l2"}


def test_adversarial_term_trains_both_players_in_one_backward():
    lam = 0.25
    method = _method(adversarial_weight=lam)
    batch = view_batch(ContextEncoder.views(method.config, 32), images=random_images(4))
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    assert {"l2", "adversarial_g", "discriminator"} <= set(metrics)
    assert loss.item() == pytest.approx(((1 - lam) * metrics["l2"] + lam * metrics["adversarial_g"]
                                         + metrics["discriminator"]).item(), rel=1e-6)
    loss.backward()
    got = {n: p.grad.clone() for n, p in method.named_parameters()}

    # The reference: each player's loss differentiated on its own, from the same starting point.
    reference = _method(adversarial_weight=lam)
    reference.load_state_dict(method.state_dict())  # BN uses batch statistics: running ones do not matter
    generator = [p for n, p in reference.named_parameters() if not n.startswith("discriminator.")]
    real = batch["masked_target"][..., 8:24, 8:24]
    fake = reference.decoder(reference.backbone.features(batch["masked"], ("res5",))["res5"])
    l2 = weighted_mse(fake, real, reference.loss_weights)
    logits = reference.discriminator(fake)
    adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
    grads_g = torch.autograd.grad((1 - lam) * l2 + lam * adv, generator)  # with respect to the generator only
    d_real, d_fake = reference.discriminator(real), reference.discriminator(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    grads_d = torch.autograd.grad(loss_d, list(reference.discriminator.parameters()))
    names_g = [n for n, _ in reference.named_parameters() if not n.startswith("discriminator.")]
    names_d = ["discriminator." + n for n, _ in reference.discriminator.named_parameters()]
    for name, g in [*zip(names_g, grads_g), *zip(names_d, grads_d)]:
        torch.testing.assert_close(got[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_discriminator_is_built_only_with_an_adversarial_weight():
    assert not any(n.startswith("discriminator") for n, _ in _method().named_parameters())
    method = _method(adversarial_weight=0.001, discriminator_width=4)
    assert method.discriminator(torch.zeros(2, 3, 16, 16)).shape == (2, 1)


def test_invariance_pair_compares_the_whole_and_the_masked_image():
    method = _method().eval()
    arrays = apply_views(ContextEncoder.invariance_views(method.config, 32), random_images(4), np.random.default_rng(0),
                         train=False, stats=CIFAR10)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    np.testing.assert_allclose(arrays["inv_target"], CIFAR10.apply(random_images(4).transpose(0, 3, 1, 2) / 255.0),
                               atol=1e-5)
    f, g = method.invariance_pair(batch)
    assert torch.allclose(f.norm(dim=1), torch.ones(4)) and torch.allclose(g.norm(dim=1), torch.ones(4))
    assert (f - g).norm(dim=1).min() > 0


@pytest.mark.parametrize("field, value", [("overlap", 0.25), ("overlap_weight", 0.0), ("adversarial_weight", 1.0),
                                          ("tap", "fc"), ("discriminator_width", -1)])
def test_invalid_configuration_is_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ContextEncoderConfig.from_flat({field: value})


def test_an_overlap_that_leaves_no_hole_is_refused_naming_it():
    with pytest.raises(ValueError, match="overlap"):
        ContextEncoder.views(ContextEncoderConfig(overlap=0.24), 32)  # 8 px border around a 16-px centre
