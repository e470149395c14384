"""Tests of dataset loading, caching and the Ray Dataset wrapper (platform/data.py).

CIFAR-10 tests read the real archive through SSLAB_DATA (CI points it at a folder holding
cifar10-jpg.tar.gz) and are skipped when it is absent; the archive is decoded at most once per
test session, into a session-scoped cache folder.
"""

from __future__ import annotations

import io
import os
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

from sslab.platform import data as data_mod  # noqa: E402
from sslab.platform.data import (  # noqa: E402
    DatasetNotFoundError,
    Split,
    cache_dir,
    data_dir,
    load_split,
    to_ray_dataset,
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
        pytest.skip(f"CIFAR-10 archive not found at {archive}: set SSLAB_DATA to a folder holding cifar10-jpg.tar.gz")
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


@pytest.mark.parametrize("prefix,long_names", [("", False), ("cifar10-jpg/", False), ("", True)])
def test_archive_reading_and_cache_fallback(tmp_path, monkeypatch, prefix, long_names):
    root = tmp_path / "data"
    root.mkdir()
    pixels = _make_archive(root / "cifar10-jpg.tar.gz", prefix, long_names)
    train = load_split("cifar10", "train", root=root, download=False)
    assert train.classes == ["a_cls", "b_cls"]
    assert train.images.shape == (6, 8, 8, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(train.images[:3], np.stack(pixels[("train", "a_cls")]))
    np.testing.assert_array_equal(train.images[3:], np.stack(pixels[("train", "b_cls")]))
    test = load_split("cifar10", "test", root=root, download=False)
    assert len(test.labels) == 4 and test.classes == train.classes
    # with the source gone, the decoded copy in the cache is still found
    (root / "cifar10-jpg.tar.gz").unlink()
    again = load_split("cifar10", "train", root=root, download=False)
    np.testing.assert_array_equal(again.images, train.images)


def test_extracted_cifar_tree(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        _make_folder(root / "cifar10-jpg" / split, classes=("x", "y"), per_class=2, size=(4, 4))
    s = load_split("cifar10", "test", root=root, download=False)
    assert s.images.shape == (4, 4, 4, 3) and s.classes == ["x", "y"]


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
    assert cached.skipped == 0 and str(tmp_path / "cache") in cached.source
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


def test_imagefolder_sizes_must_agree_unless_image_size(tmp_path):
    root = tmp_path / "imgs"
    _make_folder(root, per_class=2)
    _write_image(root / "dog" / "big.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ValueError, match=r"big\.png.*image_size"):
        load_split(f"imagefolder:{root}")
    s = load_split(f"imagefolder:{root}", image_size=8)
    assert s.images.shape == (7, 8, 8, 3)


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


def test_missing_and_unknown_datasets(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not found"):
        load_split(f"imagefolder:{tmp_path / 'nope'}")
    with pytest.raises(DatasetNotFoundError):
        load_split(f"parquet:{tmp_path / 'nope.parquet'}")
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("mnist")
    with pytest.raises(ValueError, match="split"):
        load_split("cifar10", "validation")


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
        out = apply_views(views, b["image"], np.random.default_rng(int(b["idx"][0])))
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
