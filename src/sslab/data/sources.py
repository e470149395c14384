"""The places a split is decoded from: CIFAR tar archives, ImageFolder trees, torchvision's
pickled CIFAR batches and Parquet files.

Each reader returns a ``_Source``: what identifies it (``path``, hashed into the cache file name),
a ``fingerprint`` of its contents (sizes and modification times) and a ``decode`` that reads
every image of the split (``sslab.data.decode``). ``sslab.data.catalog`` picks the source for a
dataset name; ``sslab.data.cache`` decodes it once and caches the result.

A Parquet dataset has the columns ``image`` (encoded image bytes, or a struct with a ``bytes``
field as written by Hugging Face ``datasets``) and ``label`` (integer or class name; without it the
data has no labels); rows are split by a ``split`` column when there is one, else all rows are
``train``. An ImageFolder split whose folder holds its images directly, with no class sub-folder,
has no labels either.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from sslab.data.decode import _decode_items, _Decoded, _fit

if TYPE_CHECKING:
    import pyarrow as pa


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


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


@dataclass
class _Source:
    """A place a split can be decoded from."""

    slug: str  # readable part of the cache name
    path: Path  # identifies the source (hashed into the cache name)
    describe: str  # for messages
    fingerprint: Callable[[], str]
    decode: Callable[[int | None], _Decoded]
    expected: str = ""  # what the source should hold, for the message when it holds no image


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
        items: list[tuple[str, Path, int | None]] = [
            (str(f), f, label) for label, c in enumerate(names) if (split_root / c).is_dir()
            for f in _image_files(split_root / c)]
        if not names:  # no class sub-folder anywhere: the images lie in the split's folder, without labels
            items = [(str(f), f, None) for f in _image_files(split_root)]
        return _decode_items(items, names, image_size, str(split_root))

    return _Source(slug, path.resolve(), str(split_root), fingerprint, decode,
                   f"expected one sub-folder per class holding image files ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                   f"e.g. {split_root}/<class>/0001.jpg, or for data without labels the images themselves, e.g. "
                   f"{split_root}/0001.jpg")


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
        if "image" not in table.column_names:
            raise ValueError(f"{path} lacks the column 'image'; it has {table.column_names}. A parquet dataset needs "
                             "'image' (encoded image bytes), and may have 'label' (int or class name; without it "
                             "the data has no labels) and 'split'")
        if "label" not in table.column_names:
            return _unlabelled_parquet(table, path, split, image_size)
        labels_all = table.column("label")
        if pa.types.is_dictionary(labels_all.type):
            labels_all = labels_all.cast(labels_all.type.value_type)
        is_named = pa.types.is_string(labels_all.type) or pa.types.is_large_string(labels_all.type)
        if is_named:
            classes = sorted(str(v) for v in pc.unique(labels_all).to_pylist() if v is not None)
        else:
            classes = _parquet_class_names(table.schema.metadata or {})
        table = _parquet_split(table, path, split)
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


def _parquet_split(table: pa.Table, path: Path, split: str) -> pa.Table:
    """The rows of ``split``: by the ``split`` column, or all rows for ``train`` when there is none."""
    import pyarrow.compute as pc

    if "split" in table.column_names:
        available = sorted(str(s) for s in pc.unique(table.column("split")).to_pylist())
        if split not in available:
            raise ValueError(f"split = {split!r} is not in {path}: its 'split' column holds {available}")
        return table.filter(pc.equal(table.column("split"), split))
    if split != "train":
        raise ValueError(f"split = {split!r}: {path} has no 'split' column, so all rows are the 'train' split; "
                         "add a 'split' column (values such as 'train' and 'test') to give it other splits")
    return table


def _unlabelled_parquet(table: pa.Table, path: Path, split: str, image_size: int | None) -> _Decoded:
    """The rows of ``split`` of a Parquet table without a ``label`` column: images without labels."""
    table = _parquet_split(table, path, split)
    payloads = _parquet_image_bytes(table.column("image"), path)
    items = [(f"{path.name}[row {row}]", data, None) for row, data in enumerate(payloads)]
    return _decode_items(items, [], image_size, str(path))


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
