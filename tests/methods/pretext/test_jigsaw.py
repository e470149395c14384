"""Jigsaw (Noroozi & Favaro 2016): config validation, the permutation-index target, the loss against
a hand-written cross-entropy, BatchNorm's running statistics, the invariance pair."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from method_testing import CTX

from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.permutations import permutation_set
from sslab.methods.pretext.jigsaw import Jigsaw, JigsawConfig
from sslab.methods.views import CIFAR10, ImageView, JigsawView, apply_views
SMALL = {"num_permutations": 100, "tile_dim": 8, "hidden_dim": 16}


def make(seed=0, **overrides):
    torch.manual_seed(seed)
    return Jigsaw(JigsawConfig.from_flat({**SMALL, **overrides}), Backbone("resnet10", cifar_stem=True, width=4))


def cell_images(n, seed=0):
    """uint8 32-px images whose 3 x 3 grid cells (pixel rows/columns 0-10, 11-21, 22-31) are each
    one grey level, nine distinct levels per image: a centred 8-px tile of the evaluation view
    samples inside one cell, so it is constant and names its cell."""
    rng = np.random.default_rng(seed)
    levels = np.stack([rng.permutation(9) * 25 + 20 for _ in range(n)])  # n x 9, distinct per image
    band = np.minimum(np.arange(32) * 3 // 32, 2)  # 0 for 0..10, 1 for 11..21, 2 for 22..31
    cell = band[:, None] * 3 + band[None, :]  # 32 x 32 cell numbers, row-major
    images = levels[:, cell].astype(np.uint8)  # n x 32 x 32
    return np.repeat(images[..., None], 3, axis=3), levels


def jigsaw_batch(config, n=6, seed=0, train=False):
    images, levels = cell_images(n, seed)
    arrays = apply_views(Jigsaw.views(config, 32), images, np.random.default_rng(seed), train=train, stats=CIFAR10)
    return {k: torch.from_numpy(v) for k, v in arrays.items()}, levels


# --- configuration -------------------------------------------------------------------------
def test_paper_defaults_and_symbols():
    c = JigsawConfig()
    assert (c.num_permutations, c.tile_dim, c.hidden_dim, c.dropout) == (1000, 1024, 4096, 0.5)
    assert (c.optim.optimizer, c.optim.base_lr, c.optim.weight_decay, c.optim.momentum) == ("sgd", 0.1, 1e-4, 0.9)
    assert JigsawConfig.symbols()["num_permutations"] == "P"


@pytest.mark.parametrize("field,value,expected", [
    ("num_permutations", 1, "num_permutations (P) = 1 is outside the allowed range [2, 10000]"),
    ("num_permutations", 10001, "num_permutations (P) = 10001 is outside the allowed range [2, 10000]"),
    ("num_permutations", 99.5, "num_permutations (P) = 99.5 must be an integer in [2, 10000]"),
    ("dropout", 1.0, "dropout = 1.0 is outside the allowed range [0, 1)"),
    ("bn_statistics", "batch", "bn_statistics = 'batch' is not one of the allowed values {images, tiles}"),
    ("tile_size", -1, "tile_size = -1 is outside the allowed range [0, inf)"),
])
def test_bad_values_name_the_field(field, value, expected):
    with pytest.raises(ValueError) as raised:
        JigsawConfig.from_flat({field: value})
    assert str(raised.value) == expected


def test_views_carry_p_seed_and_tile_size():
    config = JigsawConfig(num_permutations=100, permutation_seed=3, tile_size=12, bn_statistics="tiles")
    assert Jigsaw.views(config, 32) == [JigsawView(num_permutations=100, permutation_seed=3, output_size=12)]
    assert Jigsaw.invariance_views(config, 32) == Jigsaw.views(config, 32)
    image, jigsaw = Jigsaw.views(JigsawConfig(num_permutations=100), 32)
    assert isinstance(image, ImageView) and jigsaw == JigsawView(num_permutations=100)


def test_the_image_view_of_bn_statistics_images_is_the_evaluation_view():
    """The running statistics follow exactly the pixels kNN and the probes read."""
    image_view = Jigsaw.views(JigsawConfig.from_flat(SMALL), 32)[0]
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    drawn = apply_views([image_view], images, np.random.default_rng(1), train=True, stats=CIFAR10)["image"]
    evaluation = apply_views([ImageView(size=32)], images, np.random.default_rng(1), train=False, stats=CIFAR10)
    np.testing.assert_allclose(drawn, evaluation["image"], atol=1e-5)


# --- the target ----------------------------------------------------------------------------
@pytest.mark.parametrize("num_permutations,seed", [(100, 0), (1000, 3)])
def test_the_label_is_the_index_of_the_permutation_the_view_applied(num_permutations, seed):
    config = JigsawConfig(num_permutations=num_permutations, permutation_seed=seed, bn_statistics="tiles")
    batch, levels = jigsaw_batch(config, n=16, seed=seed)
    tiles, labels = batch["jigsaw"], batch["jigsaw_perm"]
    assert tiles.shape == (16, 9, 3, 8, 8) and labels.dtype == torch.int64
    assert len(set(labels.tolist())) > 1  # not vacuous: several permutations drawn
    perms = permutation_set(num_permutations, seed)
    mean, std = torch.tensor(CIFAR10.mean).reshape(3, 1, 1), torch.tensor(CIFAR10.std).reshape(3, 1, 1)
    for i in range(16):
        perm = perms[labels[i]]  # output tile k is grid cell perm[k]
        expected = torch.stack([(torch.full((3, 8, 8), levels[i, c] / 255.0) - mean) / std for c in perm.tolist()])
        torch.testing.assert_close(tiles[i], expected, rtol=0, atol=1e-5)


# --- the loss ------------------------------------------------------------------------------
@pytest.mark.parametrize("bn_statistics", ["images", "tiles"])
def test_the_loss_is_the_cross_entropy_of_fc8_over_the_permutations(bn_statistics):
    method = make(bn_statistics=bn_statistics, dropout=0.0).double()
    batch, _ = jigsaw_batch(method.config, n=6, seed=1, train=True)
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    # by hand: pooled res5 of each tile, fc6 + ReLU per tile, the 9 concatenated in order,
    # fc7 + ReLU, fc8; the mean over the batch of -log softmax at the label
    reference = copy.deepcopy(method).eval()  # the same weights; BatchNorm on the tiles' batch statistics:
    for m in reference.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats, m.running_mean, m.running_var = False, None, None
    tiles = batch["jigsaw"]
    features = reference.backbone(tiles.flatten(0, 1))
    (w6, b6), (w7, b7), (w8, b8) = [(lin.weight, lin.bias) for lin in (method.fc6[0], method.fc7[0], method.fc8)]
    fc6 = torch.clamp(features @ w6.T + b6, min=0).reshape(len(tiles), -1)
    logits = torch.clamp(fc6 @ w7.T + b7, min=0) @ w8.T + b8
    labels = batch["jigsaw_perm"]
    picked = logits[torch.arange(len(labels)), labels]
    expected = (torch.logsumexp(logits, dim=1) - picked).mean()
    out = method(batch, CTX)
    loss, metrics = out.loss, out.metrics
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)  # fc8 logits go to CE in float32
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["accuracy"].item() == pytest.approx((logits.argmax(1) == labels).double().mean().item())
    assert not metrics["loss"].requires_grad and metrics["loss"].dim() == 0


def test_the_order_of_the_tiles_changes_the_prediction():
    method = make(dropout=0.0).eval()
    batch, _ = jigsaw_batch(method.config, n=4, seed=2, train=True)
    tiles = batch["jigsaw"]
    assert not torch.allclose(method.fc8(method.puzzle_features(tiles)),
                              method.fc8(method.puzzle_features(tiles[:, torch.arange(8, -1, -1)])))


def test_a_model_learns_a_fixed_puzzle():
    method = make(dropout=0.0, bn_statistics="tiles")
    batch, _ = jigsaw_batch(method.config, n=4, seed=3, train=True)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.05, momentum=0.9)
    first = None
    for _ in range(12):
        out = method(batch, CTX)
        loss, metrics = out.loss, out.metrics
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first and metrics["accuracy"].item() > 0.5


# --- BatchNorm -----------------------------------------------------------------------------
def _running(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k}


def test_bn_statistics_images_tracks_the_whole_images_and_never_the_tiles():
    method = make(bn_statistics="images")
    batch, _ = jigsaw_batch(method.config, n=6, seed=4, train=True)
    alone = copy.deepcopy(method.backbone)
    with torch.no_grad():
        alone(batch["image"])  # the images alone, in train mode
    method(batch, CTX).loss.backward()
    after = _running(method.backbone)
    assert after.keys() == _running(alone).keys()
    for key, value in _running(alone).items():
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    method.invariance_pair(batch)  # in train mode too, the tiles leave the estimates alone
    for key, value in _running(alone).items():
        torch.testing.assert_close(_running(method.backbone)[key], value, rtol=0, atol=0)


def test_bn_statistics_tiles_tracks_the_tiles_and_both_modes_train_alike():
    tiles_mode, images_mode = make(bn_statistics="tiles"), make(bn_statistics="images")
    batch, _ = jigsaw_batch(images_mode.config, n=6, seed=5, train=True)
    alone = copy.deepcopy(tiles_mode.backbone)
    with torch.no_grad():
        alone(batch["jigsaw"].flatten(0, 1))
    torch.manual_seed(9)  # the same dropout masks
    loss_tiles = tiles_mode(batch, CTX).loss
    torch.manual_seed(9)
    loss_images = images_mode(batch, CTX).loss
    for key, value in _running(alone).items():
        torch.testing.assert_close(_running(tiles_mode.backbone)[key], value, rtol=0, atol=0)
    # the running estimates differ, the step does not: same loss, same gradients
    assert loss_tiles.item() == loss_images.item()
    loss_tiles.backward()
    loss_images.backward()
    for (name, a), (_, b) in zip(tiles_mode.named_parameters(), images_mode.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)


# --- invariance ----------------------------------------------------------------------------
def test_the_invariance_pair_is_fc7_of_the_tiles_in_grid_order_and_shuffled():
    method = make().eval()
    batch, levels = jigsaw_batch(method.config, n=6, seed=6)
    in_order, shuffled = method.invariance_pair(batch)
    assert in_order.shape == shuffled.shape == (6, 16) and not in_order.requires_grad
    torch.testing.assert_close(in_order.norm(dim=1), torch.ones(6))
    # the tiles in grid order, rebuilt from the cell levels: tile c is cell c
    mean, std = torch.tensor(CIFAR10.mean).reshape(3, 1, 1), torch.tensor(CIFAR10.std).reshape(3, 1, 1)
    grid = torch.stack([torch.stack([(torch.full((3, 8, 8), lv / 255.0) - mean) / std for lv in row])
                        for row in levels.tolist()])
    with torch.no_grad():
        torch.testing.assert_close(in_order, F.normalize(method.puzzle_features(grid), dim=1), rtol=0, atol=1e-5)
        torch.testing.assert_close(shuffled, F.normalize(method.puzzle_features(batch["jigsaw"]), dim=1))
    assert (in_order - shuffled).norm(dim=1).min() > 0  # a non-identity permutation moves fc7


# --- JigsawView.tile_normalization (Noroozi's per-tile mean and std) -----------------------
@pytest.mark.parametrize("train", [True, False])
def test_tile_normalization_standardises_each_tile_and_channel_and_draws_nothing(train):
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    plain = apply_views([JigsawView(num_permutations=100)], images, np.random.default_rng(1), train=train,
                        stats=CIFAR10)
    normalised = apply_views([JigsawView(num_permutations=100, tile_normalization=True)], images,
                             np.random.default_rng(1), train=train, stats=CIFAR10)
    np.testing.assert_array_equal(plain["jigsaw_perm"], normalised["jigsaw_perm"])  # the same draws
    # by hand: each channel of each tile of the plain output, standardised
    x = plain["jigsaw"].astype(np.float64)
    expected = (x - x.mean(axis=(3, 4), keepdims=True)) / x.std(axis=(3, 4), keepdims=True)
    np.testing.assert_allclose(normalised["jigsaw"], expected, atol=1e-4)
    assert Jigsaw.views(JigsawConfig(tile_normalization=True), 32)[1].tile_normalization  # the method's knob


def test_tile_normalization_as_uint8_pixels_stays_in_range_and_refuses_non_bools():
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = apply_views([JigsawView(num_permutations=10, tile_normalization=True)], images,
                      np.random.default_rng(3), stats=CIFAR10.for_transfer("uint8"))["jigsaw"]
    assert out.dtype == np.uint8
    z = CIFAR10.for_transfer("uint8").normalise(torch.from_numpy(out)).double()
    assert z.mean(dim=(3, 4)).abs().max() < 0.1 and (z.std(dim=(3, 4)) - 1).abs().max() < 0.15  # up to rounding, clips
    with pytest.raises(ValueError, match="tile_normalization"):
        JigsawView(tile_normalization=1)
