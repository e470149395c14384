"""Tests of a decoded split (src/sslab/data/split.py): class-balanced subsets, normalisation statistics
and a split's identity."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from sslab.data.catalog import load_split, train_normalization
from sslab.data.split import Split
from sslab.methods.views import CIFAR10 as CIFAR10_STATS
from sslab.methods.views import Normalization


# ------------------------------------------------------------------ subsets


def test_cifar10_subset_balanced_and_deterministic(cifar):
    full = load_split("cifar10", "test")
    a = load_split("cifar10", "test", subset=1000, seed=0)
    b = load_split("cifar10", "test", subset=1000, seed=0)
    c = load_split("cifar10", "test", subset=1000, seed=1)
    np.testing.assert_array_equal(np.bincount(a.labels, minlength=10), np.full(10, 100))
    np.testing.assert_array_equal(a.idx, np.arange(1000))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert len(set(np.unique(a.labels[:20]))) > 2  # shuffled, not sorted by class
    # every subset image is an image of the split
    keys = {full.images[i].tobytes() for i in range(len(full.labels))}
    assert all(a.images[i].tobytes() in keys for i in range(0, 1000, 50))
    odd = load_split("cifar10", "test", subset=1005, seed=0)
    np.testing.assert_array_equal(np.bincount(odd.labels, minlength=10), [101] * 5 + [100] * 5)
    with pytest.raises(ValueError, match="larger than"):
        load_split("cifar10", "test", subset=10001)
    with pytest.raises(ValueError, match="subset"):
        load_split("cifar10", "test", subset=0)


# ------------------------------------------------------------------ normalisation statistics


def test_normalization_statistics_equal_numpy():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (37, 9, 11, 3), dtype=np.uint8)
    images[..., 2] //= 3  # channels with different statistics
    stats = Normalization.of(images, chunk_pixels=5 * 9 * 11)  # 5 images a chunk, the last chunk partial
    reference = images.astype(np.float64) / 255.0
    np.testing.assert_allclose(stats.mean, reference.mean(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(stats.std, reference.std(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    assert isinstance(stats, Normalization)
    flat = Normalization.of(np.full((2, 3, 3, 3), 9, np.uint8))
    assert flat.mean == (9 / 255,) * 3 and flat.std == (1e-3,) * 3  # the std is floored


def test_split_normalization_from_data_and_cached(tmp_path, make_folder):
    root = tmp_path / "tree"
    make_folder(root / "train", classes=("a", "b"), per_class=5, size=(6, 6), seed=1)
    make_folder(root / "test", classes=("a", "b"), per_class=3, size=(6, 6), seed=2)
    train = load_split(f"imagefolder:{root}", "train")
    reference = train.images.astype(np.float64) / 255.0
    np.testing.assert_allclose(train.normalization.mean, reference.mean(axis=(0, 1, 2)), atol=1e-12)
    np.testing.assert_allclose(train.normalization.std, reference.std(axis=(0, 1, 2)), atol=1e-12)
    cached = load_split(f"imagefolder:{root}", "train")
    assert cached.source.endswith(".parquet")
    assert cached.normalization == train.normalization  # from the cache metadata, bit for bit
    calls = []
    original = Normalization.of
    with pytest.MonkeyPatch.context() as mp:  # a cached load does not recompute
        mp.setattr(Normalization, "of", classmethod(lambda cls, *a, **k: calls.append(1) or original(*a, **k)))
        load_split(f"imagefolder:{root}", "train")
    assert calls == []
    test = load_split(f"imagefolder:{root}", "test")
    assert test.normalization != train.normalization  # each split carries its own ...
    assert train_normalization(f"imagefolder:{root}") == train.normalization  # ... callers use train's
    subset = load_split(f"imagefolder:{root}", "train", subset=4)
    assert subset.normalization == train.normalization  # the whole split's, not the subset's


def test_split_built_by_hand_computes_its_normalization():
    images = np.random.default_rng(0).integers(0, 256, (4, 5, 5, 3), dtype=np.uint8)
    s = Split(images, np.zeros(4, np.int64), np.arange(4, dtype=np.int64), ["x"])
    assert s.normalization == Normalization.of(images)
    given = Normalization((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    labels, idx = np.zeros(4, np.int64), np.arange(4, dtype=np.int64)
    assert Split(images, labels, idx, ["x"], normalization=given).normalization is given
    empty = Split(np.zeros((0, 2, 2, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64), [])
    assert empty.normalization is None


def test_cifar10_normalization_from_data(cifar):
    stats = load_split("cifar10", "train").normalization
    # the published CIFAR-10 statistics, up to the archive's JPEG compression
    np.testing.assert_allclose(stats.mean, CIFAR10_STATS.mean, atol=0.01)
    np.testing.assert_allclose(stats.std, CIFAR10_STATS.std, atol=0.01)
    assert load_split("cifar10", "test", subset=100).normalization != stats
    assert train_normalization("cifar10") == stats


# ------------------------------------------------------------------ a split's identity


def test_split_identity_shape_and_json(tiny_split):
    import json

    ident = tiny_split().identity()
    assert ident["num_images"] == 12 and ident["num_classes"] == 3
    assert ident["classes"] == ["a", "b", "c"] and re.fullmatch(r"[0-9a-f]{40}", ident["classes_sha1"])
    assert list(ident) == ["num_images", "num_classes", "classes", "classes_sha1", "image_shape", "content_sha256"]
    assert ident["image_shape"] == [5, 5]
    assert re.fullmatch(r"[0-9a-f]{16}", ident["content_sha256"])
    assert json.loads(json.dumps(ident)) == ident
    many = tiny_split(n=42, classes=[f"c{i:02d}" for i in range(21)]).identity()
    assert list(many) == list(ident)  # the same keys for any number of classes
    assert many["classes"] is None and re.fullmatch(r"[0-9a-f]{40}", many["classes_sha1"])
    assert many["num_classes"] == 21
    twenty = tiny_split(n=40, classes=[f"c{i:02d}" for i in range(20)]).identity()
    assert len(twenty["classes"]) == 20


def test_split_identity_changes_with_any_pixel_label_or_class_name(tiny_split):
    base = tiny_split()
    same = tiny_split()
    assert base.identity() == same.identity()
    pixel = tiny_split()
    pixel.images[7, 2, 3, 1] ^= 1
    label = tiny_split()
    label.labels[4] = (label.labels[4] + 1) % 3
    renamed = tiny_split()
    renamed.classes[1] = "B"
    swapped = tiny_split()  # same pixels and labels, two images in another order
    swapped.images[[0, 1]] = swapped.images[[1, 0]]
    hashes = {s.identity()["content_sha256"] for s in (base, pixel, label, renamed, swapped)}
    assert len(hashes) == 5
    assert renamed.identity()["classes"] == ["a", "B", "c"]
    many = tiny_split(n=42, classes=[f"c{i:02d}" for i in range(21)])
    many_renamed = tiny_split(n=42, classes=[f"c{i:02d}" for i in range(21)])
    many_renamed.classes[20] = "other"
    assert many.identity()["classes_sha1"] != many_renamed.identity()["classes_sha1"]
    # a split changed in place is hashed anew
    before = base.identity()
    base.images[0, 0, 0, 0] ^= 0xFF
    assert base.identity() != before


def test_split_identity_of_loads_and_subsets(tmp_path, make_folder):
    root = tmp_path / "imgs"
    make_folder(root / "train", per_class=6)
    make_folder(root / "test", per_class=2, seed=1)
    first = load_split(f"imagefolder:{root}", "train")
    cached = load_split(f"imagefolder:{root}", "train")
    assert cached.source.endswith(".parquet")  # the second load is the cache's
    assert first.identity() == cached.identity()
    assert first.identity()["num_images"] == 18 and first.identity()["image_shape"] == [16, 16]
    subset = load_split(f"imagefolder:{root}", "train", subset=9)
    assert subset.identity()["num_images"] == 9
    assert subset.identity()["content_sha256"] != first.identity()["content_sha256"]
    assert subset.identity() == load_split(f"imagefolder:{root}", "train", subset=9).identity()
    assert load_split(f"imagefolder:{root}", "test").identity() != first.identity()


def test_split_identity_is_fast():
    images = np.random.default_rng(0).integers(0, 256, (50000, 32, 32, 3), dtype=np.uint8)  # CIFAR-10 train
    split = Split(images, np.zeros(50000, np.int64), np.arange(50000, dtype=np.int64), ["x", "y"],
                  normalization=Normalization((0.5,) * 3, (0.25,) * 3))
    start = time.perf_counter()
    split.identity()
    assert time.perf_counter() - start < 1.0
