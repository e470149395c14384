"""Reading a table's folder of files (one per key) as one Arrow table, and reading it again cheaply.

A study of 10,000 trials is 10,000 small files per table. Decoding a file costs per column (a trials
file has dozens), and each decoded file held as its own Arrow table carries its own schema and
array objects, many times its data; so ``read_folder`` reads the files in batches (``BATCH``), each
batch combined into one table at once (``table_files.combine``) before the next is read, on several
threads (decoding lets go of the GIL). What that costs is measured by ``benchmarks/store_writes.py``
(docs/performance.md).

The result is kept per folder (``SNAPSHOTS``) with where each file's rows are and the file's
modification time and size. Reading the folder again decodes only the files that changed, appeared
or were not settled when last read, and takes the others' rows from the kept table: the dashboard
re-reads a running study whenever a file changes, which is every epoch report. A file counts as
settled once it was last written ``SETTLED_S`` before it was read: an object store dates a file to
the second (and its clock may not be this machine's), so a file rewritten within that second with
the same size would otherwise pass for the file read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from sslab.results import table_files as files

#: files decoded, then combined into one table, at a time
BATCH = 256
#: how long before a read a file must have been written for its rows to be kept
SETTLED_S = 60.0


class UnreadableFiles(Exception):
    """Files that do not read, with why: ``bad`` is [(path, error)]."""

    def __init__(self, bad: list[tuple[str, Exception]]):
        super().__init__(f"{len(bad)} file(s) cannot be read")
        self.bad = bad


@dataclass(frozen=True)
class _Span:
    """One file's rows in a kept table, and what the file was when read."""

    mtime_ns: int | None
    size: int | None
    start: int
    rows: int
    keys: frozenset
    settled: bool


@dataclass(frozen=True)
class _Snapshot:
    table: pa.Table
    spans: dict[str, _Span]


class Snapshots:
    """The last read of each folder, the least recently used dropped beyond ``limit_bytes``."""

    def __init__(self, limit_bytes: int = 1 << 30):
        self.limit_bytes = limit_bytes
        self._kept: OrderedDict[Hashable, _Snapshot] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> _Snapshot | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: Hashable, snapshot: _Snapshot) -> None:
        size = snapshot.table.get_total_buffer_size()
        with self._lock:
            old = self._kept.pop(key, None)
            if old is not None:
                self._bytes -= old.table.get_total_buffer_size()
            if size > self.limit_bytes:
                return
            self._kept[key] = snapshot
            self._bytes += size
            while self._bytes > self.limit_bytes:
                _, dropped = self._kept.popitem(last=False)
                self._bytes -= dropped.table.get_total_buffer_size()

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self._bytes = 0


#: this process's last read of each folder (``read_folder``)
SNAPSHOTS = Snapshots()


def _settled(info: pafs.FileInfo, now: float) -> bool:
    return bool(info.mtime_ns) and now - info.mtime_ns / 1e9 >= SETTLED_S


def read_folder(folder: Hashable, found: Sequence[pafs.FileInfo], read_file: Callable[[str], pa.Table],
                key_columns: Sequence[str], *, readers: int = 1) -> tuple[pa.Table, set[tuple]] | None:
    """The rows of the files ``found`` (one folder's, in the order given) as one table whose columns
    are the union of theirs, and the keys the files hold; None when there are none. ``folder``
    names the folder in ``SNAPSHOTS``; ``read_file(path)`` decodes one file. Raises
    ``UnreadableFiles`` naming every file that does not read, and ``pa.ArrowInvalid`` or
    ``pa.ArrowTypeError`` where two files' columns cannot be one type."""
    if not found:
        return None
    now = time.time()
    kept = SNAPSHOTS.get(folder)
    reused: dict[str, _Span] = {}
    if kept is not None:
        for info in found:
            span = kept.spans.get(info.path)
            if span is not None and span.settled and (span.mtime_ns, span.size) == (info.mtime_ns, info.size):
                reused[info.path] = span
    fresh = [info for info in found if info.path not in reused]
    pieces, read_spans, bad = _read_fresh(fresh, read_file, key_columns, readers, now)
    if bad:
        raise UnreadableFiles(bad)
    base = kept.table if reused else None
    offset = base.num_rows if base is not None else 0
    whole = files.combine(([base] if base is not None else []) + pieces)
    positions, spans, start = [], {}, 0
    for info in found:
        span = reused.get(info.path)
        first = span.start if span is not None else offset + read_spans[info.path].start
        span = span or read_spans[info.path]
        positions.append(np.arange(first, first + span.rows))
        spans[info.path] = _Span(span.mtime_ns, span.size, start, span.rows, span.keys, span.settled)
        start += span.rows
    order = np.concatenate(positions)
    if base is not None or not np.array_equal(order, np.arange(len(order))):
        whole = whole.take(pa.array(order))
    SNAPSHOTS.put(folder, _Snapshot(whole, spans))
    return whole, set().union(*(span.keys for span in spans.values()))


def _read_fresh(fresh: Sequence[pafs.FileInfo], read_file: Callable[[str], pa.Table], key_columns: Sequence[str],
                readers: int, now: float) -> tuple[list[pa.Table], dict[str, _Span], list[tuple[str, Exception]]]:
    """Decode ``fresh`` batch by batch: each batch's tables combined into one, where each file's rows
    start in them all, and the files that do not read."""

    def attempt(info: pafs.FileInfo) -> pa.Table | Exception:
        try:
            return read_file(info.path)
        except (pa.ArrowException, OSError) as err:
            return err

    pieces: list[pa.Table] = []
    spans: dict[str, _Span] = {}
    bad: list[tuple[str, Exception]] = []
    offset = 0
    pool = ThreadPoolExecutor(readers) if readers > 1 and len(fresh) > 1 else None
    try:
        for first in range(0, len(fresh), BATCH):
            batch = fresh[first:first + BATCH]
            tables = list(pool.map(attempt, batch)) if pool else [attempt(info) for info in batch]
            good = []
            for info, table in zip(batch, tables):
                if isinstance(table, Exception):
                    bad.append((info.path, table))
                    continue
                spans[info.path] = _Span(info.mtime_ns, info.size, offset, table.num_rows,
                                         frozenset(files.keys_in(table, key_columns)), _settled(info, now))
                offset += table.num_rows
                good.append(table)
            if good and not bad:
                pieces.append(files.combine(good))
    finally:
        if pool:
            pool.shutdown()
    return pieces, spans, bad
