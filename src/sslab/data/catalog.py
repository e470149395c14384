"""Datasets by name: which source a name means, and ``load_split`` to read one split of it.

``load_split(dataset, split)`` returns a ``sslab.data.split.Split`` (uint8 images N x H x W x 3,
int64 labels and indices, class names, the per-channel ``normalization`` statistics of its
pixels), decoded once and cached (``sslab.data.cache``). ``sslab.engine.augment.to_ray_dataset``
wraps a split as a Ray Dataset with columns ``idx`` (int64), ``image`` (uint8 H x W x 3 tensor
column) and ``label`` (int64) for the ``map_batches`` view pipeline.

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
    directory, then the data directory. A split folder that holds its images directly, with no
    class sub-folder, is data without labels (``Split.labels`` None) when no other split has class
    sub-folders; an empty folder, or a split without classes beside one with them, raises
    ``ValueError`` naming the folder. ``load_train_test`` (what a run trains and evaluates on,
    ``sslab.data.train_test``) needs both ``<path>/train/<class>/<image>`` and
    ``<path>/test/<class>/<image>`` (without labels: ``<path>/train/<image>`` and
    ``<path>/test/<image>``) and refuses any other layout with one line saying so.
``"parquet:<path>"``
    A Parquet file or directory with columns ``image`` (encoded image bytes, or a struct with a
    ``bytes`` field as written by Hugging Face ``datasets``) and ``label`` (integer or class name;
    without it the data has no labels); rows are split by a ``split`` column when there is one,
    else all rows are ``train``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from sslab.data.cache import _any_cached, _cached_or_decode, _read_cache
from sslab.data.locations import cache_dir, data_dir
from sslab.data.sources import (
    IMAGE_SUFFIXES,
    _archive_source,
    _Cifar,
    _class_dirs,
    _folder_source,
    _folder_splits,
    _parquet_source,
    _pickle_source,
)
from sslab.data.split import Split, _check_subset_arg, take_subset

if TYPE_CHECKING:
    from sslab.methods.views import Normalization  # imported where used: it pulls in torch

logger = logging.getLogger(__name__)

_DATASET_NAMES = "'cifar10', 'cifar100', 'imagefolder:<path>' or 'parquet:<path>'"


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


def train_normalization(dataset: str, *, root: Path | None = None, image_size: int | None = None,
                        download: bool = True) -> Normalization:
    """The statistics every split of ``dataset`` is normalised with: its train split's (of the
    whole split, whatever subset a run trains on). Read from the decode cache when it is there;
    the arguments are ``load_split``'s."""
    stats = load_split(dataset, "train", root=root, image_size=image_size, download=download).normalization
    assert stats is not None  # load_split never returns an empty split
    return stats


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
    labelled_elsewhere = any(_class_dirs(path / other) for other in splits)
    _check_class_folders(path / split if splits else path, spec, labelled_elsewhere)
    return _cached_or_decode(_folder_source("imagefolder-" + path.name, path, split), split, root, image_size)


def _check_class_folders(folder: Path, spec: str, labelled_elsewhere: bool = False) -> None:
    """An ImageFolder (split) root needs class sub-folders or, for data without labels, its images
    directly (when no other split has class sub-folders); say which folder lacks them and why."""
    if _class_dirs(folder):
        return
    loose = sorted(f for f in folder.iterdir()
                   if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
    if loose and not labelled_elsewhere:
        return  # images without labels
    if loose:
        raise ValueError(f"imagefolder:{spec}: {folder} holds {len(loose)} image file(s) (e.g. {loose[0].name}) but no "
                         f"class sub-folder, and the other split(s) have class sub-folders; put each class's images "
                         f"in a sub-folder named after the class, e.g. {folder}/<class>/{loose[0].name} (or, for data "
                         "without labels, every split's images directly in its folder)")
    raise ValueError(f"imagefolder:{spec}: {folder} holds no class sub-folder and no image; expected one "
                     f"sub-folder per class holding image files, e.g. {folder}/<class>/0001.jpg (or, for data "
                     f"without labels, the images themselves, e.g. {folder}/0001.jpg)")


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
