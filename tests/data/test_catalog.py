"""Tests of dataset names and their search order (src/sslab/data/catalog.py): which source a name
means, the CIFAR downloads and the messages when a dataset is nowhere to be found."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from sslab.data.catalog import DatasetNotFoundError, load_split
from sslab.data.split import Split


CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------ CIFAR-10


def test_cifar10_splits(cifar):
    for split, n in (("train", 50000), ("test", 10000)):
        s = load_split("cifar10", split)
        assert isinstance(s, Split)
        assert s.images.shape == (n, 32, 32, 3) and s.images.dtype == np.uint8
        assert s.labels.shape == (n,) and s.labels.dtype == np.int64
        np.testing.assert_array_equal(s.idx, np.arange(n))
        assert s.classes == CIFAR_CLASSES
        np.testing.assert_array_equal(np.bincount(s.labels, minlength=10), np.full(10, n // 10))
        assert s.skipped == 0
        assert 80 < s.images.mean() < 160 and s.images.std() > 30  # real pictures, not blanks


def test_cifar10_missing_raises_with_places_and_fix(tmp_path, monkeypatch):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    monkeypatch.setenv("SSLAB_DATA", str(empty))
    with pytest.raises(DatasetNotFoundError) as info:
        load_split("cifar10", "train", download=False)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for place in (empty / "cifar10-jpg.tar.gz", empty / "cifar10", empty / "cifar10-jpg", empty / "cifar-10-batches-py"):
        assert str(place) in message, (place, message)
    assert "SSLAB_DATA" in message and "--data-dir" in message and "download" in message
    assert len(info.value.looked) >= 5


def test_cifar10_failed_download_raises_not_found(tmp_path, monkeypatch):
    torchvision_datasets = pytest.importorskip("torchvision.datasets")

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision_datasets, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError, match="network is unreachable"):
        load_split("cifar10", "test", root=tmp_path / "data")


def test_cifar_not_found_says_the_fix_on_its_first_line(tmp_path):
    message = str(pytest.raises(DatasetNotFoundError, load_split, "cifar10", "train", root=tmp_path,
                                download=False).value)
    first = message.splitlines()[0]
    assert first.startswith(f"CIFAR-10 (train) not found in the data directory {tmp_path}")
    assert "SSLAB_DATA" in first and "--data-dir" in first and "cifar10-jpg.tar.gz" in first
    assert "download" in first
    assert "Looked in:" in first and str(tmp_path / "cifar-10-batches-py") in message  # the places follow


# ------------------------------------------------------------------ CIFAR-100 and which archive stands for which name


def test_cifar_archives_do_not_stand_in_for_each_other(tmp_path, make_archive):
    root = tmp_path / "data"
    root.mkdir()
    make_archive(root / "cifar10-jpg.tar.gz")
    assert len(load_split("cifar10", "train", root=root, download=False)) == 6
    with pytest.raises(DatasetNotFoundError) as info:  # neither the CIFAR-10 archive nor its cached decode
        load_split("cifar100", "train", root=root, download=False)
    message = str(info.value)
    assert "CIFAR-100" in message
    for place in ("cifar100-jpg.tar.gz", "cifar100", "cifar100-jpg", "cifar-100-python"):
        assert str(root / place) in message, (place, message)


def test_cifar100_failed_download_uses_torchvision_cifar100(tmp_path, monkeypatch):
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    asked = []

    def offline(*args, **kwargs):
        asked.append(kwargs)
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision_datasets, "CIFAR100", offline)
    with pytest.raises(DatasetNotFoundError, match=r"CIFAR-100 \(test\) not found(.|\n)*network is unreachable"):
        load_split("cifar100", "test", root=tmp_path / "data")
    assert asked and asked[0]["download"] is True


def test_cifar100_download_path_reads_what_torchvision_wrote(tmp_path, monkeypatch, make_cifar100_pickles):
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    made = {}

    def fake_download(root, train, download):
        if not made:
            made.update(make_cifar100_pickles(Path(root) / "cifar-100-python"))

    monkeypatch.setattr(torchvision_datasets, "CIFAR100", fake_download)
    s = load_split("cifar100", "train", root=tmp_path / "data")
    np.testing.assert_array_equal(s.images, made["train"][0])


# ------------------------------------------------------------------ imagefolder and unknown names


def test_imagefolder_split_folders_and_relative_path(tmp_path, monkeypatch, make_folder):
    root = tmp_path / "tree"
    make_folder(root / "train", classes=("a", "b", "c"), per_class=2)
    make_folder(root / "test", classes=("b", "c"), per_class=1)
    monkeypatch.chdir(tmp_path)
    test = load_split("imagefolder:tree", "test")
    assert test.classes == ["a", "b", "c"]  # the union, so labels agree with train
    np.testing.assert_array_equal(test.labels, [1, 2])
    assert len(load_split("imagefolder:tree", "train").labels) == 6
    with pytest.raises(ValueError, match="split folders"):
        load_split("imagefolder:tree", "val")


def test_imagefolder_empty_folders_name_the_folder(tmp_path, write_image, make_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))} holds no class sub-folder and no image"):
        load_split(f"imagefolder:{empty}")
    loose = tmp_path / "loose"
    write_image(loose / "photo.png", np.zeros((4, 4, 3), np.uint8))
    unlabelled = load_split(f"imagefolder:{loose}")  # images without a class folder: data without labels
    assert len(unlabelled) == 1 and unlabelled.labels is None and unlabelled.classes == []
    mixed = tmp_path / "mixed"
    make_folder(mixed / "train", classes=("a",), per_class=1)
    write_image(mixed / "test" / "photo.png", np.zeros((4, 4, 3), np.uint8))
    mixed_test = re.escape(str(mixed / "test"))
    with pytest.raises(ValueError, match=rf"{mixed_test} holds 1 image file.*photo\.png.*no class sub-folder, and "
                                         r"the other split\(s\) have class sub-folders"):
        load_split(f"imagefolder:{mixed}", "test")
    split_tree = tmp_path / "splits"
    make_folder(split_tree / "train", classes=("a",), per_class=1)
    (split_tree / "test").mkdir()
    test_folder = re.escape(str(split_tree / "test"))
    with pytest.raises(ValueError, match=rf"{test_folder} holds no class sub-folder"):
        load_split(f"imagefolder:{split_tree}", "test")
    (split_tree / "test" / "a").mkdir()  # a class folder without images
    with pytest.raises(ValueError, match=rf"no images in {test_folder} \(test\).*{test_folder}/<class>/"):
        load_split(f"imagefolder:{split_tree}", "test")


def test_missing_and_unknown_datasets(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not found"):
        load_split(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DatasetNotFoundError):
        load_split(f"parquet:{tmp_path / 'nope.parquet'}")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("mnist")
    with pytest.raises(ValueError, match="split"):
        load_split("cifar10", "validation")
    with pytest.raises(ValueError, match="CIFAR-100 has the splits"):
        load_split("cifar100", "validation")
