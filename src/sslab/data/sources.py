"""Datasets: find them, decode them once, cache them as Parquet, hand them out.

``load_split(dataset, split)`` returns a ``Split`` (uint8 images N x H x W x 3, int64 labels and
indices, class names, the per-channel ``normalization`` statistics of its pixels);
``to_ray_dataset(split)`` wraps it as a Ray Dataset with columns ``idx`` (int64), ``image``
(uint8 H x W x 3 tensor column) and ``label`` (int64) for the ``map_batches`` view pipeline
(``sslab.methods.views.apply_views``). ``Split.identity()`` is a small JSON-able fingerprint of a
loaded split (sizes, classes, image shape and a SHA-256 of its pixels, labels and class names) for
a result to record exactly which data it was computed on.

Dataset names
-------------
``"cifar10"``, ``"cifar100"``
    Looked for in the data directory (``data_dir()``: ``--data-dir`` / ``root`` > ``$SSLAB_DATA``
    > ``~/.cache/sslab/data``), first match wins: the archive ``cifar10-jpg.tar.gz`` /
    ``cifar100-jpg.tar.gz`` (members read straight from it), an extracted tree ``cifar10/`` or
    ``cifar10-jpg/`` (``cifar100/``, ``cifar100-jpg/``) holding ``train/<class>/*.jpg`` and
    ``test/<class>/*.jpg``, torchvision's pickled copy ``cifar-10-batches-py/`` /
    ``cifar-100-python/`` (CIFAR-100 with its 100 fine labels). With none of them but a decoded
    copy in the cache, the cached copy is used. Otherwise, when ``download`` is true and
    torchvision is importable, ``torchvision.datasets.CIFAR10`` / ``CIFAR100`` downloads it into
    the data directory (needs internet); failing that, ``DatasetNotFoundError`` lists every place
    looked and how to supply the data. Class indices follow the sorted class names whatever the
    source (the archives' folder names and torchvision's label names are the same sorted lists).
``"imagefolder:<path>"``
    An ImageFolder tree ``<path>/<class>/**/<image>``. When ``<path>/train`` exists, the
    sub-folders (``train``, ``test``, ``val``, ...) are the splits; otherwise the whole tree is
    the ``train`` split. Class indices follow the sorted class-folder names, the union over all
    splits, so they agree between splits. A relative path is tried against the working
    directory, then the data directory. A folder with no class sub-folder (empty, or images
    lying directly in it) raises ``ValueError`` naming the folder. ``load_train_test`` (what a
    run trains and evaluates on) needs both ``<path>/train/<class>/<image>`` and
    ``<path>/test/<class>/<image>`` and refuses any other layout with one line saying so.
``"parquet:<path>"``
    A Parquet file or directory with columns ``image`` (encoded image bytes, or a struct with a
    ``bytes`` field as written by Hugging Face ``datasets``) and ``label`` (integer or class name);
    rows are split by a ``split`` column when there is one, else all rows are ``train``.

Decoding and caching
--------------------
Every source is decoded once (JPEG through torchvision's libjpeg-turbo decoder, which gives the
same pixels as Pillow at ~2.5x the speed, anything else through Pillow) and cached as one Parquet
file per split (``image`` as fixed-size binary H*W*3, ``label`` int64; class names, shape,
normalisation statistics, the number of skipped images and the images' shorter side before
resizing in the schema metadata). The cache
directory is ``$SSLAB_CACHE`` when set, else ``<data dir>/.sslab-cache`` when the data directory
exists and is writable, else ``~/.cache/sslab/cache``. The file name holds the dataset, the
split, a hash of the source's path and a hash of the source's fingerprint (sizes and
modification times), the requested ``image_size`` and the cache format version, so a changed
source is decoded again (and the stale file of the same source removed). Files are written to a
temporary name and renamed into place, so concurrent runs never read a half-written cache.

Every image becomes three-channel RGB: grayscale (8- or 16-bit), palette, grey+alpha, RGBA and
CMYK images are converted (alpha dropped; 16-bit grey scaled to 8 bits, not clipped). All images
of a split must have one size, unless ``image_size`` is given: then every image is resized at
decode time (shorter side to ``image_size``, bilinear with Pillow's antialiasing) and
centre-cropped to a square, as torchvision's ``Resize(s)`` + ``CenterCrop(s)``: the aspect ratio
is kept (no squashing) at the price of the longer side's borders. Without ``image_size``, images
of different sizes raise one ``ValueError`` naming two of them and the fix (pass an image size).
Unreadable images are skipped, counted in ``Split.skipped`` (kept in the cache, so a cached load
reports the same count) and named (up to five) in a warning at the first decode; a split with no
readable image raises ``ValueError`` naming the path.

The images' shorter side as stored, before resizing, is recorded at decode time (the median over
the split, ``Split.source_side``, and the smallest, ``Split.source_side_min``; kept in the cache
metadata). ``load_train_test`` notes, in one line, a split whose images are upscaled 2x or more
to ``image_size``: a folder of 1 x 1 px images blown up to 32 px gives every method the same
meaningless (perfect) kNN score.

Normalisation statistics
------------------------
``Split.normalization`` (a ``sslab.methods.views.Normalization``) is the exact per-channel mean
and standard deviation, in [0, 1] units, of all pixels of the split as decoded (after resizing).
It is computed once at decode time and stored in the cache metadata, so a cached load does not
recompute it (over CIFAR-10's 50,000 training images it takes 0.4-0.9 s on 2 cores, too much
to add to every cached load). Each split carries its own statistics; normalise *every* split
of a dataset with the **train** split's (``train_normalization(dataset)``, or
``load_split(dataset, "train").normalization``), never the test split's own. A subset keeps the
statistics of the split it was drawn from.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import re
import stat
import tarfile
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from sslab.methods.views import Normalization  # imported where used: it pulls in torch

logger = logging.getLogger(__name__)

#: Bump when the cache layout changes: old files are then never read. 2: normalisation
#: statistics and the skipped count in the metadata. 3: the images' shorter side before resizing
#: (``source_side``: median and smallest) in the metadata.
CACHE_VERSION = 3
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
_DATASET_NAMES = "'cifar10', 'cifar100', 'imagefolder:<path>' or 'parquet:<path>'"
_MAX_NAMED = 5


@dataclass(frozen=True)
class _Cifar:
    """Where one of the CIFAR datasets may lie in the data directory, and the layout of
    torchvision's pickled copy (the file names and keys ``torchvision.datasets.CIFAR10`` /
    ``CIFAR100`` read)."""

    name: str  # the dataset name, also the cache slug
    title: str  # for messages
    archive: str  # JPEG archive: train/<class>/NNNN.jpg, test/<class>/NNNN.jpg
    trees: tuple[str, ...]  # the archive extracted
    pickles: str  # torchvision's folder
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    names_key: str  # class names in the meta file
    labels_key: str  # labels in each data file
    torchvision_class: str  # in torchvision.datasets; downloads into <data dir>/<pickles>


_CIFAR = {
    "cifar10": _Cifar("cifar10", "CIFAR-10", "cifar10-jpg.tar.gz", ("cifar10", "cifar10-jpg"), "cifar-10-batches-py",
                      tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
                      "label_names", "labels", "CIFAR10"),
    "cifar100": _Cifar("cifar100", "CIFAR-100", "cifar100-jpg.tar.gz", ("cifar100", "cifar100-jpg"),
                       "cifar-100-python", ("train",), ("test",), "meta", "fine_label_names", "fine_labels",
                       "CIFAR100"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset could not be found anywhere; the message says where it looked and how to fix it.

    ``looked`` lists the places searched, in order.
    """

    def __init__(self, message: str, looked: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.looked = list(looked)


def data_dir(override: str | Path | None = None) -> Path:
    """Where datasets are found and cached: ``override`` (a ``--data-dir`` flag) > ``$SSLAB_DATA``
    > ``~/.cache/sslab/data``."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get("SSLAB_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sslab" / "data"


def cache_dir(data_root: str | Path | None = None) -> Path:
    """Where decoded splits are cached: ``$SSLAB_CACHE`` > ``<data dir>/.sslab-cache`` when the
    data directory exists and is writable (has write permission bits; root's override does not
    count) > ``~/.cache/sslab/cache``. Not created here."""
    env = os.environ.get("SSLAB_CACHE")
    if env:
        return Path(env).expanduser()
    root = data_dir(data_root)
    if _writable(root) and (not (root / ".sslab-cache").exists() or _writable(root / ".sslab-cache")):
        return root / ".sslab-cache"
    return Path.home() / ".cache" / "sslab" / "cache"


def _writable(folder: Path) -> bool:
    """An existing folder we may write to. A folder with no write permission bits at all counts as
    read-only even for root (who ``os.access`` says may write anywhere): it was meant to be."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) and bool(mode & 0o222) and os.access(folder, os.W_OK | os.X_OK)


@dataclass
class Split:
    """One split of a dataset, decoded: what ``load_split`` returns.

    ``normalization`` is the per-channel mean/std of this split's pixels (see the module
    docstring); when not given it is computed from ``images`` (left None only for an empty
    split). Normalise every split with the *train* split's statistics.
    """

    images: np.ndarray  # uint8 N x H x W x 3 (RGB)
    labels: np.ndarray  # int64 N, indices into ``classes``
    idx: np.ndarray  # int64 N, unique, 0..N-1 within the (sub)set
    classes: list[str]
    skipped: int = 0  # corrupt/unreadable images skipped while decoding (the first decode's, also when cached)
    source: str = ""  # what it was read from (a path, or the cache file)
    normalization: Normalization | None = None  # this split's pixel statistics, in [0, 1] units
    #: the images' shorter side (min(H, W), px) as stored in the source, before any resizing: the
    #: median over the split's images and the smallest. None when unknown (a Split built by hand).
    #: A subset keeps the values of the split it was drawn from.
    source_side: int | None = None
    source_side_min: int | None = None

    def __post_init__(self) -> None:
        if self.normalization is None and len(self.images) > 0:
            from sslab.methods.views import Normalization

            self.normalization = Normalization.of(self.images)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def identity(self) -> dict[str, Any]:
        """A small JSON-able fingerprint of exactly these images, labels and class names, in this order:

        ``{"num_images": N, "num_classes": C, "classes": [...] (the names when C <= 20, else None),
        "classes_sha1": "<40 hex>" (sha1 of the names joined by newlines), "image_shape": [H, W],
        "content_sha256": "<16 hex>"}``: always these keys, so records of any dataset have the same fields.

        ``content_sha256`` is the first 16 hex digits of a SHA-256 over the shape, the uint8 pixels,
        the labels (little-endian int64) and the class names; it changes when any pixel, label or
        class name (or their order) changes. Computed on each call (the split may be changed in
        place): ~0.1 s for CIFAR-10's 50,000 training images.
        """
        images = np.ascontiguousarray(self.images, dtype=np.uint8)
        labels = np.ascontiguousarray(self.labels, dtype="<i8")
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"inconsistent Split: images {images.shape}, labels {labels.shape}")
        names = json.dumps([str(c) for c in self.classes], ensure_ascii=False).encode()
        digest = hashlib.sha256(f"sslab-split|{images.shape}|{labels.shape}|".encode())
        digest.update(images.reshape(-1))
        digest.update(labels)
        digest.update(names)
        out: dict[str, Any] = {"num_images": int(len(labels)), "num_classes": len(self.classes)}
        out["classes"] = [str(c) for c in self.classes] if len(self.classes) <= 20 else None
        out["classes_sha1"] = hashlib.sha1("\n".join(map(str, self.classes)).encode()).hexdigest()
        out["image_shape"] = [int(images.shape[1]), int(images.shape[2])]
        out["content_sha256"] = digest.hexdigest()[:16]
        return out


def load_split(dataset: str, split: str = "train", *, root: Path | None = None,
               subset: int | None = None, seed: int = 0, image_size: int | None = None,
               download: bool = True) -> Split:
    """Load one split of ``dataset`` (see the module docstring for names and search order).

    ``root`` overrides the data directory (``--data-dir``). ``subset=K`` keeps K images, class-
    balanced (K // C per class, the remainder one each to the first classes; a class with too
    few images gives its share to the others), drawn deterministically from ``seed``, shuffled
    and re-indexed 0..K-1. ``image_size`` resizes and centre-crops every image to a square of
    that side at decode time (otherwise all images must share one size). ``download=False``
    never goes online.

    The returned split's ``normalization`` holds its own pixel statistics; normalise every split
    with the train split's (``train_normalization``).

    Raises ``DatasetNotFoundError`` when the data is nowhere to be found, ``ValueError`` for an
    empty or unreadable dataset, images of different sizes without ``image_size``, a bad split
    name or a bad ``subset``.
    """
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"dataset = {dataset!r}: expected {_DATASET_NAMES}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size = {image_size!r} is invalid: must be None or an integer >= 1")
    _check_subset_arg(subset)
    if dataset in _CIFAR:
        full = _load_cifar(_CIFAR[dataset], split, root, image_size, download)
    elif dataset.startswith("imagefolder:"):
        full = _load_imagefolder(dataset.removeprefix("imagefolder:"), split, root, image_size)
    elif dataset.startswith("parquet:"):
        full = _load_parquet(dataset.removeprefix("parquet:"), split, root, image_size)
    else:
        raise ValueError(f"unknown dataset {dataset!r}: expected 'cifar10', 'cifar100', 'imagefolder:<path>' "
                         "(a folder with one sub-folder per class) or 'parquet:<path>'")
    if subset is None:
        return full
    return take_subset(full, subset, seed, f"{dataset} {split}")


def load_train_test(dataset: str, *, image_size: int | None, train_subset: int | None,
                    test_subset: int | None, root: Path | None = None,
                    note: Callable[[str], None] = print) -> tuple[Split, Split]:
    """The train and test splits a run trains and evaluates on: each capped at its subset
    (class-balanced, seed 0), or whole when the dataset is smaller than the subset (the profiles'
    sizes are CIFAR's; a small ImageFolder is used whole, and ``note`` says so, as it says how
    many unreadable images were skipped).

    ``note`` also gets one line when a split's images are upscaled by 2x or more to
    ``image_size`` (their median shorter side before resizing, ``Split.source_side``, is at most
    half of it): such images carry little for the features to learn from.

    Raises ``ValueError`` when an ImageFolder is not laid out as ``<path>/train/<class>/<image>``
    and ``<path>/test/<class>/<image>``, when a split is empty or the dataset has fewer than 2
    classes (kNN and the linear probes need 2), before anything is trained.
    """
    if isinstance(dataset, str) and dataset.startswith("imagefolder:"):
        _check_train_test_layout(dataset.removeprefix("imagefolder:"), root)
    splits, notes = [], []  # the notes are said once the data is known to be usable: a refusal is one line
    for name, subset in (("train", train_subset), ("test", test_subset)):
        whole = load_split(dataset, name, root=root, seed=0, image_size=image_size)
        if subset is not None and subset > len(whole.labels):
            notes.append(f"the {name} split of {dataset} has {len(whole.labels)} images (fewer than the profile's "
                         f"{subset}): using all of them")
        split = whole if subset is None or subset >= len(whole.labels) else take_subset(
            whole, subset, seed=0, what=f"{dataset} {name}")
        if split.skipped:
            notes.append(f"{split.skipped} unreadable image(s) skipped in the {name} split")
        if len(split.labels) == 0:
            raise ValueError(f"the {name} split of {dataset!r} is empty; check the dataset at {root or data_dir()}")
        splits.append(split)
    train, test = splits
    if train.num_classes < 2:
        named = f" (found {', '.join(map(repr, train.classes))})" if train.classes else ""
        raise ValueError(f"{dataset!r} has {train.num_classes} class(es); kNN and linear probes need at least "
                         f"2{named}: give the dataset at least two classes (an ImageFolder needs one sub-folder per "
                         "class, e.g. <path>/train/<class>/<image> and <path>/test/<class>/<image>)")
    notes.append(_upscaling_note(dataset, {"train": train, "test": test}, image_size))
    for line in filter(None, notes):
        note(line)
    return train, test


#: ``load_train_test`` notes images whose shorter side is upscaled by this factor or more.
UPSCALE_NOTE_FACTOR = 2.0


def _upscaling_note(dataset: str, splits: dict[str, Split], image_size: int | None) -> str | None:
    """One line when some splits' images are upscaled ``UPSCALE_NOTE_FACTOR``x or more to ``image_size``."""
    if image_size is None:
        return None
    small = {name: s for name, s in splits.items()
             if s.source_side is not None and s.source_side > 0 and image_size / s.source_side >= UPSCALE_NOTE_FACTOR}
    if not small:
        return None
    parts = []
    for name, s in small.items():
        assert s.source_side is not None
        smallest = f", smallest {s.source_side_min} px" if s.source_side_min not in (None, s.source_side) else ""
        parts.append(f"the {name} split's images are {s.source_side}x{s.source_side} px (median shorter side"
                     f"{smallest}), upscaled {image_size / s.source_side:.3g}x")
    return (f"{dataset}: {'; '.join(parts)} to the profile's image_size of {image_size} px: features of such "
            f"images say little (kNN and linear-probe scores on them are no measure of a method); pass images of "
            f"at least {image_size} px")


def _check_train_test_layout(spec: str, root: Path | None) -> None:
    """An ImageFolder given to ``load_train_test`` must hold ``train/`` and ``test/``, each with one
    sub-folder per class: refuse anything else with one line saying what is expected and what is there."""
    path = _resolve_path(spec, root, "imagefolder")
    if not path.is_dir():
        return  # load_split says it is a file
    has_train, has_test = (path / "train").is_dir(), (path / "test").is_dir()
    if has_train and has_test:
        return
    expected = (f"imagefolder:{spec} needs a train and a test split, laid out as {path}/train/<class>/<image> and "
                f"{path}/test/<class>/<image> (one sub-folder per class in each)")
    folders = _class_dirs(path)
    if has_train:
        others = [f for f in folders if f != "train"]
        found = "train/ but no test/" + (f" (other sub-folders: {_some(others)})" if others else "")
        raise ValueError(f"{expected}; found {found} under {path}: put the held-out images in {path}/test/<class>/"
                         + (f" (or rename the folder that holds them, e.g. {others[0]}/, to test/)" if others else ""))
    if has_test:
        raise ValueError(f"{expected}; found test/ but no train/ under {path}: put the training images in "
                         f"{path}/train/<class>/")
    loose = [f.name for f in path.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES]
    if folders:
        found = (f"class folders {_some(folders)} directly under {path}: move them into {path}/train/ and hold out "
                 f"some images of every class in {path}/test/<class>/")
    elif loose:
        found = (f"{len(loose)} image file(s) (e.g. {sorted(loose)[0]}) directly under {path} and no sub-folder: put "
                 f"each class's images in {path}/train/<class>/ and {path}/test/<class>/")
    else:
        found = f"no sub-folder and no image in {path}: check the path"
    raise ValueError(f"{expected}; found {found}")


def _some(names: list[str], shown: int = 4) -> str:
    """``a, b, c, d, ... (12 in all)``: the first few of a list, for one-line messages."""
    if len(names) <= shown:
        return ", ".join(names)
    return ", ".join(names[:shown]) + f", ... ({len(names)} in all)"


def evaluation_arrays(train: Split, test: Split) -> dict[str, Any]:
    """What ``sslab.engine.evaluate`` reads: both splits' images and labels, and the train
    split's statistics, with which both are normalised."""
    return {"train_images": train.images, "train_labels": train.labels, "test_images": test.images,
            "test_labels": test.labels, "stats": train.normalization}


def train_normalization(dataset: str, *, root: Path | None = None, image_size: int | None = None,
                        download: bool = True) -> Normalization:
    """The statistics every split of ``dataset`` is normalised with: its train split's (of the
    whole split, whatever subset a run trains on). Read from the decode cache when it is there;
    the arguments are ``load_split``'s."""
    stats = load_split(dataset, "train", root=root, image_size=image_size, download=download).normalization
    assert stats is not None  # load_split never returns an empty split
    return stats


def to_ray_dataset(split: Split, *, rows_per_block: int | None = None) -> ray.data.Dataset:
    """``split`` as a Ray Dataset with columns ``idx`` int64, ``image`` uint8 H x W x 3 (a tensor
    column) and ``label`` int64, in several blocks (~8 MiB each, at least 4 when there are
    enough rows) so that ``map_batches`` can stream and spread them over workers.

    Initialises Ray (``ray.init()``) if it is not running yet, as any Ray Data call does.
    """
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    n = len(split.labels)
    if len(split.images) != n or len(split.idx) != n:
        raise ValueError(f"inconsistent Split: {len(split.images)} images, {n} labels, {len(split.idx)} idx")
    if n == 0:
        raise ValueError("cannot make a Ray Dataset of an empty Split")
    if rows_per_block is None:
        row_bytes = max(1, int(np.prod(split.images.shape[1:])))
        rows_per_block = min(max(1, (8 << 20) // row_bytes), math.ceil(n / 4))
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block = {rows_per_block} must be >= 1")
    tables = []
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        tables.append(pa.table({
            "idx": pa.array(np.ascontiguousarray(split.idx[start:stop], dtype=np.int64)),
            "image": ArrowTensorArray.from_numpy(np.ascontiguousarray(split.images[start:stop])),
            "label": pa.array(np.ascontiguousarray(split.labels[start:stop], dtype=np.int64)),
        }))
    return ray.data.from_arrow(tables)


# =========================================================================== sources


@dataclass
class _Source:
    """A place a split can be decoded from."""

    slug: str  # readable part of the cache name
    path: Path  # identifies the source (hashed into the cache name)
    describe: str  # for messages
    fingerprint: Callable[[], str]
    decode: Callable[[int | None], _Decoded]
    expected: str = ""  # what the source should hold, for the message when it holds no image


@dataclass
class _Decoded:
    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    sides: np.ndarray | None = None  # int N: each decoded image's shorter side before resizing

    def side_stats(self) -> tuple[int | None, int | None]:
        """(median, smallest) shorter side before resizing; the median is the lower middle value
        (an actual image's side). (None, None) when unknown or empty."""
        if self.sides is None or len(self.sides) == 0:
            return None, None
        ordered = np.sort(np.asarray(self.sides, dtype=np.int64))
        return int(ordered[(len(ordered) - 1) // 2]), int(ordered[0])


def _load_cifar(files: _Cifar, split: str, root: Path | None, image_size: int | None, download: bool) -> Split:
    if split not in ("train", "test"):
        raise ValueError(f"split = {split!r}: {files.title} has the splits 'train' and 'test'")
    base = data_dir(root)
    looked: list[str] = []
    archive = base / files.archive
    looked.append(f"archive {archive}")
    if archive.is_file():
        return _cached_or_decode(_archive_source(files.name, archive, split), split, root, image_size)
    for name in files.trees:
        tree = base / name
        looked.append(f"extracted tree {tree}/{{train,test}}/<class>/")
        if (tree / "train").is_dir() and (tree / "test").is_dir():
            return _cached_or_decode(_folder_source(files.name, tree, split), split, root, image_size)
    pickles = base / files.pickles
    looked.append(f"torchvision's extracted copy {pickles}")
    if pickles.is_dir():
        return _cached_or_decode(_pickle_source(files, pickles, split), split, root, image_size)
    cache = cache_dir(root)
    looked.append(f"decoded cache {cache}/{files.name}-{split}-*.parquet")
    cached = _any_cached(cache, files.name, split, image_size)
    if cached is not None:
        logger.info("%s source not found; using the decoded copy %s", files.title, cached)
        return _read_cache(cached)
    reason = _download_cifar(files, base, download)
    if reason is None:
        return _cached_or_decode(_pickle_source(files, pickles, split), split, root, image_size)
    places = "\n".join(f"  - {p}" for p in looked)
    raise DatasetNotFoundError(
        f"{files.title} ({split}) not found in the data directory {base} and not downloaded; to supply it, set "
        f"SSLAB_DATA (or pass --data-dir) to a folder holding {files.archive} (or an extracted {files.trees[0]}/ "
        f"tree with train/ and test/), or run once with internet access so torchvision can download "
        f"{files.title} into {base}. Looked in:\n{places}\n"
        f"  - torchvision download into {base}: {reason}", looked + [f"torchvision download into {base}"])


def _download_cifar(files: _Cifar, base: Path, download: bool) -> str | None:
    """Download ``files`` with torchvision into ``base``; None on success, else why not."""
    if not download:
        return "skipped (download=False)"
    try:
        import torchvision.datasets
    except ImportError as err:
        return f"skipped (torchvision is not importable: {err})"
    try:
        base.mkdir(parents=True, exist_ok=True)
        for train in (True, False):
            getattr(torchvision.datasets, files.torchvision_class)(root=str(base), train=train, download=True)
    except Exception as err:  # offline, read-only, disk full, bad checksum: all mean "not here"
        return f"failed ({type(err).__name__}: {err})"
    return None


def _load_imagefolder(spec: str, split: str, root: Path | None, image_size: int | None) -> Split:
    path = _resolve_path(spec, root, "imagefolder")
    if not path.is_dir():
        raise DatasetNotFoundError(f"imagefolder:{spec}: {path} is a file, not a folder with one sub-folder "
                                   "per class", [str(path)])
    splits = _folder_splits(path)
    if splits:
        if split not in splits:
            raise ValueError(f"split = {split!r} is not in {path}: its split folders are {sorted(splits)}")
    elif split != "train":
        raise ValueError(f"split = {split!r}: {path} has no train/ sub-folder, so the whole tree is the "
                         "'train' split and there is no other")
    _check_class_folders(path / split if splits else path, spec)
    return _cached_or_decode(_folder_source("imagefolder-" + path.name, path, split), split, root, image_size)


def _check_class_folders(folder: Path, spec: str) -> None:
    """An ImageFolder (split) root needs class sub-folders; say which folder lacks them and why."""
    if _class_dirs(folder):
        return
    loose = sorted(f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
    if loose:
        raise ValueError(f"imagefolder:{spec}: {folder} holds {len(loose)} image file(s) (e.g. {loose[0].name}) but no "
                         f"class sub-folder; put each class's images in a sub-folder named after the class, "
                         f"e.g. {folder}/<class>/{loose[0].name}")
    raise ValueError(f"imagefolder:{spec}: {folder} holds no class sub-folder and no image; expected one "
                     f"sub-folder per class holding image files, e.g. {folder}/<class>/0001.jpg")


def _load_parquet(spec: str, split: str, root: Path | None, image_size: int | None) -> Split:
    path = _resolve_path(spec, root, "parquet")
    return _cached_or_decode(_parquet_source(path, split), split, root, image_size)


def _resolve_path(spec: str, root: Path | None, kind: str) -> Path:
    if not spec:
        raise ValueError(f"{kind}: needs a path, e.g. '{kind}:/data/my_images'")
    given = Path(spec).expanduser()
    candidates = [given] if given.is_absolute() else [Path.cwd() / given, data_dir(root) / given]
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    places = " or ".join(str(c) for c in candidates)
    raise DatasetNotFoundError(f"{kind}:{spec} not found: no file or folder at {places}; pass an existing path "
                               f"(absolute, or relative to the working directory or the data directory, "
                               f"--data-dir / SSLAB_DATA)", [str(c) for c in candidates])


# ------------------------------------------------------------------ cache


def _cached_or_decode(source: _Source, split: str, root: Path | None, image_size: int | None) -> Split:
    cache = cache_dir(root)
    path_hash = hashlib.sha1(str(source.path).encode()).hexdigest()[:8]
    content = f"{CACHE_VERSION}|{source.fingerprint()}|{image_size}"
    stem = f"{_safe(source.slug)}-{split}-{path_hash}"
    target = cache / f"{stem}-{hashlib.sha1(content.encode()).hexdigest()[:12]}.parquet"
    if target.is_file():
        try:
            return _read_cache(target)
        except Exception as err:  # a damaged cache file is re-made, never fatal
            warnings.warn(f"ignoring unreadable cache file {target} ({err}); decoding again", stacklevel=3)
    start = time.perf_counter()
    decoded = source.decode(image_size)
    logger.info("decoded %d images of %s (%s) in %.1f s", len(decoded.labels), source.describe, split,
                time.perf_counter() - start)
    if len(decoded.labels) == 0:
        if decoded.skipped:
            raise ValueError(f"none of the {len(decoded.skipped)} images of {source.describe} ({split}) could be "
                             f"decoded, e.g. {', '.join(decoded.skipped[:_MAX_NAMED])}; check that the files are "
                             "images and not damaged (re-download or re-extract them)")
        raise ValueError(f"no images in {source.describe} ({split}); {source.expected or 'expected image files'}")
    if decoded.skipped:
        named = ", ".join(decoded.skipped[:_MAX_NAMED])
        more = f" and {len(decoded.skipped) - _MAX_NAMED} more" if len(decoded.skipped) > _MAX_NAMED else ""
        warnings.warn(f"skipped {len(decoded.skipped)} unreadable image(s) in {source.describe} ({split}): "
                      f"{named}{more}", RuntimeWarning, stacklevel=4)
    from sslab.methods.views import Normalization

    stats = Normalization.of(decoded.images)
    _write_cache(target, decoded, stats, {"dataset": source.slug, "split": split, "source": str(source.path),
                                          "image_size": image_size})
    for stale in cache.glob(f"{stem}-*.parquet"):  # older decodes of the same source
        if stale != target:
            stale.unlink(missing_ok=True)
    n = len(decoded.labels)
    median_side, min_side = decoded.side_stats()
    return Split(images=decoded.images, labels=decoded.labels, idx=np.arange(n, dtype=np.int64),
                 classes=decoded.classes, skipped=len(decoded.skipped), source=str(source.path),
                 normalization=stats, source_side=median_side, source_side_min=min_side)


def _any_cached(cache: Path, slug: str, split: str, image_size: int | None) -> Path | None:
    """The newest cache file for ``slug``/``split`` with the right image size, whatever its source."""
    if not cache.is_dir():
        return None
    found = []
    for path in cache.glob(f"{_safe(slug)}-{split}-*.parquet"):
        try:
            meta = _cache_meta(path)
        except Exception:
            continue
        if meta.get("version") == CACHE_VERSION and meta.get("image_size") == image_size:
            found.append((path.stat().st_mtime, path))
    return max(found)[1] if found else None


def _cache_meta(path: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return json.loads(raw[b"sslab"])


def _write_cache(target: Path, decoded: _Decoded, stats: Normalization, info: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n, h, w, _ = decoded.images.shape
    images = np.ascontiguousarray(decoded.images)
    median_side, min_side = decoded.side_stats()
    meta = dict(info, version=CACHE_VERSION, height=h, width=w, classes=decoded.classes,
                normalization={"mean": list(stats.mean), "std": list(stats.std)},
                skipped_count=len(decoded.skipped), skipped=decoded.skipped[:100],
                source_side={"median": median_side, "min": min_side})
    table = pa.table({
        "image": pa.FixedSizeBinaryArray.from_buffers(pa.binary(h * w * 3), n, [None, pa.py_buffer(images)]),
        "label": pa.array(decoded.labels, type=pa.int64()),
    }).replace_schema_metadata({"sslab": json.dumps(meta)})
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        pq.write_table(table, tmp, compression="snappy", use_dictionary=["label"], row_group_size=16384)
        os.replace(tmp, target)
        tmp = None
    except OSError as err:
        warnings.warn(f"could not write the decoded-data cache {target} ({err}); continuing without it "
                      "(set SSLAB_CACHE to a writable folder to cache)", RuntimeWarning, stacklevel=4)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _read_cache(path: Path) -> Split:
    import pyarrow.parquet as pq

    from sslab.methods.views import Normalization

    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"sslab"])
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"cache version {meta.get('version')} != {CACHE_VERSION}")
    h, w = int(meta["height"]), int(meta["width"])
    n = table.num_rows
    column = table.column("image").combine_chunks()
    row = h * w * 3
    images = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=n * row, offset=column.offset * row)
    labels = table.column("label").to_numpy().astype(np.int64)
    stats = meta["normalization"]
    sides = meta["source_side"]
    return Split(images=images.reshape(n, h, w, 3).copy(), labels=labels, idx=np.arange(n, dtype=np.int64),
                 classes=list(meta["classes"]), skipped=int(meta["skipped_count"]), source=str(path),
                 normalization=Normalization(tuple(stats["mean"]), tuple(stats["std"])),
                 source_side=sides["median"], source_side_min=sides["min"])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"


# ------------------------------------------------------------------ the CIFAR archives


def _archive_source(slug: str, archive: Path, split: str) -> _Source:
    def fingerprint() -> str:
        st = archive.stat()
        return f"archive:{st.st_size}:{st.st_mtime_ns}"

    def decode(image_size: int | None) -> _Decoded:
        try:
            members = list(_tar_members(archive))
        except (OSError, EOFError, tarfile.TarError, ValueError, zlib.error) as err:
            raise ValueError(f"cannot read the archive {archive} ({type(err).__name__}: {err}); it is damaged or "
                             "not a tar(.gz) file: replace it with a good copy") from err
        tree: dict[str, dict[str, list[tuple[str, bytes]]]] = {}  # split -> class -> [(name, bytes)]
        for name, data in members:
            parts = PurePosixPath(name).parts
            if parts and parts[0] not in ("train", "test", "val", "validation") and len(parts) >= 4:
                parts = parts[1:]  # one top-level folder, e.g. cifar10-jpg/train/...
            if len(parts) < 3 or Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            tree.setdefault(parts[0], {}).setdefault(parts[1], []).append((name, data))
        classes = sorted({c for per_class in tree.values() for c in per_class})
        items = [(name, data, label) for label, c in enumerate(classes)
                 for name, data in sorted(tree.get(split, {}).get(c, []))]
        return _decode_items(items, classes, image_size, f"{archive}")

    return _Source(slug, archive.resolve(), f"{archive}", fingerprint, decode,
                   f"expected members {split}/<class>/<image> (optionally under one top-level folder), "
                   f"images being {', '.join(sorted(IMAGE_SUFFIXES))} files")


def _tar_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of every regular file in a (gzipped) tar archive, streamed."""
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            if member.isfile():
                f = tar.extractfile(member)
                if f is not None:
                    yield member.name, f.read()


# ------------------------------------------------------------------ folders


def _folder_splits(path: Path) -> set[str]:
    """Split sub-folders of an ImageFolder root: every visible sub-folder when ``train/`` exists."""
    if not (path / "train").is_dir():
        return set()
    return {p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _class_dirs(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames
                     if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
    return sorted(files)


def _folder_source(slug: str, path: Path, split: str) -> _Source:
    splits = _folder_splits(path)
    split_root = path / split if splits else path

    def classes() -> list[str]:
        if not splits:
            return _class_dirs(path)
        return sorted({c for s in splits for c in _class_dirs(path / s)})

    def fingerprint() -> str:
        digest = hashlib.sha1("|".join(classes()).encode())
        for file in _image_files(split_root):
            st = file.stat()
            digest.update(f"{file.relative_to(split_root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return "folder:" + digest.hexdigest()

    def decode(image_size: int | None) -> _Decoded:
        names = classes()
        items = [(str(f), f, label) for label, c in enumerate(names)
                 if (split_root / c).is_dir() for f in _image_files(split_root / c)]
        return _decode_items(items, names, image_size, str(split_root))

    return _Source(slug, path.resolve(), str(split_root), fingerprint, decode,
                   f"expected one sub-folder per class holding image files ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                   f"e.g. {split_root}/<class>/0001.jpg")


# ------------------------------------------------------------------ torchvision's pickled CIFAR


def _pickle_source(files: _Cifar, folder: Path, split: str) -> _Source:
    """torchvision's extracted ``cifar-10-batches-py/`` / ``cifar-100-python/``, read directly (the
    layout ``torchvision.datasets.CIFAR10`` reads, without its MD5 check of every file)."""
    names = (files.train_files if split == "train" else files.test_files) + (files.meta_file,)

    def fingerprint() -> str:
        parts = []
        for name in names:
            try:
                st = (folder / name).stat()
                parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
            except OSError:
                parts.append(f"{name}:missing")
        return "pickles:" + ",".join(parts)

    def decode(image_size: int | None) -> _Decoded:
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise ValueError(f"{folder} lacks {missing}: an incomplete copy of {files.title}; delete the folder and "
                             "download it again (or supply the JPEG archive)")
        chunks, targets = [], []
        for name in names[:-1]:
            entry = _unpickle(folder / name, files)
            chunks.append(np.asarray(_entry(entry, "data", folder / name), dtype=np.uint8))
            targets.extend(_entry(entry, files.labels_key, folder / name))
        given = [str(c) for c in _entry(_unpickle(folder / files.meta_file, files), files.names_key,
                                        folder / files.meta_file)]
        data = np.concatenate(chunks)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(targets):
            raise ValueError(f"{folder}: expected N x 3072 pixels and N labels, got {data.shape} and {len(targets)} "
                             f"labels; the copy of {files.title} is damaged: delete it and download it again")
        images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        sides = np.full(len(images), 32, dtype=np.int64)
        # class indices follow the sorted names, as for the archives and trees (a no-op for the real files)
        classes = sorted(given)
        remap = np.array([classes.index(c) for c in given], dtype=np.int64)
        labels = remap[np.asarray(targets, dtype=np.int64)]
        if image_size is not None and images.shape[1:3] != (image_size, image_size):
            images = np.stack([_fit(im, image_size) for im in images])
        return _Decoded(images, labels, classes, sides=sides)

    return _Source(files.name, folder.resolve(), str(folder), fingerprint, decode,
                   f"expected torchvision's {files.title} files {list(names)}")


def _unpickle(path: Path, files: _Cifar) -> dict[Any, Any]:
    import pickle

    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="latin1")  # noqa: S301 - the dataset's own format, as torchvision reads it
    except Exception as err:
        raise ValueError(f"cannot read {path} ({type(err).__name__}: {err}); the copy of {files.title} is damaged: "
                         "delete its folder and download it again") from err
    if not isinstance(entry, dict):
        raise ValueError(f"{path} holds a {type(entry).__name__}, not the dict of a {files.title} file")
    return entry


def _entry(entry: dict[Any, Any], key: str, path: Path) -> Any:
    for k in (key, key.encode()):
        if k in entry:
            return entry[k]
    raise ValueError(f"{path} has no {key!r} entry (it has {sorted(map(str, entry))})")


# ------------------------------------------------------------------ parquet


def _parquet_source(path: Path, split: str) -> _Source:
    def files() -> list[Path]:
        if path.is_file():
            return [path]
        return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))

    def fingerprint() -> str:
        return "parquet:" + ",".join(f"{p.relative_to(path) if p != path else p.name}:{p.stat().st_size}:"
                                     f"{p.stat().st_mtime_ns}" for p in files())

    def decode(image_size: int | None) -> _Decoded:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        missing = [c for c in ("image", "label") if c not in table.column_names]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing}; it has {table.column_names}. A parquet dataset "
                             "needs 'image' (encoded image bytes) and 'label' (int or class name), and may have 'split'")
        labels_all = table.column("label")
        if pa.types.is_dictionary(labels_all.type):
            labels_all = labels_all.cast(labels_all.type.value_type)
        is_named = pa.types.is_string(labels_all.type) or pa.types.is_large_string(labels_all.type)
        if is_named:
            classes = sorted(str(v) for v in pc.unique(labels_all).to_pylist() if v is not None)
        else:
            classes = _parquet_class_names(table.schema.metadata or {})
        if "split" in table.column_names:
            available = sorted(str(s) for s in pc.unique(table.column("split")).to_pylist())
            if split not in available:
                raise ValueError(f"split = {split!r} is not in {path}: its 'split' column holds {available}")
            table = table.filter(pc.equal(table.column("split"), split))
        elif split != "train":
            raise ValueError(f"split = {split!r}: {path} has no 'split' column, so all rows are the 'train' split; "
                             "add a 'split' column (values such as 'train' and 'test') to give it other splits")
        labels = table.column("label")
        if pa.types.is_dictionary(labels.type):
            labels = labels.cast(labels.type.value_type)
        if is_named:
            index = {c: i for i, c in enumerate(classes)}
            label_values = [index.get(v, -1) if v is not None else -1 for v in labels.to_pylist()]
        else:
            label_values = [-1 if v is None else int(v) for v in labels.to_pylist()]
            if not classes:
                top = max(label_values, default=-1)
                classes = [str(i) for i in range(top + 1)]
        payloads = _parquet_image_bytes(table.column("image"), path)
        items = []
        bad_labels = []
        for row, (data, label) in enumerate(zip(payloads, label_values, strict=True)):
            name = f"{path.name}[row {row}]"
            if label < 0 or label >= len(classes):
                bad_labels.append(name)
                continue
            items.append((name, data, label))
        decoded = _decode_items(items, classes, image_size, str(path))
        decoded.skipped = bad_labels + decoded.skipped
        return decoded

    return _Source("parquet-" + path.stem, path.resolve(), str(path), fingerprint, decode,
                   "expected rows with an 'image' column of encoded images")


def _parquet_class_names(metadata: dict[bytes, bytes]) -> list[str]:
    """Class names of an integer label column from Hugging Face ``datasets`` metadata, if any."""
    try:
        info = json.loads(metadata[b"huggingface"])
        names = info["info"]["features"]["label"]["names"]
        return [str(n) for n in names]
    except (KeyError, TypeError, ValueError):
        return []


def _parquet_image_bytes(column: pa.ChunkedArray, path: Path) -> list[bytes | Path | None]:
    import pyarrow as pa

    kind = column.type
    if pa.types.is_struct(kind):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        rows = column.to_pylist()
        out: list[bytes | Path | None] = []
        for row in rows:
            if row is None:
                out.append(None)
            elif row.get("bytes") is not None:
                out.append(row["bytes"])
            elif row.get("path"):
                file = Path(row["path"])
                out.append(file if file.is_absolute() else (path if path.is_dir() else path.parent) / file)
            else:
                out.append(None)
        if "bytes" not in names and "path" not in names:
            raise ValueError(f"{path}: the 'image' struct has fields {names}; expected 'bytes' (and maybe 'path')")
        return out
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind):
        return column.to_pylist()
    raise ValueError(f"{path}: the 'image' column has type {kind}; expected encoded image bytes (binary) "
                     "or a struct with a 'bytes' field")


# =========================================================================== decoding


def _decode_items(items: list[tuple[str, bytes | Path | None, int]], classes: list[str],
                  image_size: int | None, where: str) -> _Decoded:
    """Decode (name, bytes-or-path, label) items into one uint8 array; unreadable ones are listed.

    Sequential on purpose: a CIFAR image decodes in ~50 µs, and on 2 cores a process pool (fork,
    spawn or forkserver) or threads measured slower than one loop over libjpeg-turbo.
    """
    jpeg = _jpeg_decoder()
    images: np.ndarray | None = None
    labels = np.empty(len(items), dtype=np.int64)
    sides = np.empty(len(items), dtype=np.int64)
    skipped: list[str] = []
    first_name = ""
    count = 0
    for name, payload, label in items:
        try:
            array = _decode_one(payload, jpeg)
        except Exception:
            skipped.append(name)
            continue
        sides[count] = min(array.shape[0], array.shape[1])
        if image_size is not None and array.shape[:2] != (image_size, image_size):
            array = _fit(array, image_size)
        if images is None:
            images = np.empty((len(items), *array.shape), dtype=np.uint8)
            first_name = name
        elif array.shape != images.shape[1:]:
            raise ValueError(
                f"images in {where} differ in size: {name} is {array.shape[1]}x{array.shape[0]} but {first_name} is "
                f"{images.shape[2]}x{images.shape[1]}; pass an image size (load_split(..., image_size=<side>), "
                "a profile's image_size) to resize and centre-crop every image to one square size")
        images[count] = array
        labels[count] = label
        count += 1
    if images is None:
        return _Decoded(np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, np.int64), classes, skipped,
                        np.zeros(0, np.int64))
    return _Decoded(images[:count], labels[:count], classes, skipped, sides[:count])


def _jpeg_decoder() -> Callable[[bytes], np.ndarray] | None:
    """torchvision's libjpeg-turbo JPEG decoder as bytes -> H x W x 3, or None without torchvision."""
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None

    def decode(data: bytes) -> np.ndarray:
        tensor = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return tensor.permute(1, 2, 0).numpy()

    return decode


def _decode_one(payload: bytes | Path | None, jpeg: Callable[[bytes], np.ndarray] | None) -> np.ndarray:
    from PIL import Image

    if payload is None:
        raise ValueError("no image data")
    data = payload.read_bytes() if isinstance(payload, Path) else bytes(payload)
    if jpeg is not None and data[:3] == b"\xff\xd8\xff":
        try:
            return jpeg(data)
        except Exception:
            pass  # e.g. CMYK or damaged: let Pillow try and decide
    with Image.open(io.BytesIO(data)) as image:
        array = _to_rgb(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise ValueError(f"decoded to shape {array.shape}")
    return array


def _to_rgb(image: Any) -> np.ndarray:
    """A Pillow image as uint8 H x W x 3. Pillow's own conversion covers 8-bit grey, palette,
    grey+alpha, RGBA (alpha dropped) and CMYK; 16- and 32-bit integer grey it would clip at 255
    (a mostly white picture), so those are scaled from 0..65535 to 0..255 here instead."""
    if image.mode.startswith("I"):  # "I;16", "I;16B", ... (16-bit PNG/TIFF grey) and "I" (32-bit int)
        grey = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or grey.max(initial=0) > 255:
            grey = np.clip(grey, 0, 65535) / 257.0
        grey = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _fit(array: np.ndarray, side: int) -> np.ndarray:
    """Resize so the shorter side is ``side`` (bilinear, Pillow, antialiased when shrinking) and
    centre-crop to side x side: torchvision's ``Resize(side)`` + ``CenterCrop(side)``. The aspect
    ratio is kept rather than squashed; a non-square image loses the ends of its longer side."""
    from PIL import Image

    h, w = array.shape[:2]
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    image = Image.fromarray(array).resize(size, Image.Resampling.BILINEAR)
    left, top = (size[0] - side) // 2, (size[1] - side) // 2
    return np.asarray(image.crop((left, top, left + side, top + side)))


# =========================================================================== subsets


def _check_subset_arg(subset: int | None) -> None:
    if subset is None:
        return
    if isinstance(subset, bool) or not isinstance(subset, int | np.integer) or subset < 1:
        raise ValueError(f"subset = {subset!r} is invalid: must be None (the whole split) or an integer >= 1")


def _subset_quotas(counts: np.ndarray, k: int) -> np.ndarray:
    """Images per class: k // C each, the remainder one each to the first classes; classes with
    too few images keep all they have and their shortfall is spread over the others."""
    quota = np.zeros_like(counts)
    remaining = k
    while remaining > 0:
        room = counts - quota
        active = np.flatnonzero(room > 0)
        base, extra = divmod(remaining, len(active))
        add = np.full(len(active), base)
        add[:extra] += 1
        add = np.minimum(add, room[active])
        quota[active] += add
        remaining -= int(add.sum())
    return quota


def take_subset(full: Split, k: int, seed: int, what: str = "the split") -> Split:
    """A class-balanced subset of ``k`` images drawn with ``seed`` (what ``load_split(subset=k)`` returns)."""
    _check_subset_arg(k)
    n = len(full.labels)
    if k > n:
        raise ValueError(f"subset = {k} is larger than {what} ({n} images); use subset <= {n} or None for all")
    counts = np.bincount(full.labels, minlength=len(full.classes))
    quota = _subset_quotas(counts, int(k))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(full.labels == c))[:q] for c, q in enumerate(quota) if q > 0]
    order = rng.permutation(np.concatenate(chosen))
    return Split(images=full.images[order], labels=full.labels[order], idx=np.arange(k, dtype=np.int64),
                 classes=list(full.classes), skipped=full.skipped, source=full.source,
                 normalization=full.normalization,  # the whole split's statistics, not the subset's
                 source_side=full.source_side, source_side_min=full.source_side_min)
