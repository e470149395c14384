"""Tests of dataset loading, caching and the Ray Dataset wrapper (src/sslab/data/sources.py).

CIFAR-10 tests read the real archive through SSLAB_DATA (CI points it at a folder holding
cifar10-jpg.tar.gz) and are skipped when it is absent; the archive is decoded at most once per
test session, into a session-scoped cache folder. CIFAR-100 is tested on small synthetic copies
of its archive, extracted tree and torchvision pickles (there is no real copy on CI machines).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import tarfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from sslab.data import sources as data_mod  # noqa: E402
from sslab.methods.views import CIFAR10 as CIFAR10_STATS  # noqa: E402
from sslab.methods.views import Normalization  # noqa: E402
from sslab.data.sources import (  # noqa: E402
    DatasetNotFoundError,
    Split,
    cache_dir,
    data_dir,
    evaluation_arrays,
    load_split,
    load_train_test,
    take_subset,
    to_ray_dataset,
    train_normalization,
)

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder unless it asks for the shared CIFAR one."""
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ helpers


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _make_folder(root: Path, classes=("cat", "dog", "emu"), per_class=4, size=(16, 16), seed=0) -> dict[str, np.ndarray]:
    """An ImageFolder tree of PNGs (lossless, so pixels can be compared); returns path -> pixels."""
    rng = np.random.default_rng(seed)
    written = {}
    for c in classes:
        for i in range(per_class):
            array = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            path = root / c / f"{i:03d}.png"
            _write_image(path, array)
            written[str(path)] = array
    return written


# ------------------------------------------------------------------ CIFAR-10 fixtures


@pytest.fixture(scope="session")
def cifar_cache(tmp_path_factory):
    """Decode the real archive once per session into a shared cache; returns (cache, timings)."""
    archive = data_dir() / "cifar10-jpg.tar.gz"
    if not archive.is_file():
        message = f"CIFAR-10 archive not found at {archive}: set SSLAB_DATA to a folder holding cifar10-jpg.tar.gz"
        if os.environ.get("SSLAB_REQUIRE_DATA") == "1":  # CI: missing data is a failure, not a skip
            pytest.fail(message)
        pytest.skip(message)
    cache = tmp_path_factory.mktemp("cifar-cache")
    timings = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSLAB_CACHE", str(cache))
        for split in ("train", "test"):
            start = time.perf_counter()
            load_split("cifar10", split, download=False)
            timings[split] = time.perf_counter() - start
    return cache, timings


@pytest.fixture
def cifar(cifar_cache, monkeypatch):
    cache, timings = cifar_cache
    monkeypatch.setenv("SSLAB_CACHE", str(cache))
    return cache, timings


# ------------------------------------------------------------------ locations


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSLAB_DATA", raising=False)
    assert data_dir() == tmp_path / "home" / ".cache" / "sslab" / "data"
    monkeypatch.setenv("SSLAB_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SSLAB_CACHE", raising=False)
    writable = tmp_path / "data"
    writable.mkdir()
    assert cache_dir(writable) == writable / ".sslab-cache"
    assert cache_dir(tmp_path / "missing") == tmp_path / "home" / ".cache" / "sslab" / "cache"
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)  # no write bits: read-only even for root
    try:
        assert cache_dir(read_only) == tmp_path / "home" / ".cache" / "sslab" / "cache"
    finally:
        read_only.chmod(0o755)
    monkeypatch.setenv("SSLAB_CACHE", str(tmp_path / "explicit"))
    assert cache_dir(writable) == tmp_path / "explicit"


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


# ------------------------------------------------------------------ archives (small synthetic ones)


def _make_archive(path: Path, prefix: str = "", long_names: bool = False) -> dict[tuple[str, str], list[np.ndarray]]:
    """A cifar10-jpg-like archive of PNGs: <prefix>train/<class>/NNNN.png and test/...; returns pixels."""
    rng = np.random.default_rng(3)
    pixels: dict[tuple[str, str], list[np.ndarray]] = {}
    fmt = tarfile.PAX_FORMAT if long_names else tarfile.USTAR_FORMAT
    with tarfile.open(path, "w:gz", format=fmt) as tar:
        for split, n in (("test", 2), ("train", 3)):
            for c in ("b_cls", "a_cls"):
                for i in range(n):
                    array = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                    pixels.setdefault((split, c), []).append(array)
                    stem = ("x" * 120 + f"{i:04d}") if long_names else f"{i:04d}"
                    data = _png(array)
                    info = tarfile.TarInfo(f"{prefix}{split}/{c}/{stem}.png")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return pixels


@pytest.mark.parametrize("dataset,prefix,long_names", [
    ("cifar10", "", False), ("cifar10", "cifar10-jpg/", False), ("cifar10", "", True),
    ("cifar100", "", False), ("cifar100", "cifar100-jpg/", False),
])
def test_archive_reading_and_cache_fallback(tmp_path, monkeypatch, dataset, prefix, long_names):
    root = tmp_path / "data"
    root.mkdir()
    pixels = _make_archive(root / f"{dataset}-jpg.tar.gz", prefix, long_names)
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


def test_cifar_archives_do_not_stand_in_for_each_other(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    _make_archive(root / "cifar10-jpg.tar.gz")
    assert len(load_split("cifar10", "train", root=root, download=False)) == 6
    with pytest.raises(DatasetNotFoundError) as info:  # neither the CIFAR-10 archive nor its cached decode
        load_split("cifar100", "train", root=root, download=False)
    message = str(info.value)
    assert "CIFAR-100" in message
    for place in ("cifar100-jpg.tar.gz", "cifar100", "cifar100-jpg", "cifar-100-python"):
        assert str(root / place) in message, (place, message)


@pytest.mark.parametrize("dataset,tree", [("cifar10", "cifar10-jpg"), ("cifar100", "cifar100"),
                                          ("cifar100", "cifar100-jpg")])
def test_extracted_cifar_tree(tmp_path, dataset, tree):
    root = tmp_path / "data"
    for split in ("train", "test"):
        _make_folder(root / tree / split, classes=("x", "y"), per_class=2, size=(4, 4))
    s = load_split(dataset, "test", root=root, download=False)
    assert s.images.shape == (4, 4, 4, 3) and s.classes == ["x", "y"]


def _make_cifar100_pickles(folder: Path, names=("maple_tree", "apple", "bee"), n_train=6, n_test=3):
    """A fake torchvision ``cifar-100-python/``: pickled dicts as in the real files (class names
    deliberately unsorted, to check that labels follow the sorted names). Returns the pixels and
    the original fine labels per split."""
    rng = np.random.default_rng(5)
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        fine = [i % len(names) for i in range(n)]
        entry = {"filenames": [f"{i}.png" for i in range(n)], "fine_labels": fine, "coarse_labels": [0] * n,
                 "data": images.transpose(0, 3, 1, 2).reshape(n, -1)}
        (folder / split).write_bytes(pickle.dumps(entry))
        out[split] = (images, fine)
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": list(names), "coarse_label_names": ["all"]}))
    return out


def test_cifar100_torchvision_pickles(tmp_path):
    root = tmp_path / "data"
    made = _make_cifar100_pickles(root / "cifar-100-python")
    for split in ("train", "test"):
        s = load_split("cifar100", split, root=root, download=False)
        images, fine = made[split]
        assert s.classes == ["apple", "bee", "maple_tree"]
        np.testing.assert_array_equal(s.images, images)
        given = ["maple_tree", "apple", "bee"]
        np.testing.assert_array_equal(s.labels, [s.classes.index(given[f]) for f in fine])
    resized = load_split("cifar100", "test", root=root, download=False, image_size=16)
    assert resized.images.shape == (3, 16, 16, 3)


def test_cifar100_damaged_pickle_gives_clear_error(tmp_path):
    root = tmp_path / "data"
    _make_cifar100_pickles(root / "cifar-100-python")
    (root / "cifar-100-python" / "train").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"cifar-100-python/train.*damaged"):
        load_split("cifar100", "train", root=root, download=False)
    (root / "cifar-100-python" / "meta").unlink()
    with pytest.raises(ValueError, match=r"lacks \['meta'\]"):
        load_split("cifar100", "test", root=root, download=False)


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


# ------------------------------------------------------------------ imagefolder


def test_imagefolder_corrupt_file_is_skipped(tmp_path):
    root = tmp_path / "imgs"
    written = _make_folder(root)
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


def test_imagefolder_changed_source_is_decoded_again(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root)
    assert len(load_split(f"imagefolder:{root}").labels) == 12
    _write_image(root / "emu" / "new.png", np.zeros((16, 16, 3), np.uint8))
    assert len(load_split(f"imagefolder:{root}").labels) == 13
    assert len(list((tmp_path / "cache").glob("imagefolder-imgs-train-*.parquet"))) == 1  # stale copy removed


def test_imagefolder_split_folders_and_relative_path(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    _make_folder(root / "train", classes=("a", "b", "c"), per_class=2)
    _make_folder(root / "test", classes=("b", "c"), per_class=1)
    monkeypatch.chdir(tmp_path)
    test = load_split("imagefolder:tree", "test")
    assert test.classes == ["a", "b", "c"]  # the union, so labels agree with train
    np.testing.assert_array_equal(test.labels, [1, 2])
    assert len(load_split("imagefolder:tree", "train").labels) == 6
    with pytest.raises(ValueError, match="split folders"):
        load_split("imagefolder:tree", "val")


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


def test_load_train_test_caps_each_split_or_uses_it_whole_and_says_so(tmp_path):
    root = tmp_path / "tree"
    _make_folder(root / "train", classes=("a", "b", "c"), per_class=4)
    _make_folder(root / "test", classes=("a", "b", "c"), per_class=2, seed=1)
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


def test_load_train_test_refuses_one_class_before_training(tmp_path):
    root = tmp_path / "one"
    for split in ("train", "test"):
        _make_folder(root / split, classes=("only",), per_class=3)
    with pytest.raises(ValueError, match=r"has 1 class\(es\); kNN and linear probes need at least 2"):
        load_train_test(f"imagefolder:{root}", image_size=None, train_subset=None, test_subset=None, note=print)


def test_cifar100_download_path_reads_what_torchvision_wrote(tmp_path, monkeypatch):
    torchvision_datasets = pytest.importorskip("torchvision.datasets")
    made = {}

    def fake_download(root, train, download):
        if not made:
            made.update(_make_cifar100_pickles(Path(root) / "cifar-100-python"))

    monkeypatch.setattr(torchvision_datasets, "CIFAR100", fake_download)
    s = load_split("cifar100", "train", root=tmp_path / "data")
    np.testing.assert_array_equal(s.images, made["train"][0])


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


def test_split_normalization_from_data_and_cached(tmp_path):
    root = tmp_path / "tree"
    _make_folder(root / "train", classes=("a", "b"), per_class=5, size=(6, 6), seed=1)
    _make_folder(root / "test", classes=("a", "b"), per_class=3, size=(6, 6), seed=2)
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


# ------------------------------------------------------------------ grayscale, odd sizes, errors


def test_imagefolder_grayscale_pngs_resized_to_rgb(tmp_path):
    root = tmp_path / "mnistish"
    rng = np.random.default_rng(2)
    for split, n in (("train", 20), ("test", 5)):
        for c in ("0", "1", "7"):
            for i in range(n):
                _write_image(root / split / c / f"{i:03d}.png", rng.integers(0, 256, (28, 28), dtype=np.uint8))
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


def test_imagefolder_mixed_modes_and_sizes(tmp_path):
    root = tmp_path / "mixed"
    rng = np.random.default_rng(4)
    # a wide RGB image whose centre square is pure red and its ends green: the centre crop keeps red only
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, :, 1] = 255
    wide[:, 10:30] = (255, 0, 0)
    _write_image(root / "a" / "wide.png", wide)
    _write_image(root / "a" / "tall.png", rng.integers(0, 256, (50, 24, 3), dtype=np.uint8))
    _write_image(root / "a" / "grey.jpg", rng.integers(0, 256, (33, 17), dtype=np.uint8))
    _write_image(root / "b" / "grey16.png", np.full((12, 30), 0x8080, np.uint16))  # 16-bit grey, mid-grey
    _write_image(root / "b" / "rgba.png", rng.integers(0, 256, (40, 40, 4), dtype=np.uint8))
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


def test_imagefolder_sizes_must_agree_unless_image_size(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root, per_class=2)
    _write_image(root / "dog" / "big.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ValueError, match=r"differ in size: .*big\.png is 30x20 .*16x16.*pass an image size"):
        load_split(f"imagefolder:{root}")
    s = load_split(f"imagefolder:{root}", image_size=8)
    assert s.images.shape == (7, 8, 8, 3)


def test_imagefolder_empty_folders_name_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=rf"{re.escape(str(empty))} holds no class sub-folder and no image"):
        load_split(f"imagefolder:{empty}")
    loose = tmp_path / "loose"
    _write_image(loose / "photo.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=rf"{re.escape(str(loose))} holds 1 image file.*photo\.png.*no class sub"):
        load_split(f"imagefolder:{loose}")
    split_tree = tmp_path / "splits"
    _make_folder(split_tree / "train", classes=("a",), per_class=1)
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


def test_cache_goes_to_fallback_when_data_dir_read_only(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _make_folder(data / "imgs", per_class=1)
    monkeypatch.delenv("SSLAB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data_mod, "_writable", lambda folder: False)
    load_split("imagefolder:imgs", root=data)
    assert list((tmp_path / "home" / ".cache" / "sslab" / "cache").glob("*.parquet"))
    assert not (data / ".sslab-cache").exists()


# ------------------------------------------------------------------ parquet


def test_parquet_round_trip_with_split_column(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for _ in range(7)]
    names = ["zebra", "ant", "ant", "zebra", "moth", "ant", "moth"]
    splits = ["train", "train", "test", "train", "train", "test", "train"]
    path = tmp_path / "small.parquet"
    pq.write_table(pa.table({"image": [_png(a) for a in arrays], "label": names, "split": splits}), path)
    train = load_split(f"parquet:{path}", "train")
    test = load_split(f"parquet:{path}", "test")
    assert train.classes == test.classes == ["ant", "moth", "zebra"]
    keep = [i for i, s in enumerate(splits) if s == "train"]
    np.testing.assert_array_equal(train.images, np.stack([arrays[i] for i in keep]))
    np.testing.assert_array_equal(train.labels, [2, 0, 2, 1, 1])
    np.testing.assert_array_equal(test.labels, [0, 0])
    with pytest.raises(ValueError, match="'split' column holds"):
        load_split(f"parquet:{path}", "val")


def test_parquet_struct_images_int_labels(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (5, 5, 3), dtype=np.uint8) for _ in range(4)]
    image = pa.array([{"bytes": _png(a), "path": None} for a in arrays],
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


# ------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_to_ray_dataset_columns_and_views(ray_cluster):
    from sslab.methods.views import ImageView, JigsawView, apply_views

    n = 1000
    rng = np.random.default_rng(0)
    split = Split(images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                  labels=rng.integers(0, 10, n).astype(np.int64), idx=np.arange(n, dtype=np.int64),
                  classes=[str(i) for i in range(10)])
    ds = to_ray_dataset(split)
    assert ds.count() == n
    assert ds.materialize().num_blocks() >= 2
    batch = ds.take_batch(n, batch_format="numpy")
    assert set(batch) == {"idx", "image", "label"}
    assert batch["idx"].dtype == np.int64 and batch["label"].dtype == np.int64
    assert batch["image"].dtype == np.uint8 and batch["image"].shape == (n, 32, 32, 3)
    order = np.argsort(batch["idx"])
    np.testing.assert_array_equal(batch["idx"][order], split.idx)
    np.testing.assert_array_equal(batch["image"][order], split.images)
    np.testing.assert_array_equal(batch["label"][order], split.labels)

    views = [ImageView(), JigsawView(num_permutations=10)]

    def augment(b):
        out = apply_views(views, b["image"], np.random.default_rng(int(b["idx"][0])), stats=split.normalization)
        return {"idx": b["idx"], **out}

    augmented = ds.map_batches(augment, batch_size=128, batch_format="numpy").take_batch(64)
    assert augmented["image"].shape == (64, 3, 32, 32) and augmented["jigsaw"].shape == (64, 9, 3, 8, 8)
    assert augmented["jigsaw_perm"].dtype == np.int64


def test_cifar_subset_to_ray_dataset(cifar, ray_cluster):
    s = load_split("cifar10", "test", subset=500, seed=0)
    ds = to_ray_dataset(s)
    assert ds.count() == 500
    assert [f for f in ds.schema().names] == ["idx", "image", "label"]


def test_damaged_archive_gives_clear_error(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar10-jpg.tar.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated gzip stream")
    with pytest.raises(ValueError, match="damaged"):
        load_split("cifar10", "train", root=root, download=False)


# ------------------------------------------------------------------ a split's identity


def _tiny_split(n=12, size=5, classes=("a", "b", "c"), seed=0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                 labels=(np.arange(n) % len(classes)).astype(np.int64), idx=np.arange(n, dtype=np.int64),
                 classes=list(classes))


def test_split_identity_shape_and_json():
    import json

    ident = _tiny_split().identity()
    assert ident["num_images"] == 12 and ident["num_classes"] == 3
    assert ident["classes"] == ["a", "b", "c"] and re.fullmatch(r"[0-9a-f]{40}", ident["classes_sha1"])
    assert list(ident) == ["num_images", "num_classes", "classes", "classes_sha1", "image_shape", "content_sha256"]
    assert ident["image_shape"] == [5, 5]
    assert re.fullmatch(r"[0-9a-f]{16}", ident["content_sha256"])
    assert json.loads(json.dumps(ident)) == ident
    many = _tiny_split(n=42, classes=[f"c{i:02d}" for i in range(21)]).identity()
    assert list(many) == list(ident)  # the same keys for any number of classes
    assert many["classes"] is None and re.fullmatch(r"[0-9a-f]{40}", many["classes_sha1"])
    assert many["num_classes"] == 21
    twenty = _tiny_split(n=40, classes=[f"c{i:02d}" for i in range(20)]).identity()
    assert len(twenty["classes"]) == 20


def test_split_identity_changes_with_any_pixel_label_or_class_name():
    base = _tiny_split()
    same = _tiny_split()
    assert base.identity() == same.identity()
    pixel = _tiny_split()
    pixel.images[7, 2, 3, 1] ^= 1
    label = _tiny_split()
    label.labels[4] = (label.labels[4] + 1) % 3
    renamed = _tiny_split()
    renamed.classes[1] = "B"
    swapped = _tiny_split()  # same pixels and labels, two images in another order
    swapped.images[[0, 1]] = swapped.images[[1, 0]]
    hashes = {s.identity()["content_sha256"] for s in (base, pixel, label, renamed, swapped)}
    assert len(hashes) == 5
    assert renamed.identity()["classes"] == ["a", "B", "c"]
    many = _tiny_split(n=42, classes=[f"c{i:02d}" for i in range(21)])
    many_renamed = _tiny_split(n=42, classes=[f"c{i:02d}" for i in range(21)])
    many_renamed.classes[20] = "other"
    assert many.identity()["classes_sha1"] != many_renamed.identity()["classes_sha1"]
    # a split changed in place is hashed anew
    before = base.identity()
    base.images[0, 0, 0, 0] ^= 0xFF
    assert base.identity() != before


def test_split_identity_of_loads_and_subsets(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root / "train", per_class=6)
    _make_folder(root / "test", per_class=2, seed=1)
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


def test_load_train_test_refuses_a_folder_without_train_and_test(tmp_path):
    flat = tmp_path / "flat"
    _make_folder(flat, classes=("airplane", "cat", "dog", "emu", "frog"), per_class=1)
    message = _one_line_error(_train_test(f"imagefolder:{flat}"))
    assert f"{flat}/train/<class>/<image>" in message and f"{flat}/test/<class>/<image>" in message
    assert "one sub-folder per class" in message
    assert f"found class folders airplane, cat, dog, emu, ... (5 in all) directly under {flat}" in message
    assert load_split(f"imagefolder:{flat}").num_classes == 5  # load_split still reads it as one train split

    no_test = tmp_path / "no_test"
    _make_folder(no_test / "train", classes=("a", "b"), per_class=1)
    message = _one_line_error(_train_test(f"imagefolder:{no_test}"))
    assert f"{no_test}/test/<class>/<image>" in message and "found train/ but no test/" in message

    with_val = tmp_path / "with_val"
    _make_folder(with_val / "train", classes=("a", "b"), per_class=1)
    _make_folder(with_val / "val", classes=("a", "b"), per_class=1)
    message = _one_line_error(_train_test(f"imagefolder:{with_val}"))
    assert "found train/ but no test/ (other sub-folders: val)" in message and "val/, to test/" in message

    no_train = tmp_path / "no_train"
    _make_folder(no_train / "test", classes=("a", "b"), per_class=1)
    assert "found test/ but no train/" in _one_line_error(_train_test(f"imagefolder:{no_train}"))

    loose = tmp_path / "loose"
    _write_image(loose / "photo.png", np.zeros((4, 4, 3), np.uint8))
    assert "found 1 image file(s) (e.g. photo.png)" in _one_line_error(_train_test(f"imagefolder:{loose}"))


# ------------------------------------------------------------------ images much smaller than image_size


@pytest.mark.parametrize("side,factor", [(1, "32"), (4, "8"), (16, "2")])
def test_load_train_test_notes_upscaled_small_images(tmp_path, side, factor):
    root = tmp_path / "tiny"
    for split in ("train", "test"):
        _make_folder(root / split, classes=("a", "b"), per_class=3, size=(side, side), seed=len(split))
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


def test_no_upscaling_note_for_images_of_the_right_size(tmp_path):
    root = tmp_path / "normal"
    for split in ("train", "test"):
        _make_folder(root / split, classes=("a", "b"), per_class=2, size=(32, 32))
    _write_image(root / "train" / "a" / "small.png", np.zeros((20, 24, 3), np.uint8))  # 1.6x: not noted
    notes = []
    train, _ = load_train_test(f"imagefolder:{root}", image_size=32, train_subset=None, test_subset=None,
                               note=notes.append)
    assert notes == [] and train.source_side == 32 and train.source_side_min == 20
    mixed = tmp_path / "mixed"
    for split in ("train", "test"):
        _make_folder(mixed / split, classes=("a", "b"), per_class=2, size=(64, 48))
    _write_image(mixed / "test" / "a" / "tiny.png", np.zeros((4, 4, 3), np.uint8))  # one tiny image: median is fine
    load_train_test(f"imagefolder:{mixed}", image_size=32, train_subset=None, test_subset=None, note=notes.append)
    assert notes == []
    assert load_split(f"imagefolder:{mixed}", "test", image_size=32).source_side_min == 4


def test_source_side_of_other_sources(tmp_path):
    root = tmp_path / "data"
    _make_cifar100_pickles(root / "cifar-100-python")
    s = load_split("cifar100", "train", root=root, download=False, image_size=16)
    assert s.source_side == s.source_side_min == 32
    path = tmp_path / "small.parquet"
    arrays = [np.zeros((h, w, 3), np.uint8) for h, w in ((3, 9), (5, 5), (8, 6))]
    pq.write_table(pa.table({"image": [_png(a) for a in arrays], "label": [0, 1, 0]}), path)
    p = load_split(f"parquet:{path}", image_size=8)
    assert p.source_side == 5 and p.source_side_min == 3
    assert _tiny_split().source_side is None  # unknown for a split built by hand
    assert take_subset(p, 2, seed=0).source_side == 5


def test_cache_metadata_holds_the_source_side_and_version(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root, per_class=2, size=(6, 10))
    load_split(f"imagefolder:{root}", image_size=12)
    (cache_file,) = (tmp_path / "cache").glob("*.parquet")
    meta = data_mod._cache_meta(cache_file)
    assert meta["version"] == data_mod.CACHE_VERSION == 3
    assert meta["source_side"] == {"median": 6, "min": 6}


# ------------------------------------------------------------------ load_train_test: one-line refusals


def test_load_train_test_refusals_are_one_line_with_cause_and_fix(tmp_path, monkeypatch):
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
        _make_folder(one / split, classes=("only",), per_class=2)
    message = _one_line_error(_train_test(f"imagefolder:{one}"))
    assert "has 1 class(es); kNN and linear probes need at least 2 (found 'only')" in message
    assert "one sub-folder per class" in message
    assert time.perf_counter() - start < 20


def test_cifar_not_found_says_the_fix_on_its_first_line(tmp_path):
    message = str(pytest.raises(DatasetNotFoundError, load_split, "cifar10", "train", root=tmp_path,
                                download=False).value)
    first = message.splitlines()[0]
    assert first.startswith(f"CIFAR-10 (train) not found in the data directory {tmp_path}")
    assert "SSLAB_DATA" in first and "--data-dir" in first and "cifar10-jpg.tar.gz" in first
    assert "download" in first
    assert "Looked in:" in first and str(tmp_path / "cifar-10-batches-py") in message  # the places follow
