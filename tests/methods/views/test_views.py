"""Tests of the view protocol, ``apply_views``, ``Normalization`` and the view types (methods/views/).

The default ``ImageView``/``JigsawView`` output is checked against numbers frozen before the
Siamese-family extensions (PIRL's results depend on them); the photometric ops against torchvision,
and their probabilities, in ``test_colour_ops.py``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from method_testing import denormalise, random_images

from sslab.methods.blocks.permutations import permutation_set
from sslab.methods.views import CIFAR10, ImageView, JigsawView, Normalization, View, apply_views

STATS = CIFAR10
MEAN = np.asarray(STATS.mean, dtype=np.float32)
STD = np.asarray(STATS.std, dtype=np.float32)


def _cells_image(n: int, side: int, grid: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Images whose grid cells are distinct constants (per image too); returns images, values n x cells x 3."""
    rng = np.random.default_rng(7)
    values = rng.choice(256, size=(n, grid * grid, 3), replace=True).astype(np.uint8)
    values[:, :, 0] = np.arange(grid * grid) * 25 + 3  # red channel identifies the cell
    cell = side // grid
    images = np.zeros((n, side, side, 3), dtype=np.uint8)
    for k in range(grid * grid):
        r, c = divmod(k, grid)
        images[:, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = values[:, k, None, None, :]
    return images, values


VIEWS = [ImageView(), JigsawView(num_permutations=100)]


@pytest.mark.parametrize("train", [True, False])
def test_shapes_dtypes_keys(train):
    out = apply_views([ImageView(size=24), JigsawView(num_permutations=100, crop_size=27, patch_size=7)],
                      random_images(5, 32, width=40), np.random.default_rng(0), train=train, stats=STATS)
    assert set(out) == {"image", "jigsaw", "jigsaw_perm"}
    assert out["image"].shape == (5, 3, 24, 24) and out["image"].dtype == np.float32
    assert out["jigsaw"].shape == (5, 9, 3, 7, 7) and out["jigsaw"].dtype == np.float32
    assert out["jigsaw_perm"].shape == (5,) and out["jigsaw_perm"].dtype == np.int64
    assert ((out["jigsaw_perm"] >= 0) & (out["jigsaw_perm"] < 100)).all()
    assert all(np.isfinite(v).all() for v in out.values())


def test_custom_names_and_empty_batch():
    views = [ImageView(name="a"), ImageView(name="b", size=16), JigsawView(name="t")]
    out = apply_views(views, random_images(0), np.random.default_rng(0), stats=STATS)
    assert {k: v.shape for k, v in out.items()} == {
        "a": (0, 3, 32, 32), "b": (0, 3, 16, 16), "t": (0, 9, 3, 8, 8), "t_perm": (0,)}


@pytest.mark.parametrize("value", [0, 37, 128, 255])
def test_constant_image_normalises_to_mean_std(value):
    images = np.full((3, 32, 32, 3), value, dtype=np.uint8)
    expected = (value / 255.0 - MEAN) / STD
    out = apply_views([ImageView(), ImageView(name="small", size=20), JigsawView(num_permutations=10)],
                      images, np.random.default_rng(0), train=False, stats=STATS)
    for key in ("image", "small", "jigsaw"):
        np.testing.assert_allclose(np.moveaxis(out[key], -3, -1), np.broadcast_to(expected, np.moveaxis(
            out[key], -3, -1).shape), atol=1e-5, err_msg=key)


def test_deterministic_in_rng_and_varies_with_seed():
    images = random_images(8)
    a = apply_views(VIEWS, images, np.random.default_rng(123), stats=STATS)
    b = apply_views(VIEWS, images, np.random.default_rng(123), stats=STATS)
    c = apply_views(VIEWS, images, np.random.default_rng(124), stats=STATS)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key]), key


def test_eval_image_view_is_plain_resize_of_full_image():
    images = random_images(4)
    out = apply_views([ImageView()], images, np.random.default_rng(0), train=False, stats=STATS)["image"]
    np.testing.assert_allclose(denormalise(out), images.transpose(0, 3, 1, 2) / 255.0, atol=1e-5)
    again = apply_views([ImageView()], images, np.random.default_rng(99), train=False, stats=STATS)["image"]
    np.testing.assert_array_equal(out, again)


@pytest.mark.parametrize("side", [30, 60])
def test_eval_jigsaw_patches_are_cells_reordered_by_permutation(side):
    n, p = 6, 100
    images, values = _cells_image(n, side)
    out = apply_views([JigsawView(num_permutations=p)], images, np.random.default_rng(1), train=False, stats=STATS)
    perms = permutation_set(p).numpy()[out["jigsaw_perm"]]
    patches = denormalise(out["jigsaw"]) * 255  # n x 9 x 3 x 8 x 8
    for i in range(n):
        for k in range(9):
            want = values[i, perms[i, k]].astype(np.float32)[:, None, None]
            np.testing.assert_allclose(patches[i, k], np.broadcast_to(want, (3, 8, 8)), atol=1e-3)
    assert len(set(out["jigsaw_perm"].tolist())) > 1  # permutation still drawn in eval mode


def test_train_jigsaw_patch_comes_from_its_cell_with_jitter():
    """Train mode, no colour, full-image crop: pixel values encode position, so each patch can be traced."""
    n, side = 64, 30
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    image = np.stack([rows * 8, cols * 8, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    view = JigsawView(num_permutations=50, jitter=0.0, grayscale=0.0, crop_scale=(1.0, 1.0))
    out = apply_views([view], np.repeat(image[None], n, axis=0), np.random.default_rng(5), train=True, stats=STATS)
    perms = permutation_set(50).numpy()[out["jigsaw_perm"]]
    pixels = np.rint(denormalise(out["jigsaw"]) * 255 / 8).astype(int)  # n x 9 x 3 x 8 x 8
    offsets = set()
    for i in range(n):
        for k in range(9):
            r, c = divmod(int(perms[i, k]), 3)
            top, left = pixels[i, k, 0, 0, 0], pixels[i, k, 1, 0, 0]
            np.testing.assert_array_equal(pixels[i, k, 0], top + np.arange(8)[:, None] + 0 * np.arange(8))
            np.testing.assert_array_equal(pixels[i, k, 1], left + np.arange(8)[None, :] + 0 * np.arange(8)[:, None])
            dy, dx = top - 10 * r, left - 10 * c
            assert 0 <= dy <= 2 and 0 <= dx <= 2, (i, k, dy, dx)
            offsets.add((dy, dx))
    assert len(offsets) == 9  # every offset of the 10-pixel cell's 3x3 jitter range occurs


def test_train_flip_and_crop_vary_across_batch():
    image = random_images(1)[0]
    batch = np.repeat(image[None], 64, axis=0)
    flip_only = ImageView(scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0, grayscale=0.0)
    out = denormalise(apply_views([flip_only], batch, np.random.default_rng(0), stats=STATS)["image"]) * 255
    plain = image.transpose(2, 0, 1).astype(np.float32)
    is_plain = np.isclose(out, plain, atol=1e-3).all(axis=(1, 2, 3))
    is_mirror = np.isclose(out, plain[:, :, ::-1], atol=1e-3).all(axis=(1, 2, 3))
    assert (is_plain | is_mirror).all() and is_plain.any() and is_mirror.any()

    crops = apply_views([ImageView(flip=False, jitter=0.0, grayscale=0.0)], batch, np.random.default_rng(0),
                        stats=STATS)["image"]
    distinct = {crops[i].tobytes() for i in range(len(crops))}
    assert len(distinct) == len(crops)


def test_train_colour_jitter_and_grayscale():
    image = random_images(1)[0]
    batch = np.repeat(image[None], 32, axis=0)
    base = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)
    jittered = denormalise(apply_views([ImageView(**base, jitter=0.4, grayscale=0.0)], batch,
                                        np.random.default_rng(0), stats=STATS)["image"])
    assert jittered.min() >= -1e-5 and jittered.max() <= 1 + 1e-5
    assert len({jittered[i].tobytes() for i in range(32)}) == 32  # per-sample factors
    assert jittered.mean(axis=(1, 2, 3)).std() > 0.02
    gray = denormalise(apply_views([ImageView(**base, jitter=0.0, grayscale=1.0)], batch,
                                    np.random.default_rng(0), stats=STATS)["image"])
    np.testing.assert_allclose(gray[:, 0], gray[:, 1], atol=1e-5)
    np.testing.assert_allclose(gray[:, 1], gray[:, 2], atol=1e-5)
    # jigsaw patches are jittered independently: within one image, patches differ in gray state
    out = apply_views([JigsawView(num_permutations=10, jitter=0.0, grayscale=0.5)], batch,
                      np.random.default_rng(0), stats=STATS)["jigsaw"]
    patches = denormalise(out)  # n x 9 x 3 x p x p
    is_gray = np.isclose(patches[:, :, 0], patches[:, :, 1], atol=1e-5).all(axis=(2, 3))
    assert is_gray.any(axis=1).any() and (~is_gray).any(axis=1).any()
    assert (is_gray.any(axis=1) & (~is_gray).any(axis=1)).any()


def test_single_permutation_always_index_zero():
    images, values = _cells_image(8, 30)
    out = apply_views([JigsawView(num_permutations=1)], images, np.random.default_rng(3), train=True, stats=STATS)
    assert (out["jigsaw_perm"] == 0).all()
    perm = permutation_set(1).numpy()[0]
    evals = apply_views([JigsawView(num_permutations=1)], images, np.random.default_rng(3), train=False, stats=STATS)
    patches = denormalise(evals["jigsaw"]) * 255
    np.testing.assert_allclose(patches[:, :, 0, 4, 4], values[:, perm, 0].astype(np.float32), atol=1e-3)


def test_all_permutations_index_is_row_of_full_set():
    """P = 9!: a uniform permutation is drawn directly, and its index is its row in permutation_set(9!)."""
    n = 32
    images, values = _cells_image(n, 30)
    out = apply_views([JigsawView()], images, np.random.default_rng(11), train=False, stats=STATS)
    index = out["jigsaw_perm"]
    assert ((index >= 0) & (index < math.factorial(9))).all() and len(set(index.tolist())) == n
    perms = permutation_set(math.factorial(9)).numpy()[index]
    red = np.rint(denormalise(out["jigsaw"])[:, :, 0, 4, 4] * 255)  # n x 9, red = 25 * cell + 3
    np.testing.assert_array_equal((red - 3) / 25, perms)


def test_read_only_input_no_warning():
    images = random_images(4)
    images.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_views(VIEWS, images, np.random.default_rng(0), stats=STATS)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        apply_views(VIEWS, random_images(2).astype(np.float32), np.random.default_rng(0), stats=STATS)
    with pytest.raises(ValueError, match="N x H x W x 3"):
        apply_views(VIEWS, random_images(2)[..., :1], np.random.default_rng(0), stats=STATS)
    with pytest.raises(ValueError, match="distinct name"):
        apply_views([ImageView(), ImageView()], random_images(2), np.random.default_rng(0), stats=STATS)
    with pytest.raises(ValueError, match="patch_size"):
        JigsawView(patch_size=11)
    with pytest.raises(ValueError, match="num_permutations"):
        JigsawView(num_permutations=0)
    with pytest.raises(ValueError, match="scale"):
        ImageView(scale=(0.5, 0.2))


# --------------------------------------------------------------------------- the open view set


@dataclass(frozen=True)
class RotationView:
    """A view type the library does not know: RotNet's rotation by k * 90° (counter-clockwise),
    with k uniform in 0..3 as its label; the unrotated image (k = 0) in evaluation mode."""

    name: str = "rot"

    def keys(self) -> tuple[str, ...]:
        return (self.name, self.name + "_label")

    def empty(self, n: int) -> dict[str, np.ndarray]:
        return {self.name: np.zeros((n, 3, 32, 32), dtype=np.float32), self.name + "_label": np.zeros(n, np.int64)}

    def apply(self, images: torch.Tensor, rng: np.random.Generator, *, train: bool,
              stats: Normalization) -> dict[str, np.ndarray]:
        n = images.shape[0]
        k = rng.integers(0, 4, n) if train else np.zeros(n, dtype=np.int64)
        x = images.numpy()
        rotated = np.stack([np.rot90(x[i], k[i], axes=(1, 2)) for i in range(n)])
        return {self.name: stats.apply(rotated), self.name + "_label": k.astype(np.int64)}


def test_new_view_type_defined_outside_the_library_runs_through_apply_views():
    assert isinstance(RotationView(), View)
    images = random_images(64)
    views = [ImageView(), RotationView()]
    out = apply_views(views, images, np.random.default_rng(0), stats=STATS)
    assert set(out) == {"image", "rot", "rot_label"}
    assert out["rot"].shape == (64, 3, 32, 32) and out["rot_label"].dtype == np.int64
    assert set(out["rot_label"].tolist()) == {0, 1, 2, 3}
    rotated = np.rint(denormalise(out["rot"]) * 255)
    for i in range(64):
        want = np.rot90(images[i].transpose(2, 0, 1), out["rot_label"][i], axes=(1, 2))
        np.testing.assert_allclose(rotated[i], want, atol=1e-3)
    again = apply_views(views, images, np.random.default_rng(0), stats=STATS)
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])
    empty = apply_views(views, random_images(0), np.random.default_rng(0), stats=STATS)
    assert {k: v.shape for k, v in empty.items()} == {"image": (0, 3, 32, 32), "rot": (0, 3, 32, 32),
                                                        "rot_label": (0,)}
    evals = apply_views([RotationView()], images, np.random.default_rng(0), train=False, stats=STATS)
    assert (evals["rot_label"] == 0).all()


def test_two_views_with_the_same_key_are_refused():
    with pytest.raises(ValueError, match="'rot'.*distinct name"):
        apply_views([RotationView(), ImageView(name="rot")], random_images(2), np.random.default_rng(0), stats=STATS)
    with pytest.raises(ValueError, match="'v_1'"):  # a copy's key clashes with another view's name
        apply_views([ImageView(name="v", copies=2), ImageView(name="v_1")], random_images(2), np.random.default_rng(0),
                    stats=STATS)


@pytest.mark.parametrize("thing", [object(), "image", {"name": "image"}])
def test_a_non_view_is_refused_with_type_error(thing):
    with pytest.raises(TypeError, match="View protocol"):
        apply_views([ImageView(), thing], random_images(2), np.random.default_rng(0), stats=STATS)


# --------------------------------------------------------------------------- Normalization


def test_normalization_of_known_images():
    images = np.zeros((4, 2, 2, 3), dtype=np.uint8)
    images[::2, :, :, 0] = 255  # red: images 0 and 2 -> mean 0.5, std 0.5
    images[:, :, :, 1] = 51  # green: constant 0.2 -> std floored at 1e-3
    images[:, 0, :, 2] = 255  # blue: the top row of every image -> mean 0.5, std 0.5
    images[:, 1, :, 2] = 0
    stats = Normalization.of(images)
    np.testing.assert_allclose(stats.mean, (0.5, 0.2, 0.5), atol=1e-12)
    np.testing.assert_allclose(stats.std, (0.5, 1e-3, 0.5), atol=1e-12)
    # at most max_images, taken evenly over the array (datasets are often sorted by class):
    # images 0 and 2 here, both red
    sampled = Normalization.of(images, max_images=2)
    np.testing.assert_allclose(sampled.mean, (1.0, 0.2, 0.5), atol=1e-12)
    # random images: the plain formula over all pixels
    rand = random_images(20, 8, seed=3)
    want = rand.reshape(-1, 3) / 255.0
    got = Normalization.of(rand)
    np.testing.assert_allclose(got.mean, want.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(got.std, want.std(axis=0), rtol=1e-12)


def test_normalization_apply_is_the_formula_on_the_channel_axis():
    stats = Normalization((0.1, 0.5, 0.9), (0.2, 0.25, 0.5))
    x = np.random.default_rng(0).random((4, 9, 3, 5, 6), dtype=np.float32)  # channel axis -3, as jigsaw's
    y = stats.apply(x)
    assert y.dtype == np.float32 and y.flags.c_contiguous and y.shape == x.shape
    for c in range(3):
        np.testing.assert_allclose(y[:, :, c], (x[:, :, c] - stats.mean[c]) / stats.std[c], rtol=1e-6, atol=1e-6)
    # apply_views normalises every view with the statistics it is given
    images = random_images(3)
    out = apply_views([ImageView()], images, np.random.default_rng(0), train=False, stats=stats)["image"]
    np.testing.assert_allclose(out, stats.apply(images.transpose(0, 3, 1, 2) / np.float32(255)), atol=1e-6)


def test_normalization_validates():
    with pytest.raises(ValueError, match="3 means and 3 positive stds"):
        Normalization((0.5, 0.5), (0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="3 means and 3 positive stds"):
        Normalization((0.5, 0.5, 0.5), (0.2, 0.0, 0.2))


# --------------------------------------------------------------------------- the default output is frozen
# Numbers computed with the code before blur/solarisation/hue/jitter_prob/copies were added
# (commit e18fd6a): the defaults must keep their exact draws, PIRL's results depend on them.


def test_default_image_view_output_unchanged():
    rng = np.random.default_rng(2024)
    out = apply_views([ImageView()], random_images(8), rng, stats=STATS)["image"]
    i = np.arange(8)
    np.testing.assert_allclose(out[i, i % 3, i * 4, 31 - i * 3], [
        -1.0122618675231934, -0.08328335732221603, 1.4475250244140625, 0.1647590696811676,
        -0.3384189009666443, 0.3791295289993286, -0.04739474132657051, -0.7515934109687805], atol=1e-5)
    assert math.isclose(float(out.astype(np.float64).sum()), 712.3303786774995, rel_tol=1e-6)
    assert rng.random() == 0.9377436856688152  # exactly as many draws as before


def test_pirl_views_output_unchanged():
    rng = np.random.default_rng(7)
    out = apply_views([ImageView(), JigsawView()], random_images(8), rng, stats=STATS)
    i = np.arange(8)
    np.testing.assert_allclose(out["image"][i, i % 3, i * 4, i * 3], [
        0.7823956608772278, -0.8558283448219299, 0.11044996231794357, 0.37901556491851807,
        -1.0268054008483887, 1.4830917119979858, 0.9262484908103943, -0.4320841133594513], atol=1e-5)
    np.testing.assert_allclose(out["jigsaw"][i, i, i % 3, i % 8, 7 - i], [
        -0.21703414618968964, -0.17490096390247345, 0.3394022285938263, -0.14887623488903046,
        -0.9426630139350891, 1.6454129219055176, -0.11757487058639526, -0.28917396068573], atol=1e-5)
    assert math.isclose(float(out["image"].astype(np.float64).sum()), -2524.844501743033, rel_tol=1e-6)
    assert math.isclose(float(out["jigsaw"].astype(np.float64).sum()), 1421.1366502014862, rel_tol=1e-6)
    assert out["jigsaw_perm"].tolist() == [345539, 125486, 342613, 126127, 156010, 23379, 292257, 198660]
    assert rng.random() == 0.6359252504051075


def test_disabled_features_draw_nothing():
    """Spelling out the defaults of the new fields changes nothing; so does jitter as a 4-tuple without hue."""
    spelled = ImageView(jitter=(0.4, 0.4, 0.4, 0.0), jitter_prob=1.0, blur_prob=0.0, solarize_prob=0.0, copies=1)
    images = random_images(16)
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    out_a = apply_views([ImageView()], images, a, stats=STATS)["image"]
    out_b = apply_views([spelled], images, b, stats=STATS)["image"]
    np.testing.assert_array_equal(out_a, out_b)
    assert a.random() == b.random()


# --------------------------------------------------------------------------- copies


def test_copies_keys_shapes_and_independence():
    view = ImageView(name="view", copies=3, size=16)
    assert view.keys() == ("view_0", "view_1", "view_2")
    assert ImageView(name="view").keys() == ("view",)
    assert {k: v.shape for k, v in view.empty(0).items()} == {f"view_{i}": (0, 3, 16, 16) for i in range(3)}
    out = apply_views([view], random_images(8), np.random.default_rng(0), stats=STATS)
    assert set(out) == set(view.keys())
    assert all(v.shape == (8, 3, 16, 16) and v.dtype == np.float32 and v.flags.c_contiguous for v in out.values())
    assert not np.array_equal(out["view_0"], out["view_1"]) and not np.array_equal(out["view_1"], out["view_2"])
    evals = apply_views([view], random_images(8), np.random.default_rng(0), train=False, stats=STATS)
    np.testing.assert_array_equal(evals["view_0"], evals["view_2"])


def test_copies_are_separate_views_drawn_in_turn():
    view = ImageView(name="v", copies=2, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8,
                     blur_prob=0.5, solarize_prob=0.2)
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    together = apply_views([view], random_images(8), a, stats=STATS)
    apart = apply_views([replace(view, name="v_0", copies=1), replace(view, name="v_1", copies=1)], random_images(8), b,
                        stats=STATS)
    for key in ("v_0", "v_1"):
        np.testing.assert_array_equal(together[key], apart[key])
    assert a.random() == b.random()


def test_each_copy_is_a_view_of_its_own_image():
    """Flip only: copy c of image i is image i, plain or mirrored, and both occur in every copy."""
    images = random_images(32)
    out = apply_views([ImageView(name="v", copies=2, scale=(1.0, 1.0), ratio=(1.0, 1.0), jitter=0.0, grayscale=0.0)],
                      images, np.random.default_rng(0), stats=STATS)
    plain = images.transpose(0, 3, 1, 2).astype(np.float32)
    for key in ("v_0", "v_1"):
        got = denormalise(out[key]) * 255
        is_plain = np.isclose(got, plain, atol=1e-3).all(axis=(1, 2, 3))
        is_mirror = np.isclose(got, plain[..., ::-1], atol=1e-3).all(axis=(1, 2, 3))
        assert (is_plain | is_mirror).all() and is_plain.any() and is_mirror.any(), key
    assert not np.array_equal(out["v_0"], out["v_1"])


# --------------------------------------------------------------------------- validation of the new fields


@pytest.mark.parametrize("fields, named", [
    (dict(jitter=-0.1), "jitter"),
    (dict(jitter=(0.4, 0.4, 0.4)), "jitter"),
    (dict(jitter=(0.4, 0.4, 0.4, 0.6)), "jitter"),
    (dict(jitter=(0.4, -0.4, 0.4, 0.1)), "jitter"),
    (dict(jitter="strong"), "jitter"),
    (dict(jitter_prob=1.5), "jitter_prob"),
    (dict(blur_prob=-0.1), "blur_prob"),
    (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
    (dict(blur_sigma=(2.0, 1.0)), "blur_sigma"),
    (dict(blur_sigma=1.0), "blur_sigma"),
    (dict(solarize_prob=2), "solarize_prob"),
    (dict(copies=0), "copies"),
    (dict(copies=1.5), "copies"),
    (dict(copies=True), "copies"),
])
def test_new_fields_are_validated(fields, named):
    with pytest.raises(ValueError, match=f"^{named} = "):
        ImageView(**fields)


def test_uint8_transfer_gives_the_float_views_to_half_a_grey_level_in_a_quarter_of_the_bytes():
    """Views sent as uint8 pixels (Profile.view_transfer) and normalised on the trainer equal the
    float32 views up to the rounding to 1/255; labels such as the permutation index are untouched."""
    from sslab.methods.views import Uint8Pixels

    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    views = [ImageView(size=32, jitter=(0.4, 0.4, 0.4, 0.1), jitter_prob=0.8, copies=2),
             JigsawView.for_image_size(32)]
    floats = apply_views(views, images, np.random.default_rng(1), stats=CIFAR10)
    pixels_stats = CIFAR10.for_transfer("uint8")
    assert isinstance(pixels_stats, Uint8Pixels) and CIFAR10.for_transfer("float32") is CIFAR10
    pixels = apply_views(views, images, np.random.default_rng(1), stats=pixels_stats)
    assert floats.keys() == pixels.keys()
    half_level = 0.5 / 255 / min(CIFAR10.std) + 1e-5
    for key, value in floats.items():
        if value.dtype == np.float32:
            assert pixels[key].dtype == np.uint8 and pixels[key].nbytes * 4 == value.nbytes
            restored = pixels_stats.normalise(torch.from_numpy(pixels[key]))
            assert restored.dtype == torch.float32
            error = (restored - torch.from_numpy(value)).abs().max().item()
            assert 0 < error <= half_level, f"{key}: {error}"
        else:
            assert np.array_equal(pixels[key], value)
    with pytest.raises(ValueError, match="float16"):
        CIFAR10.for_transfer("float16")


@pytest.mark.parametrize("output_size", [0, 16])
def test_jigsaw_patches_resampled_to_output_size_sample_the_crop_where_the_formula_says(output_size):
    """On a horizontal ramp (pixel column j has value j), bilinear sampling returns the source
    coordinate itself: each of the s samples across a patch lies at the patch's p pixels spread
    evenly (s = p: the pixels themselves; s = 2p: twice as dense), x = (u + 0.5)·w/c − 0.5."""
    w = 32
    ramp = np.tile(np.arange(w, dtype=np.uint8)[None, :, None], (w, 1, 3))[None]  # 1 x 32 x 32 x 3
    view = JigsawView.for_image_size(w, output_size=output_size)
    identity = Normalization((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # back to pixel units
    out = apply_views([view], ramp, np.random.default_rng(0), train=False, stats=identity)
    p, c, s = view.patch_size, view.crop_size, view.side
    assert out["jigsaw"].shape == (1, 9, 3, s, s)
    cell = c // 3
    margin = (c - 3 * cell) / 2
    steps = (np.arange(s) + 0.5) * (p / s) - 0.5
    columns = [(margin + col * cell + (cell - p) / 2 + steps + 0.5) * w / c - 0.5 for col in range(3)]
    for k in range(9):  # (shuffled: output patch k comes from one of the three columns of cells)
        values = out["jigsaw"][0, k, 0, 0]  # its first row
        assert any(np.allclose(values, x, atol=1e-3) for x in columns), (k, values)
