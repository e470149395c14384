"""RotNet and its view: the rotation labels against the rotations applied, the crop, the loss, the config."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from method_testing import CTX, view_batch

from sslab.methods.blocks.backbone import Backbone
from sslab.methods.pretext.rotation import Rotation, RotationConfig
from sslab.methods.views import CIFAR10, ImageView, Uint8Pixels, apply_views
from sslab.methods.views.base import Normalization
from sslab.methods.views.rotation import RotationView

#: statistics that leave pixels as they are, so outputs compare with the input directly
IDENTITY = Normalization((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _as_float(images: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W x 3 -> float32 N x 3 x H x W in [0, 1], exactly as ``apply_views`` converts."""
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255))


def _asymmetric(n: int = 1, size: int = 8) -> np.ndarray:
    """Images with no rotational or mirror symmetry: every pixel a distinct value (position-coded)."""
    base = np.arange(size * size * 3).reshape(size, size, 3) % 251
    return np.stack([(base + 7 * i) % 256 for i in range(n)]).astype(np.uint8)


# --- the view ------------------------------------------------------------------------------
def test_each_copy_is_the_input_turned_counter_clockwise_by_its_label():
    images = _asymmetric(3)
    out = apply_views([RotationView(size=8)], images, np.random.default_rng(0), train=False, stats=IDENTITY)
    assert out["rotation"].shape == (3, 4, 3, 8, 8) and out["rotation"].dtype == np.float32
    assert out["rotation_label"].dtype == np.int64 and out["rotation_label"].tolist() == [[0, 1, 2, 3]] * 3
    source = _as_float(images)
    for i in range(3):
        for j, k in enumerate(out["rotation_label"][i]):
            assert torch.equal(torch.from_numpy(out["rotation"][i, j]), torch.rot90(source[i], int(k), dims=(-2, -1)))
    # the official rotate_img (FeatureLearningRotNet dataloader.py), HWC: 90° = flipud(transpose)
    hwc = images[0]
    official = {1: np.flipud(np.transpose(hwc, (1, 0, 2))), 2: np.fliplr(np.flipud(hwc)),
                3: np.transpose(np.flipud(hwc), (1, 0, 2))}
    for k, expected in official.items():
        assert np.array_equal(out["rotation"][0, k], _as_float(expected[None].copy())[0].numpy())
    # counter-clockwise: the top-right pixel goes to the top-left at 90°
    assert np.array_equal(out["rotation"][0, 1][:, 0, 0], out["rotation"][0, 0][:, 0, -1])


def test_one_random_rotation_per_image_is_labelled_with_the_turn_applied():
    images = _asymmetric(64)
    view = RotationView(size=8, all_rotations=False, padding=0, flip=False)  # no crop: compare with the input
    out = apply_views([view], images, np.random.default_rng(1), stats=IDENTITY)
    assert out["rotation"].shape == (64, 3, 8, 8) and out["rotation_label"].shape == (64,)
    labels = out["rotation_label"]
    assert set(labels.tolist()) == {0, 1, 2, 3}
    source = _as_float(images)
    for i, k in enumerate(labels):
        assert torch.equal(torch.from_numpy(out["rotation"][i]), torch.rot90(source[i], int(k), dims=(-2, -1)))
    only = dataclasses.replace(view, rotations=(1, 3))
    assert set(apply_views([only], images, np.random.default_rng(1), stats=IDENTITY)["rotation_label"].tolist()) == {1, 3}


def test_the_crop_is_torchvisions_zero_padded_random_crop_and_flip_shared_by_all_four_copies():
    images = _asymmetric(16, size=12)
    view = RotationView(size=12, padding=3)
    out = apply_views([view], images, np.random.default_rng(5), stats=IDENTITY)
    # the draws, in the view's order: x offset, y offset, flip
    rng = np.random.default_rng(5)
    ox, oy = rng.integers(0, 7, 16) - 3, rng.integers(0, 7, 16) - 3
    flipped = rng.random(16) < 0.5
    assert flipped.any() and not flipped.all() and (ox != 0).any()
    padded = F.pad(_as_float(images), (3, 3, 3, 3))  # zeros, as RandomCrop(size, padding) fills
    for i in range(16):
        crop = padded[i, :, 3 + oy[i]:15 + oy[i], 3 + ox[i]:15 + ox[i]]
        crop = crop.flip(-1) if flipped[i] else crop
        for k in range(4):
            assert torch.equal(torch.from_numpy(out["rotation"][i, k]), torch.rot90(crop, k, dims=(-2, -1)))


def test_evaluation_draws_nothing_and_cycles_through_the_rotations():
    images = _asymmetric(7)
    rng = np.random.default_rng(3)
    state = rng.bit_generator.state
    view = RotationView(name="rotated", size=8, all_rotations=False, rotations=(1, 2, 3))
    out = apply_views([view], images, rng, train=False, stats=IDENTITY)
    assert rng.bit_generator.state == state
    assert out["rotated_label"].tolist() == [1, 2, 3, 1, 2, 3, 1]
    source = _as_float(images)
    for i, k in enumerate(out["rotated_label"]):
        assert torch.equal(torch.from_numpy(out["rotated"][i]), torch.rot90(source[i], int(k), dims=(-2, -1)))


def test_outputs_resize_normalise_and_ship_pixels_as_uint8_but_never_labels():
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    view = RotationView(size=8)
    out = apply_views([view], images, np.random.default_rng(0), train=False, stats=CIFAR10)
    resized = F.interpolate(_as_float(images), size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    np.testing.assert_array_equal(out["rotation"][:, 0], CIFAR10.apply(resized.numpy()))
    pixels = apply_views([view], images, np.random.default_rng(0), stats=Uint8Pixels(CIFAR10.mean, CIFAR10.std))
    assert pixels["rotation"].dtype == np.uint8 and pixels["rotation_label"].dtype == np.int64
    empty = apply_views([view], images[:0], np.random.default_rng(0), stats=CIFAR10)
    assert empty["rotation"].shape == (0, 4, 3, 8, 8) and empty["rotation_label"].shape == (0, 4)
    single = RotationView(all_rotations=False).empty(2)
    assert single["rotation"].shape == (2, 3, 32, 32) and single["rotation_label"].dtype == np.int64


@pytest.mark.parametrize("fields,message", [
    ({"rotations": (0, 4)}, "rotations"), ({"rotations": (1, 1)}, "rotations"), ({"rotations": ()}, "rotations"),
    ({"rotations": [0, 1]}, "rotations"), ({"padding": 32}, "padding"), ({"padding": -1}, "padding"),
    ({"size": 0}, "size"), ({"all_rotations": 1}, "all_rotations"), ({"flip": "yes"}, "flip"), ({"name": ""}, "name"),
])
def test_view_fields_are_validated_naming_the_field(fields, message):
    with pytest.raises(ValueError, match=f"^{message} = "):
        RotationView(**fields)


# --- the method ----------------------------------------------------------------------------
def make(config=None, seed=0):
    torch.manual_seed(seed)
    return Rotation(config or RotationConfig(), Backbone("resnet10", cifar_stem=True, width=4))


def test_official_defaults_and_validation():
    c = RotationConfig()
    assert (c.all_rotations, c.crop_padding, c.head_hidden_dim) == (True, 4, 0)
    assert (c.optim.optimizer, c.optim.base_lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.2, 0.9, 5e-4)
    for field, value in [("all_rotations", 1), ("crop_padding", -1), ("crop_padding", 1.5), ("head_hidden_dim", -1)]:
        with pytest.raises(ValueError, match=f"^{field}"):
            RotationConfig.from_flat({field: value})
    with pytest.raises(ValueError, match="crop_padding = 16 must be smaller than the image size 16"):
        Rotation.views(RotationConfig(crop_padding=16), 16)
    assert Rotation.views(c, 32) == [RotationView(size=32)]
    assert Rotation.views(RotationConfig(all_rotations=False, crop_padding=2), 16) == [
        RotationView(size=16, all_rotations=False, padding=2)]


@pytest.mark.parametrize("all_rotations", [True, False])
def test_loss_is_the_cross_entropy_over_every_rotated_copy(all_rotations):
    config = RotationConfig(all_rotations=all_rotations)
    method = make(config)
    data = view_batch(Rotation.views(config, 16), size=16, idx="arange")
    out = method.training_step(data, CTX)
    loss, metrics = out.loss, out.metrics
    images, labels = data["rotation"], data["rotation_label"]
    if all_rotations:
        assert images.shape == (6, 4, 3, 16, 16) and labels.tolist() == [[0, 1, 2, 3]] * 6
        images, labels = images.reshape(24, 3, 16, 16), labels.reshape(24)
    with torch.no_grad():  # train-mode BatchNorm: the same batch gives the same logits
        logits = method.classifier(method.backbone(images)).double()
    log_p = logits - torch.log(torch.exp(logits).sum(dim=1, keepdim=True))
    expected = -sum(log_p[m, int(labels[m])] for m in range(len(labels))) / len(labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    accuracy = sum(int(logits[m].argmax()) == int(labels[m]) for m in range(len(labels))) / len(labels)
    assert set(metrics) == {"loss", "accuracy"}
    assert metrics["accuracy"].item() == pytest.approx(accuracy) and not metrics["loss"].requires_grad


def test_a_few_steps_learn_to_tell_the_rotations_of_a_fixed_batch_apart():
    config = RotationConfig(crop_padding=0)
    method = make(config)
    data = view_batch(Rotation.views(config, 16), 8, size=16, idx="arange")
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    first = method.training_step(data, CTX).loss
    for _ in range(15):
        loss = method.training_step(data, CTX).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * first.item() and first.item() == pytest.approx(math.log(4), rel=0.3)


def test_mlp_head():
    method = make(RotationConfig(head_hidden_dim=16))
    assert [type(m).__name__ for m in method.classifier] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert method.classifier[-1].out_features == 4


def test_invariance_pair_compares_the_image_with_a_rotated_copy():
    config = RotationConfig()
    views = Rotation.invariance_views(config, 16)
    assert views == [ImageView(name="image", size=16),
                     RotationView(name="rotated", size=16, all_rotations=False, rotations=(1, 2, 3))]
    images = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    out = apply_views(views, images, np.random.default_rng(0), train=False, stats=CIFAR10)
    batch = {k: torch.from_numpy(v) for k, v in out.items()}
    for i, k in enumerate(out["rotated_label"]):  # the pair is the image and the image turned by k ≠ 0
        assert k != 0 and torch.equal(batch["rotated"][i], torch.rot90(batch["image"][i], int(k), dims=(-2, -1)))
    method = make(config).eval()
    f, g = method.invariance_pair(batch)
    assert f.shape == g.shape == (5, 32) and not f.requires_grad
    torch.testing.assert_close(f.norm(dim=1), torch.ones(5))
    torch.testing.assert_close(f, F.normalize(method.backbone(batch["image"]), dim=1))
    assert (f - g).norm(dim=1).min() > 0
