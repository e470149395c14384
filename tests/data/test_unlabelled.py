"""Data without labels: an ImageFolder whose split folders hold the images directly, a Parquet
file without a ``label`` column, and labelled data read blind (``Split.without_labels``)."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sslab.data.catalog import load_split
from sslab.data.split import Split, take_subset
from sslab.data.train_test import evaluation_arrays, load_evaluation, load_train_test


def _loose(folder, count, seed, write_image):
    rng = np.random.default_rng(seed)
    pixels = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(count)]
    for i, array in enumerate(pixels):
        write_image(folder / f"{i:03d}.png", array)
    return pixels


def test_a_folder_of_images_without_class_folders_loads_without_labels(tmp_path, write_image, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    train = _loose(tmp_path / "data" / "train", 9, 0, write_image)
    _loose(tmp_path / "data" / "test", 4, 1, write_image)
    said: list[str] = []
    first, test = load_train_test(f"imagefolder:{tmp_path / 'data'}", image_size=None, train_subset=5,
                                  test_subset=None, note=said.append)
    assert first.labels is None and not first.labelled and first.classes == [] and len(first) == 5
    assert test.labels is None and len(test) == 4
    assert all(any(np.array_equal(image, p) for p in train) for image in first.images)  # 5 of its own images
    whole = load_split(f"imagefolder:{tmp_path / 'data'}", "train")  # the decoded cache, read again
    assert whole.labels is None and len(whole) == 9
    assert np.array_equal(np.sort(whole.images.reshape(9, -1), axis=0), np.sort(np.stack(train).reshape(9, -1), axis=0))
    identity = first.identity()
    assert identity["num_classes"] == 0 and identity["num_images"] == 5 and identity["classes"] == []
    arrays = evaluation_arrays(first, test)
    assert arrays["train_labels"] is None and arrays["test_labels"] is None and arrays["eval_dataset"] is None
    with pytest.raises(ValueError, match="has no labels; the evaluation dataset is what kNN and the linear probes read"):
        load_evaluation(f"imagefolder:{tmp_path / 'data'}", image_size=None, train_subset=None, test_subset=None)


def test_a_plain_folder_of_images_is_refused_with_the_layouts_it_could_take(tmp_path, write_image):
    _loose(tmp_path / "plain", 3, 0, write_image)
    with pytest.raises(ValueError, match=r"needs a train and a test split.*for images without labels, "
                                         r".*/train/<image>.*move them into .*/train/ and hold out some in .*/test/"):
        load_train_test(f"imagefolder:{tmp_path / 'plain'}", image_size=None, train_subset=None, test_subset=None)


def test_parquet_without_a_label_column_has_no_labels(tmp_path, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(6):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(out, format="PNG")
        encoded.append(out.getvalue())
    path = tmp_path / "images.parquet"
    pq.write_table(pa.table({"image": encoded, "split": ["train"] * 4 + ["test"] * 2}), path)
    train = load_split(f"parquet:{path}", "train")
    test = load_split(f"parquet:{path}", "test")
    assert train.labels is None and len(train) == 4 and test.labels is None and len(test) == 2
    pq.write_table(pa.table({"picture": encoded}), tmp_path / "wrong.parquet")
    with pytest.raises(ValueError, match=r"lacks the column 'image'.*may have 'label'"):
        load_split(f"parquet:{tmp_path / 'wrong.parquet'}")


def test_labelled_data_read_blind_reads_no_label_and_subsets_uniformly(tmp_path, make_folder, monkeypatch):
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "data" / "train", classes=("a", "b"), per_class=6)
    make_folder(tmp_path / "data" / "test", classes=("a", "b"), per_class=2, seed=1)
    dataset = f"imagefolder:{tmp_path / 'data'}"
    labelled, _ = load_train_test(dataset, image_size=None, train_subset=None, test_subset=None)
    blind, blind_test = load_train_test(dataset, image_size=None, train_subset=None, test_subset=None, labelled=False)
    assert labelled.labelled and not blind.labelled and not blind_test.labelled and blind.classes == []
    assert np.array_equal(labelled.images, blind.images)
    assert blind.identity()["content_sha256"] != labelled.identity()["content_sha256"]  # its own data identity

    class Sealed(Split):
        @property
        def labels(self):
            raise AssertionError("read a label")

        @labels.setter
        def labels(self, value):
            self._kept = value

    sealed = Sealed(images=labelled.images, labels=labelled.labels, idx=labelled.idx, classes=labelled.classes)
    unread = sealed.without_labels()
    assert unread.labels is None and len(unread) == 12 and unread.identity() == blind.identity()
    subset = take_subset(unread, 5, seed=0)
    assert subset.labels is None and len(subset) == 5 and np.array_equal(subset.idx, np.arange(5))
    order = np.random.default_rng(0).permutation(12)[:5]
    assert np.array_equal(subset.images, unread.images[order])  # uniform, seeded: no class to balance
