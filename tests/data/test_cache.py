"""Tests of the decoded-image cache (src/sslab/data/cache.py): written once and fast to read, a changed
source decoded again, and what its metadata holds."""

from __future__ import annotations

import time

import numpy as np

from sslab.data import cache as cache_mod
from sslab.data.catalog import load_split


def test_cifar10_cache_written_and_fast(cifar):
    cache, timings = cifar
    files = {p.name for p in cache.iterdir()}
    assert any(f.startswith("cifar10-train-") and f.endswith(".parquet") for f in files), files
    assert any(f.startswith("cifar10-test-") and f.endswith(".parquet") for f in files), files
    assert not [f for f in files if f.endswith(".tmp")]
    first = load_split("cifar10", "train")
    start = time.perf_counter()
    second = load_split("cifar10", "train")
    cached_s = time.perf_counter() - start
    assert second.source.endswith(".parquet") and str(cache) in second.source
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.labels, second.labels)
    assert cached_s < max(3.0, timings["train"] / 3), (cached_s, timings)
    print(f"decode train {timings['train']:.2f} s, test {timings['test']:.2f} s; cached train {cached_s:.2f} s")


def test_imagefolder_changed_source_is_decoded_again(tmp_path, write_image, make_folder):
    root = tmp_path / "imgs"
    make_folder(root)
    assert len(load_split(f"imagefolder:{root}").labels) == 12
    write_image(root / "emu" / "new.png", np.zeros((16, 16, 3), np.uint8))
    assert len(load_split(f"imagefolder:{root}").labels) == 13
    assert len(list((tmp_path / "cache").glob("imagefolder-imgs-train-*.parquet"))) == 1  # stale copy removed


def test_cache_metadata_holds_the_source_side_and_version(tmp_path, make_folder):
    root = tmp_path / "imgs"
    make_folder(root, per_class=2, size=(6, 10))
    load_split(f"imagefolder:{root}", image_size=12)
    (cache_file,) = (tmp_path / "cache").glob("*.parquet")
    meta = cache_mod._cache_meta(cache_file)
    assert meta["version"] == cache_mod.CACHE_VERSION == 3
    assert meta["source_side"] == {"median": 6, "min": 6}
