"""Tests of the two splits a run trains and evaluates on (src/sslab/data/train_test.py): subsets or
whole splits, the layout an ImageFolder needs, one-line refusals and the note on upscaled images."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sslab.data.catalog import DatasetNotFoundError, load_split
from sslab.data.split import take_subset
from sslab.data.train_test import evaluation_arrays, load_train_test


def test_load_train_test_caps_each_split_or_uses_it_whole_and_says_so(tmp_path, make_folder):
    root = tmp_path / "tree"
    make_folder(root / "train", classes=("a", "b", "c"), per_class=4)
    make_folder(root / "test", classes=("a", "b", "c"), per_class=2, seed=1)
    (root / "train" / "b" / "broken.png").write_bytes(b"not a png")
    notes = []
    with pytest.warns(RuntimeWarning, match="broken.png"):
        train, test = load_train_test(f"imagefolder:{root}", image_size=None, train_subset=6, test_subset=100,
                                      note=notes.append)
    whole_train = load_split(f"imagefolder:{root}", "train")
    expected = take_subset(whole_train, 6, seed=0)  # class-balanced, seed 0, as a study draws it
    np.testing.assert_array_equal(train.images, expected.images)
    np.testing.assert_array_equal(np.bincount(train.labels), [2, 2, 2])
    assert len(test) == 6  # fewer test images than the subset asks for: all of them
    assert notes == ["1 unreadable image(s) skipped in the train split",
                     f"the test split of imagefolder:{root} has 6 images (fewer than the profile's 100): using all of them"]
    arrays = evaluation_arrays(train, test)
    assert arrays["stats"] == whole_train.normalization  # the whole train split's statistics normalise both splits
    np.testing.assert_array_equal(arrays["test_labels"], test.labels)


def test_load_train_test_refuses_one_class_before_training(tmp_path, make_folder):
    root = tmp_path / "one"
    for split in ("train", "test"):
        make_folder(root / split, classes=("only",), per_class=3)
    with pytest.raises(ValueError, match=r"has 1 class\(es\); kNN and linear probes need at least 2"):
        load_train_test(f"imagefolder:{root}", image_size=None, train_subset=None, test_subset=None, note=print)


# ------------------------------------------------------------------ load_train_test: the layout it needs


def _one_line_error(call) -> str:
    """The message of the ValueError/DatasetNotFoundError ``call`` raises, checked to be one line."""
    with pytest.raises((ValueError, DatasetNotFoundError)) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    return message


def _train_test(dataset, **kwargs):
    return lambda: load_train_test(dataset, image_size=kwargs.pop("image_size", None), train_subset=None,
                                   test_subset=None, note=kwargs.pop("note", print), **kwargs)


def test_load_train_test_refuses_a_folder_without_train_and_test(tmp_path, write_image, make_folder):
    flat = tmp_path / "flat"
    make_folder(flat, classes=("airplane", "cat", "dog", "emu", "frog"), per_class=1)
    message = _one_line_error(_train_test(f"imagefolder:{flat}"))
    assert f"{flat}/train/<class>/<image>" in message and f"{flat}/test/<class>/<image>" in message
    assert "one sub-folder per class" in message
    assert f"found class folders airplane, cat, dog, emu, ... (5 in all) directly under {flat}" in message
    assert load_split(f"imagefolder:{flat}").num_classes == 5  # load_split still reads it as one train split

    no_test = tmp_path / "no_test"
    make_folder(no_test / "train", classes=("a", "b"), per_class=1)
    message = _one_line_error(_train_test(f"imagefolder:{no_test}"))
    assert f"{no_test}/test/<class>/<image>" in message and "found train/ but no test/" in message

    with_val = tmp_path / "with_val"
    make_folder(with_val / "train", classes=("a", "b"), per_class=1)
    make_folder(with_val / "val", classes=("a", "b"), per_class=1)
    message = _one_line_error(_train_test(f"imagefolder:{with_val}"))
    assert "found train/ but no test/ (other sub-folders: val)" in message and "val/, to test/" in message

    no_train = tmp_path / "no_train"
    make_folder(no_train / "test", classes=("a", "b"), per_class=1)
    assert "found test/ but no train/" in _one_line_error(_train_test(f"imagefolder:{no_train}"))

    loose = tmp_path / "loose"
    write_image(loose / "photo.png", np.zeros((4, 4, 3), np.uint8))
    assert "found 1 image file(s) (e.g. photo.png)" in _one_line_error(_train_test(f"imagefolder:{loose}"))


# ------------------------------------------------------------------ images much smaller than image_size


@pytest.mark.parametrize("side,factor", [(1, "32"), (4, "8"), (16, "2")])
def test_load_train_test_notes_upscaled_small_images(tmp_path, side, factor, make_folder):
    root = tmp_path / "tiny"
    for split in ("train", "test"):
        make_folder(root / split, classes=("a", "b"), per_class=3, size=(side, side), seed=len(split))
    notes = []
    train, test = load_train_test(f"imagefolder:{root}", image_size=32, train_subset=None, test_subset=None,
                                  note=notes.append)
    assert train.images.shape == (6, 32, 32, 3)
    assert train.source_side == test.source_side == side and train.source_side_min == side
    assert len(notes) == 1 and "\n" not in notes[0], notes
    assert (f"the train split's images are {side}x{side} px (median shorter side), upscaled {factor}x; "
            f"the test split's images are {side}x{side} px") in notes[0]
    assert "image_size of 32 px" in notes[0] and "pass images of at least 32 px" in notes[0]
    # a cached load knows the original size too (it is in the cache metadata)
    cached = load_split(f"imagefolder:{root}", "train", image_size=32)
    assert cached.source.endswith(".parquet") and cached.source_side == side
    again = []
    load_train_test(f"imagefolder:{root}", image_size=32, train_subset=4, test_subset=None, note=again.append)
    assert again == notes  # a subset keeps its split's source size


def test_no_upscaling_note_for_images_of_the_right_size(tmp_path, write_image, make_folder):
    root = tmp_path / "normal"
    for split in ("train", "test"):
        make_folder(root / split, classes=("a", "b"), per_class=2, size=(32, 32))
    write_image(root / "train" / "a" / "small.png", np.zeros((20, 24, 3), np.uint8))  # 1.6x: not noted
    notes = []
    train, _ = load_train_test(f"imagefolder:{root}", image_size=32, train_subset=None, test_subset=None,
                               note=notes.append)
    assert notes == [] and train.source_side == 32 and train.source_side_min == 20
    mixed = tmp_path / "mixed"
    for split in ("train", "test"):
        make_folder(mixed / split, classes=("a", "b"), per_class=2, size=(64, 48))
    write_image(mixed / "test" / "a" / "tiny.png", np.zeros((4, 4, 3), np.uint8))  # one tiny image: median is fine
    load_train_test(f"imagefolder:{mixed}", image_size=32, train_subset=None, test_subset=None, note=notes.append)
    assert notes == []
    assert load_split(f"imagefolder:{mixed}", "test", image_size=32).source_side_min == 4


# ------------------------------------------------------------------ load_train_test: one-line refusals


def test_load_train_test_refusals_are_one_line_with_cause_and_fix(tmp_path, monkeypatch, make_folder):
    start = time.perf_counter()
    missing = tmp_path / "nope"
    message = _one_line_error(_train_test(f"imagefolder:{missing}"))
    assert f"imagefolder:{missing} not found: no file or folder at {missing}" in message
    assert "pass an existing path" in message
    monkeypatch.chdir(tmp_path)
    relative = _one_line_error(_train_test("imagefolder:nope", root=tmp_path / "data"))
    assert f"{tmp_path / 'nope'} or {tmp_path / 'data' / 'nope'}" in relative

    junk = tmp_path / "junk"
    for split in ("train", "test"):
        (junk / split / "cat").mkdir(parents=True)
        (junk / split / "cat" / "a.jpg").write_bytes(b"garbage")
        (junk / split / "dog").mkdir(parents=True)
        (junk / split / "dog" / "b.png").write_bytes(b"more garbage")
    message = _one_line_error(_train_test(f"imagefolder:{junk}"))
    assert "none of the 2 images" in message and "a.jpg" in message and "not damaged" in message

    one = tmp_path / "one"
    for split in ("train", "test"):
        make_folder(one / split, classes=("only",), per_class=2)
    message = _one_line_error(_train_test(f"imagefolder:{one}"))
    assert "has 1 class(es); kNN and linear probes need at least 2 (found 'only')" in message
    assert "one sub-folder per class" in message
    assert time.perf_counter() - start < 20
