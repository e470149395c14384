"""Fixtures shared by the datasets wing's tests (tests/data/): a private cache folder for every
test, the real CIFAR-10 decoded once per session, and makers of small synthetic datasets (each a
fixture that returns the function).

CIFAR-10 tests read the real archive through SSLAB_DATA (CI points it at a folder holding
cifar10-jpg.tar.gz) and are skipped when it is absent; the archive is decoded at most once per
test session, into a session-scoped cache folder. CIFAR-100 is tested on small synthetic copies
of its archive, extracted tree and torchvision pickles (there is no real copy on CI machines).
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sslab.data.catalog import load_split
from sslab.data.locations import data_dir
from sslab.data.split import Split


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


def _tiny_split(n=12, size=5, classes=("a", "b", "c"), seed=0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                 labels=(np.arange(n) % len(classes)).astype(np.int64), idx=np.arange(n, dtype=np.int64),
                 classes=list(classes))


@pytest.fixture
def png():
    """``png(array)``: the array as PNG bytes (lossless)."""
    return _png


@pytest.fixture
def write_image():
    """``write_image(path, array)``: the array saved as an image file, its folders made."""
    return _write_image


@pytest.fixture
def make_folder():
    """``make_folder(root, classes=..., per_class=4, size=(16, 16), seed=0)``: an ImageFolder tree of PNGs."""
    return _make_folder


@pytest.fixture
def make_archive():
    """``make_archive(path, prefix="", long_names=False)``: a cifar10-jpg-like archive of PNGs."""
    return _make_archive


@pytest.fixture
def make_cifar100_pickles():
    """``make_cifar100_pickles(folder, ...)``: a fake torchvision ``cifar-100-python/``."""
    return _make_cifar100_pickles


@pytest.fixture
def tiny_split():
    """``tiny_split(n=12, size=5, classes=("a", "b", "c"), seed=0)``: a small Split built by hand."""
    return _tiny_split


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
