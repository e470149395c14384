"""Tests of the readers (src/sslab/data/sources.py): CIFAR archives (small synthetic ones), extracted
trees, torchvision's pickled CIFAR-100 and Parquet files."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sslab.data.catalog import load_split


# ------------------------------------------------------------------ archives (small synthetic ones)


@pytest.mark.parametrize("dataset,prefix,long_names", [
    ("cifar10", "", False), ("cifar10", "cifar10-jpg/", False), ("cifar10", "", True),
    ("cifar100", "", False), ("cifar100", "cifar100-jpg/", False),
])
def test_archive_reading_and_cache_fallback(tmp_path, monkeypatch, dataset, prefix, long_names, make_archive):
    root = tmp_path / "data"
    root.mkdir()
    pixels = make_archive(root / f"{dataset}-jpg.tar.gz", prefix, long_names)
    train = load_split(dataset, "train", root=root, download=False)
    assert train.classes == ["a_cls", "b_cls"]
    assert train.images.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(train.images[:3], np.stack(pixels[("train", "a_cls")]))
    np.testing.assert_array_equal(train.images[3:], np.stack(pixels[("train", "b_cls")]))
    test = load_split(dataset, "test", root=root, download=False)
    assert len(test.labels) == 4 and test.classes == train.classes
    assert {p.name.split("-")[0] for p in (tmp_path / "cache").glob("*.parquet")} == {dataset}
    # with the source gone, the decoded copy in the cache is still found
    (root / f"{dataset}-jpg.tar.gz").unlink()
    again = load_split(dataset, "train", root=root, download=False)
    np.testing.assert_array_equal(again.images, train.images)
    assert again.normalization == train.normalization


@pytest.mark.parametrize("dataset,tree", [("cifar10", "cifar10-jpg"), ("cifar100", "cifar100"),
                                          ("cifar100", "cifar100-jpg")])
def test_extracted_cifar_tree(tmp_path, dataset, tree, make_folder):
    root = tmp_path / "data"
    for split in ("train", "test"):
        make_folder(root / tree / split, classes=("x", "y"), per_class=2, size=(4, 4))
    s = load_split(dataset, "test", root=root, download=False)
    assert s.images.shape == (4, 4, 4, 3) and s.classes == ["x", "y"]


def test_damaged_archive_gives_clear_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar10-jpg.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated gzip stream")
    with pytest.raises(ValueError, match="damaged"):
        load_split("cifar10", "train", root=root, download=False)


# ------------------------------------------------------------------ torchvision's pickled CIFAR-100


def test_cifar100_torchvision_pickles(tmp_path, make_cifar100_pickles):
    root = tmp_path / "data"
    made = make_cifar100_pickles(root / "cifar-100-python")
    for split in ("train", "test"):
        s = load_split("cifar100", split, root=root, download=False)
        images, fine = made[split]
        assert s.classes == ["apple", "bee", "maple_tree"]
        np.testing.assert_array_equal(s.images, images)
        given = ["maple_tree", "apple", "bee"]
        np.testing.assert_array_equal(s.labels, [s.classes.index(given[f]) for f in fine])
    resized = load_split("cifar100", "test", root=root, download=False, image_size=16)
    assert resized.images.shape == (3, 16, 16, 3)


def test_cifar100_damaged_pickle_gives_clear_error(tmp_path, make_cifar100_pickles):
    root = tmp_path / "data"
    make_cifar100_pickles(root / "cifar-100-python")
    (root / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"cifar-100-python/train.*damaged"):
        load_split("cifar100", "train", root=root, download=False)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(ValueError, match=r"lacks \['meta'\]"):
        load_split("cifar100", "test", root=root, download=False)


# ------------------------------------------------------------------ parquet


def test_parquet_round_trip_with_split_column(tmp_path, png):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(7)]
    names = ["zebra", "ant", "ant", "zebra", "moth", "ant", "moth"]
    splits = ["train", "train", "test", "train", "train", "test", "train"]
    path = tmp_path / "small.parquet"
    pq.write_table(pa.table({"image": [png(a) for a in arrays], "label": names, "split": splits}), path)
    train = load_split(f"parquet:{path}", "train")
    test = load_split(f"parquet:{path}", "test")
    assert train.classes == test.classes == ["ant", "moth", "zebra"]
    keep = [i for i, s in enumerate(splits) if s == "train"]
    np.testing.assert_array_equal(train.images, np.stack([arrays[i] for i in keep]))
    np.testing.assert_array_equal(train.labels, [2, 0, 2, 1, 1])
    np.testing.assert_array_equal(test.labels, [0, 0])
    with pytest.raises(ValueError, match="'split' column holds"):
        load_split(f"parquet:{path}", "val")


def test_parquet_struct_images_int_labels(tmp_path, png):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (5, 5, 3), dtype=np.uint8) for _ in range(4)]
    image = pa.array([{"bytes": png(a), "path": None} for a in arrays],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"image": image, "label": pa.array([0, 2, 1, 2], pa.int64())}), folder / "part-0.parquet")
    s = load_split(f"parquet:{folder}")
    assert s.classes == ["0", "1", "2"]
    np.testing.assert_array_equal(s.labels, [0, 2, 1, 2])
    np.testing.assert_array_equal(s.images, np.stack(arrays))
    with pytest.raises(ValueError, match="no 'split' column"):
        load_split(f"parquet:{folder}", "test")
