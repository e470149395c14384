"""Counting: the tiles view (tiles tile the crop, D∘x is its 2 x 2 area mean), eq. 4 against a
hand-written formula, its gradient, the global batch, the method's step and config validation."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from sslab.methods.losses import counting_loss
from sslab.methods.pretext.counting import Counting, CountingConfig
from sslab.methods.views import CIFAR10, Normalization, Uint8Pixels, apply_views
from sslab.methods.views.tiles import TilesView, downsample_and_tile

from global_batch import assert_two_workers_match_one
from host_syncs import count_host_syncs
from method_testing import CTX, build_method, random_images, view_batch

IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))  # outputs stay in [0, 1] pixel units


def _reassemble(tiles: np.ndarray) -> np.ndarray:
    """The 2 x 2 grid of N x 4 x 3 x h x h tiles (row-major), as N x 3 x 2h x 2h."""
    n, _, c, h, _ = tiles.shape
    return tiles.reshape(n, 2, 2, c, h, h).transpose(0, 3, 1, 4, 2, 5).reshape(n, c, 2 * h, 2 * h)


def _area_mean(x: np.ndarray) -> np.ndarray:
    """2 x 2 block means, written out pixel by pixel."""
    n, c, size, _ = x.shape
    out = np.zeros((n, c, size // 2, size // 2), dtype=np.float64)
    for i in range(size // 2):
        for j in range(size // 2):
            out[:, :, i, j] = (x[:, :, 2 * i, 2 * j] + x[:, :, 2 * i + 1, 2 * j] + x[:, :, 2 * i, 2 * j + 1]
                               + x[:, :, 2 * i + 1, 2 * j + 1]) / 4
    return out


# --------------------------------------------------------------------------- the view


def test_each_tile_is_its_quarter_and_down_the_block_mean_on_a_hand_built_crop():
    crop = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    down, tiles = downsample_and_tile(crop)
    assert down.shape == (2, 3, 2, 2) and tiles.shape == (2, 4, 3, 2, 2)
    np.testing.assert_array_equal(tiles[:, 0], crop[:, :, :2, :2])  # top-left
    np.testing.assert_array_equal(tiles[:, 1], crop[:, :, :2, 2:])  # top-right
    np.testing.assert_array_equal(tiles[:, 2], crop[:, :, 2:, :2])  # bottom-left
    np.testing.assert_array_equal(tiles[:, 3], crop[:, :, 2:, 2:])  # bottom-right
    assert down[1, 2, 1, 0] == np.mean(crop[1, 2, 2:4, 0:2])
    np.testing.assert_allclose(down, _area_mean(crop), rtol=0, atol=1e-5)


def test_evaluation_tiles_tile_the_image_exactly_and_down_is_its_area_mean():
    images = random_images(5)
    out = apply_views([TilesView()], images, np.random.default_rng(0), train=False, stats=IDENTITY)
    assert out["count_down"].shape == (5, 3, 16, 16) and out["count_down"].dtype == np.float32
    assert out["count_tiles"].shape == (5, 4, 3, 16, 16) and out["count_tiles"].dtype == np.float32
    source = images.transpose(0, 3, 1, 2).astype(np.float64) / 255
    np.testing.assert_allclose(_reassemble(out["count_tiles"]), source, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["count_down"], _area_mean(source), rtol=0, atol=1e-6)
    again = apply_views([TilesView()], images, np.random.default_rng(5), train=False, stats=IDENTITY)
    assert all(np.array_equal(out[k], again[k]) for k in out)  # deterministic, whatever the generator


def test_training_tiles_tile_one_crop_and_down_is_its_area_mean():
    images = random_images(8)
    out = apply_views([TilesView()], images, np.random.default_rng(1), stats=IDENTITY)
    crops = _reassemble(out["count_tiles"])
    np.testing.assert_allclose(out["count_down"], _area_mean(crops), rtol=0, atol=1e-6)
    source = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert not np.allclose(crops, source, atol=1e-3)  # a random crop, not the image
    again = apply_views([TilesView()], images, np.random.default_rng(1), stats=IDENTITY)
    assert all(np.array_equal(out[k], again[k]) for k in out)  # the same generator state, the same views


def test_a_full_crop_without_photometric_change_is_the_image_or_its_mirror():
    images = random_images(16)
    view = TilesView(crop_scale=(1.0, 1.0), jitter=0.0, grayscale=0.0)
    out = apply_views([view], images, np.random.default_rng(2), stats=IDENTITY)
    crops = _reassemble(out["count_tiles"])
    source = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    plain = np.abs(crops - source).max(axis=(1, 2, 3)) < 1e-5
    mirrored = np.abs(crops - source[..., ::-1]).max(axis=(1, 2, 3)) < 1e-5
    assert (plain | mirrored).all() and plain.any() and mirrored.any()


def test_output_size_resamples_down_and_tiles_and_uint8_transfer_keeps_pixels():
    images = random_images(3)
    view = TilesView(output_size=32)
    out = apply_views([view], images, np.random.default_rng(0), stats=CIFAR10)
    assert out["count_down"].shape == (3, 3, 32, 32) and out["count_tiles"].shape == (3, 4, 3, 32, 32)
    assert view.empty(0)["count_tiles"].shape == (0, 4, 3, 32, 32)
    pixels = apply_views([TilesView()], images, np.random.default_rng(0), stats=Uint8Pixels(CIFAR10.mean, CIFAR10.std))
    assert pixels["count_down"].dtype == np.uint8 and pixels["count_tiles"].dtype == np.uint8


def test_evaluation_of_a_larger_image_resizes_it_to_the_crop_first():
    out = apply_views([TilesView(crop_size=16)], random_images(2, 40), np.random.default_rng(0), train=False,
                      stats=IDENTITY)
    assert out["count_down"].shape == (2, 3, 8, 8)
    np.testing.assert_allclose(out["count_down"], _area_mean(_reassemble(out["count_tiles"])), atol=1e-6)


@pytest.mark.parametrize("field, value", [("crop_size", 31), ("crop_size", 0), ("crop_scale", (0.0, 1.0)),
                                          ("crop_scale", (0.8, 0.5)), ("output_size", -1), ("jitter", -0.1),
                                          ("jitter", (0.4, 0.4, 0.4, 0.7)), ("grayscale", 1.5), ("name", "")])
def test_view_fields_are_validated_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        TilesView(**{field: value})


# --------------------------------------------------------------------------- the loss


def _hand_loss(down, tiles, margin):
    """Eq. 4 written out per image, y = the previous image (the first image's y is the last)."""
    b = len(down)
    pair = contrast = 0.0
    for i in range(b):
        tile_sum = tiles[i, 0] + tiles[i, 1] + tiles[i, 2] + tiles[i, 3]
        pair = pair + ((down[i] - tile_sum) ** 2).sum()
        contrast = contrast + torch.clamp(margin - ((down[i - 1] - tile_sum) ** 2).sum(), min=0)
    return (pair + contrast) / b, pair / b, contrast / b


def _counts(seed: int = 0, b: int = 4, k: int = 3):
    g = torch.Generator().manual_seed(seed)
    down = torch.rand(b, k, generator=g, dtype=torch.float64)
    tiles = torch.rand(b, 4, k, generator=g, dtype=torch.float64) / 4
    return down, tiles


def test_the_loss_is_eq_4_with_the_hinge_both_active_and_inactive():
    down, tiles = _counts()
    down[2] += 5.0  # image 2 is far from image 3's tiles: image 3's hinge is inactive at M = 2
    margin = 2.0
    distances = [float(((down[i - 1] - tiles[i].sum(0)) ** 2).sum()) for i in range(4)]
    assert min(distances) < margin < max(distances)  # both cases occur
    loss, pair, contrast = counting_loss(down, tiles, margin)
    expected = _hand_loss(down, tiles, margin)
    for got, want in zip((loss, pair, contrast), expected):
        assert got.item() == pytest.approx(want.item(), rel=1e-12)
    active = sum(max(0.0, margin - d) for d in distances) / 4
    assert contrast.item() == pytest.approx(active, rel=1e-12)


def test_gradients_match_the_hand_written_formula_and_the_pair_term_its_closed_form():
    down, tiles = _counts(seed=1)
    down[0] += 3.0
    margin = 1.5
    leaves = [down.clone().requires_grad_(), tiles.clone().requires_grad_()]
    hand = [down.clone().requires_grad_(), tiles.clone().requires_grad_()]
    counting_loss(*leaves, margin)[0].backward()
    _hand_loss(*hand, margin)[0].backward()
    for got, want in zip(leaves, hand):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-12, atol=1e-12)
    # d(pair term)/d φ(D∘x) = 2 (φ(D∘x) − Σ_j φ(T_j∘x)) / B
    pair_leaf = down.clone().requires_grad_()
    counting_loss(pair_leaf, tiles, margin)[1].backward()
    torch.testing.assert_close(pair_leaf.grad, 2 * (down - tiles.sum(1)) / len(down), rtol=1e-12, atol=1e-12)


def test_all_zero_counts_cost_the_margin():
    loss, pair, contrast = counting_loss(torch.zeros(3, 5), torch.zeros(3, 4, 5), 10.0)
    assert (loss.item(), pair.item(), contrast.item()) == (10.0, 0.0, 10.0)


def test_the_loss_refuses_bad_shapes_a_single_image_and_a_bad_margin():
    with pytest.raises(ValueError, match="tile_counts"):
        counting_loss(torch.zeros(3, 5), torch.zeros(3, 2, 5), 10.0)
    with pytest.raises(ValueError, match="at least 2 images"):
        counting_loss(torch.zeros(1, 5), torch.zeros(1, 4, 5), 10.0)
    with pytest.raises(ValueError, match="margin"):
        counting_loss(torch.zeros(3, 5), torch.zeros(3, 4, 5), 0.0)


def _total_loss(down_counts, tile_counts, margin):
    return counting_loss(down_counts, tile_counts, margin)[0]


def test_two_workers_equal_one_worker_on_the_global_batch(tmp_path):
    down, tiles = _counts(seed=2, b=6, k=4)
    down[1] += 2.0  # some hinges inactive, including across the workers' boundary
    assert_two_workers_match_one(partial(_total_loss, margin=1.0), {"down_counts": down, "tile_counts": tiles},
                                 tmp_path, same_value=False)


# --------------------------------------------------------------------------- the method


def _method(**config) -> Counting:
    return build_method(Counting, arch="resnet18", num_counts=32, **config)


def test_a_step_is_eq_4_on_one_backbone_call_without_host_syncs():
    method = _method(margin=3.0)
    batch = view_batch(Counting.views(method.config, 32), images=random_images(6))
    calls = []
    method.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape))
    with count_host_syncs() as syncs:
        out = method.training_step(batch, CTX)
        loss, metrics = out.loss, out.metrics
        loss.backward()
    assert sum(syncs.values()) == 0, dict(syncs)
    assert calls == [torch.Size([6 * 5, 3, 16, 16])]  # D∘x and the 4 tiles of 6 images, at 16 px
    method.eval()  # BatchNorm on running statistics, so the counts below are the step's
    with torch.no_grad():
        counts = method.count(torch.cat([batch["count_down"], batch["count_tiles"].flatten(0, 1)])).double()
        eval_loss = method.training_step(batch, CTX).loss
    expected = _hand_loss(counts[:6], counts[6:].unflatten(0, (6, 4)), 3.0)
    assert eval_loss.item() == pytest.approx(expected[0].item(), rel=1e-5)
    assert set(metrics) == {"loss", "pair_term", "contrast_term", "count_norm"}
    assert metrics["loss"].item() == pytest.approx(metrics["pair_term"].item() + metrics["contrast_term"].item())
    assert counts.min() >= 0  # counts are non-negative


def test_tile_size_resamples_what_the_backbone_sees():
    method = _method(tile_size=32)
    (view,) = Counting.views(method.config, 32)
    assert (view.crop_size, view.side, view.crop_scale) == (32, 32, (0.6, 1.0))
    loss = method.training_step(view_batch([view], images=random_images(4)), CTX).loss
    assert torch.isfinite(loss)


def test_the_invariance_pair_is_the_image_against_its_downsampled_upsampled_copy():
    method = _method()
    views = Counting.invariance_views(method.config, 32)
    images = random_images(4)
    arrays = apply_views(views, images, np.random.default_rng(0), train=False, stats=IDENTITY)
    source = images.transpose(0, 3, 1, 2).astype(np.float32) / 255
    np.testing.assert_allclose(arrays["clean"], source, atol=1e-6)
    down = torch.from_numpy(_area_mean(source).astype(np.float32))
    upsampled = torch.nn.functional.interpolate(down, size=(32, 32), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(arrays["scaled_down"], upsampled.numpy(), atol=1e-5)
    method.eval()
    f, g = method.invariance_pair({k: torch.from_numpy(v) for k, v in arrays.items()})
    assert f.shape == g.shape == (4, method.backbone.out_dim)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("field, value", [("margin", 0.0), ("margin", -1.0), ("num_counts", 0),
                                          ("tile_size", -1), ("crop_min_scale", 0.0), ("crop_min_scale", 1.5),
                                          ("grayscale", 2.0), ("color_jitter", -0.5)])
def test_config_values_out_of_range_are_refused_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CountingConfig.from_flat({field: value})
