"""Tests of decoding (src/sslab/data/decode.py): unreadable images skipped and counted, grayscale and
other modes to RGB, resizing to one size, and the images' size before resizing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sslab.data.catalog import load_split
from sslab.data.split import take_subset


# ------------------------------------------------------------------ unreadable images


def test_imagefolder_corrupt_file_is_skipped(tmp_path, make_folder):
    root = tmp_path / "imgs"
    written = make_folder(root)
    bad = root / "dog" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff this is not a jpeg at all" * 3)
    with pytest.warns(RuntimeWarning, match="broken.jpg"):
        s = load_split(f"imagefolder:{root}")
    assert s.skipped == 1
    assert len(s.labels) == 12 and s.classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(np.bincount(s.labels), [4, 4, 4])
    np.testing.assert_array_equal(s.images[0], written[str(root / "cat" / "000.png")])
    cached = load_split(f"imagefolder:{root}")  # second load comes from the cache
    assert str(tmp_path / "cache") in cached.source
    assert cached.skipped == s.skipped == 1  # the count survives the cache
    np.testing.assert_array_equal(cached.images, s.images)


def test_imagefolder_empty_and_unreadable(tmp_path):
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no images in .*empty.*sub-folder per class"):
        load_split(f"imagefolder:{empty}")
    junk = tmp_path / "junk"
    (junk / "cat").mkdir(parents=True)
    (junk / "cat" / "a.jpg").write_bytes(b"garbage")
    (junk / "cat" / "b.png").write_bytes(b"more garbage")
    with pytest.raises(ValueError, match=r"none of the 2 images.*a\.jpg"):
        load_split(f"imagefolder:{junk}")


# ------------------------------------------------------------------ grayscale, odd sizes, errors


def test_imagefolder_grayscale_pngs_resized_to_rgb(tmp_path, write_image):
    root = tmp_path / "mnistish"
    rng = np.random.default_rng(2)
    for split, n in (("train", 20), ("test", 5)):
        for c in ("0", "1", "7"):
            for i in range(n):
                write_image(root / split / c / f"{i:03d}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
    assert Image.open(root / "train" / "0" / "000.png").mode == "L"
    train = load_split(f"imagefolder:{root}", "train", image_size=32)
    test = load_split(f"imagefolder:{root}", "test", image_size=32)
    assert train.images.shape == (60, 32, 32, 3) and train.images.dtype == np.uint8
    assert test.images.shape == (15, 32, 32, 3) and train.classes == test.classes == ["0", "1", "7"]
    for s in (train, test):
        np.testing.assert_array_equal(s.images[..., 0], s.images[..., 1])
        np.testing.assert_array_equal(s.images[..., 0], s.images[..., 2])
    assert len(set(train.normalization.mean)) == 1 and len(set(train.normalization.std)) == 1
    native = load_split(f"imagefolder:{root}", "train")  # no image_size: grey 28 x 28 as RGB
    assert native.images.shape == (60, 28, 28, 3)
    first = np.asarray(Image.open(root / "train" / "0" / "000.png"))
    np.testing.assert_array_equal(native.images[0, ..., 1], first)


def test_imagefolder_mixed_modes_and_sizes(tmp_path, write_image):
    root = tmp_path / "mixed"
    rng = np.random.default_rng(4)
    # a wide RGB image whose centre square is pure red and its ends green: the centre crop keeps red only
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :, 1] = 255
    wide[:, 10:30] = (255, 0, 0)
    write_image(root / "a" / "wide.png", wide)
    write_image(root / "a" / "tall.png", rng.integers(0, 256, (50, 24, 3), dtype=np.uint8))
    write_image(root / "a" / "grey.jpg", rng.integers(0, 256, (33, 17), dtype=np.uint8))
    write_image(root / "b" / "grey16.png", np.full((12, 30), 0x8080, np.uint16))  # 16-bit grey, mid-grey
    write_image(root / "b" / "rgba.png", rng.integers(0, 256, (40, 40, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert("P").save(root / "b" / "palette.png")
    Image.fromarray(rng.integers(0, 256, (10, 14), dtype=np.uint8)).convert("LA").save(root / "b" / "grey_alpha.png")
    assert Image.open(root / "b" / "grey16.png").mode.startswith("I")
    s = load_split(f"imagefolder:{root}", image_size=20)
    assert s.images.shape == (7, 20, 20, 3) and s.images.dtype == np.uint8 and s.skipped == 0
    names = ["grey.jpg", "tall.png", "wide.png", "grey16.png", "grey_alpha.png", "palette.png", "rgba.png"]
    got = dict(zip(names, s.images, strict=True))
    np.testing.assert_array_equal(got["wide.png"], np.broadcast_to(np.array([255, 0, 0], np.uint8), (20, 20, 3)))
    for grey in ("grey.jpg", "grey16.png", "grey_alpha.png"):
        np.testing.assert_array_equal(got[grey][..., 0], got[grey][..., 2], err_msg=grey)
    np.testing.assert_array_equal(got["grey16.png"], np.full((20, 20, 3), 0x80, np.uint8))  # scaled, not clipped


def test_imagefolder_sizes_must_agree_unless_image_size(tmp_path, write_image, make_folder):
    root = tmp_path / "imgs"
    make_folder(root, per_class=2)
    write_image(root / "dog" / "big.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ValueError, match=r"differ in size: .*big\.png is 30x20 .*16x16.*pass an image size"):
        load_split(f"imagefolder:{root}")
    s = load_split(f"imagefolder:{root}", image_size=8)
    assert s.images.shape == (7, 8, 8, 3)


# ------------------------------------------------------------------ the images' shorter side before resizing


def test_source_side_of_other_sources(tmp_path, png, make_cifar100_pickles, tiny_split):
    root = tmp_path / "data"
    make_cifar100_pickles(root / "cifar-100-python")
    s = load_split("cifar100", "train", root=root, download=False, image_size=16)
    assert s.source_side == s.source_side_min == 32
    path = tmp_path / "small.parquet"
    arrays = [np.zeros((h, w, 3), np.uint8) for h, w in ((3, 9), (5, 5), (8, 6))]
    pq.write_table(pa.table({"image": [png(a) for a in arrays], "label": [0, 1, 0]}), path)
    p = load_split(f"parquet:{path}", image_size=8)
    assert p.source_side == 5 and p.source_side_min == 3
    assert tiny_split().source_side is None  # unknown for a split built by hand
    assert take_subset(p, 2, seed=0).source_side == 5
