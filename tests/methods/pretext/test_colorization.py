"""Colourisation (Zhang et al. 2016): the target bins and weights of hand-built images, the loss
against a hand-written formula, the prior's update and a checkpoint resume, the invariance pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from method_testing import build_method, step_context, train_steps, view_batch

from sslab.methods.base import StepOutput
from sslab.methods.blocks.colour_bins import rebalancing_weights
from sslab.methods.losses import soft_cross_entropy
from sslab.methods.pretext.colorization import Colorization, ColorizationConfig, subsample
from sslab.methods.views import CIFAR10, apply_views

CTX = step_context(0, total=10)


def _method(seed: int = 0, **config) -> Colorization:
    return build_method(Colorization, seed=seed, **config)


def _bin(method: Colorization, a: float, b: float) -> int:
    return int(((method.bins - torch.tensor([a, b])) ** 2).sum(1).argmin())


def test_targets_of_hand_built_images():
    method = _method()
    ab = torch.zeros(3, 2, 32, 32)
    ab[0, 0], ab[0, 1] = 30.0, -40.0  # one colour, exactly a bin centre
    ab[1, 0, ::4, ::4] = 20.0  # a colour on the sub-sampled grid only ...
    ab[1, 0, 1::4, 1::4] = 80.0  # ... and another off it (Zhang's data_ab_ss: every 4th pixel)
    # image 2: grey (all ab 0)
    z, v, mask = method.targets(ab)
    assert z.shape == (3, 261, 8, 8) and v.shape == (3, 8, 8)
    assert mask.tolist() == [1.0, 1.0, 0.0]
    assert (z[0].argmax(dim=0) == _bin(method, 30, -40)).all()
    assert (z[1].argmax(dim=0) == _bin(method, 20, 0)).all()
    assert (v[2] == 0).all()  # a grey image trains nothing
    torch.testing.assert_close(v[:2], torch.ones(2, 8, 8))  # uniform prior: weight 1
    # with a prior, each pixel weighs the rebalancing weight of its nearest bin
    method.prior.mass[_bin(method, 30, -40)] = 9.0
    method.prior.mass[_bin(method, 20, 0)] = 1.0
    _, v, _ = method.targets(ab)
    w = rebalancing_weights(torch.tensor([0.9, 0.1] + [0.0] * 259), 0.5, 1.0)
    torch.testing.assert_close(v[0], torch.full((8, 8), float(w[0])))
    torch.testing.assert_close(v[1], torch.full((8, 8), float(w[1])))
    assert float(v[1, 0, 0]) > 1.0 > float(v[0, 0, 0])


def test_target_stride_subsamples_from_the_top_left_pixel():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    assert subsample(x, 4).flatten().tolist() == [0.0, 4.0, 32.0, 36.0]
    assert _method(target_stride=2).targets(torch.zeros(1, 2, 32, 32))[0].shape[-2:] == (16, 16)


def test_soft_cross_entropy_against_the_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 2, dtype=torch.float64, generator=g)
    z = torch.rand(2, 5, 3, 2, dtype=torch.float64, generator=g)
    z = z / z.sum(1, keepdim=True)
    v = torch.rand(2, 3, 2, dtype=torch.float64, generator=g)
    expected = 0.0
    for n in range(2):
        for h in range(3):
            for w in range(2):
                p = np.exp(logits[n, :, h, w].numpy()) / np.exp(logits[n, :, h, w].numpy()).sum()
                expected += float(v[n, h, w]) * -(z[n, :, h, w].numpy() * np.log(p)).sum()
    got = soft_cross_entropy(logits, z, v)
    assert float(got) == pytest.approx(expected / 12, rel=1e-6)


def test_training_step_is_the_rebalanced_cross_entropy_of_the_head_on_res5():
    method = _method()
    method.prior.mass.copy_(torch.rand(261, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    batch = view_batch(method.views(method.config, 32), idx="arange")
    torch.manual_seed(3)
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    z, v, _ = method.targets(batch["lab_ab"])
    logits = method.head(method.backbone.features(batch["lab"], ("res5",))["res5"], (8, 8))
    expected = (v * -(z * F.log_softmax(logits, dim=1)).sum(1)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(metrics) == {"loss"} and not metrics["loss"].requires_grad


def test_after_step_adds_the_non_grey_targets_to_the_prior():
    method = _method()
    batch = view_batch(method.views(method.config, 32), idx="arange")
    batch["lab_ab"][1] = 0.0  # a grey image
    out = method.training_step(batch, CTX)
    method.after_step(batch, out, CTX)
    z, _, mask = method.targets(batch["lab_ab"])
    assert mask[1] == 0
    torch.testing.assert_close(method.prior.mass.float(), (z * mask.reshape(-1, 1, 1, 1)).sum(dim=(0, 2, 3)))
    assert method.kept_in_sync() == [method.prior]
    with pytest.raises(RuntimeError, match="training_step"):  # the step's colour mass is not in the output
        method.after_step(batch, StepOutput(out.loss, out.metrics), CTX)


def test_a_resumed_run_takes_the_same_next_step():
    first = _method(seed=0)
    optimizer = torch.optim.SGD(first.parameters(), lr=0.1)
    batches = [view_batch(first.views(first.config, 32), seed=seed, idx="arange") for seed in range(2)]
    train_steps(first, optimizer, [(batch, CTX) for batch in batches])
    second = _method(seed=9)
    second.load_state_dict(first.state_dict())
    batch = view_batch(first.views(first.config, 32), seed=5, idx="arange")
    expected, got = first.training_step(batch, CTX), second.training_step(batch, CTX)
    assert torch.equal(expected.loss, got.loss)
    first.after_step(batch, expected, CTX)
    second.after_step(batch, got, CTX)
    assert torch.equal(first.prior.mass, second.prior.mass)


def test_the_invariance_pair_is_zero_on_grey_images_only():
    method = _method().eval()
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    grey = np.repeat(colour[..., :1], 3, axis=3)
    for images, zero in ((grey, True), (colour, False)):
        arrays = apply_views(Colorization.invariance_views(method.config, 32), images, rng, train=False,
                             stats=CIFAR10)
        a, b = method.invariance_pair({k: torch.from_numpy(v) for k, v in arrays.items()})
        torch.testing.assert_close(a.norm(dim=1), torch.ones(4))
        distance = (a - b).norm(dim=1)
        assert bool((distance < 1e-3).all()) == zero


@pytest.mark.parametrize("field, value", [("neighbours", 0), ("sigma", 0.0), ("gamma", 1.5), ("alpha", -1.0),
                                          ("target_stride", 0), ("crop_min_scale", 0.0), ("head_width", -1)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ColorizationConfig.from_flat({field: value})
