"""The decoded-image cache: one Parquet file per decoded split.

Every source is decoded once and cached as one Parquet file per split (``image`` as fixed-size
binary H*W*3, ``label`` int64, absent for data without labels; class names, shape, normalisation statistics, the number of
skipped images and the images' shorter side before resizing in the schema metadata). The cache
directory is ``sslab.data.locations.cache_dir()``. The file name holds the dataset, the split, a
hash of the source's path and a hash of the source's fingerprint (sizes and modification times),
the requested ``image_size`` and the cache format version, so a changed source is decoded again
(and the stale file of the same source removed). Files are written to a temporary name and
renamed into place, so concurrent runs never read a half-written cache.

Unreadable images are skipped, counted in ``Split.skipped`` (kept in the cache, so a cached load
reports the same count) and named (up to five) in a warning at the first decode; a split with no
readable image raises ``ValueError`` naming the path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sslab.data.locations import cache_dir
from sslab.data.split import Split

if TYPE_CHECKING:
    from sslab.data.decode import _Decoded
    from sslab.data.sources import _Source
    from sslab.methods.views import Normalization  # imported where used: it pulls in torch

logger = logging.getLogger(__name__)

#: Bump when the cache layout changes: old files are then never read. 2: normalisation
#: statistics and the skipped count in the metadata. 3: the images' shorter side before resizing
#: (``source_side``: median and smallest) in the metadata.
CACHE_VERSION = 3
_MAX_NAMED = 5


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
    logger.info("decoded %d images of %s (%s) in %.1f s", len(decoded.images), source.describe, split,
                time.perf_counter() - start)
    if len(decoded.images) == 0:
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
    n = len(decoded.images)
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
    columns = {"image": pa.FixedSizeBinaryArray.from_buffers(pa.binary(h * w * 3), n, [None, pa.py_buffer(images)])}
    if decoded.labels is not None:  # data without labels has no label column
        columns["label"] = pa.array(decoded.labels, type=pa.int64())
    table = pa.table(columns).replace_schema_metadata({"sslab": json.dumps(meta)})
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        pq.write_table(table, tmp, compression="snappy", use_dictionary=[c for c in ("label",) if c in columns],
                       row_group_size=16384)
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
    labels = table.column("label").to_numpy().astype(np.int64) if "label" in table.column_names else None
    stats = meta["normalization"]
    sides = meta["source_side"]
    return Split(images=images.reshape(n, h, w, 3).copy(), labels=labels, idx=np.arange(n, dtype=np.int64),
                 classes=list(meta["classes"]), skipped=int(meta["skipped_count"]), source=str(path),
                 normalization=Normalization(tuple(stats["mean"]), tuple(stats["std"])),
                 source_side=sides["median"], source_side_min=sides["min"])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "data"
