"""The files of the results store's tables: one Parquet file per key, read together as one table.

A table's key is what a write replaces whole (``KEYS``): a trial (``trial_id``) for trials,
epochs and invariance, a baseline setting and seed for baselines. Each key's rows live in one file
named after the key (``file_name``), so a write costs what that key holds, never what the table
holds; the table is every file's rows, in file-name order, with the union of their columns
(``combine``): a column a file lacks reads as null (NaN), as ``pandas.concat`` gave, and columns
of different numeric types widen (int64 and double to double). Where two files disagree beyond
that (a string and a number in one column), the files are converted one schema at a time and
concatenated by pandas (``to_frame``), which keeps both as objects.

Pure pyarrow on the write path (``to_arrow``, ``encode``): a study's driver writes a running
trial's epochs on every report. No Ray, no torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: each table's key columns: the rows of one key are one file, written (and replaced) whole
KEYS: dict[str, tuple[str, ...]] = {
    "trials": ("trial_id",),
    "epochs": ("trial_id",),
    "invariance": ("trial_id",),
    "baselines": ("setting_id", "seed"),
    # pictures of what was learned (``pictures.py``): a trial's (or baseline's), a dataset's
    "neighbours": ("trial_id",),
    "embedding": ("trial_id",),
    "thumbnails": ("dataset",),
    # the labelled check of a label-free study's pick (``picks.py``)
    "label_checks": ("trial_id",),
}
#: the Parquet key-value metadata entry holding the file's key (a JSON list)
KEY_METADATA = b"sslab.key"
SUFFIX = ".parquet"

#: characters kept as they are in a file name (a trial id's alphabet: ``spec._readable``)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,+=-]")
#: the longest stem kept whole (file systems stop at 255 bytes); longer ones are cut and hashed
_LONGEST = 200


def key_value(value: Any) -> Any:
    """A key's value as a plain Python value (a numpy scalar unwrapped, an integral float as an int),
    so that ``seed`` 0, ``np.int64(0)`` and 0.0 name one file, as ``==`` matched them before."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def key_of(row: Mapping[str, Any], columns: Sequence[str]) -> tuple:
    return tuple(key_value(row[c]) for c in columns)


def _escape(text: str, separator: bool) -> str:
    out = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), text)
    return out.replace("-", "%2D") if separator else out


def file_name(key: tuple) -> str:
    """The file of ``key``: its values, escaped and joined by ``-`` (``pirl-...-seed=0-<hash>.parquet``,
    ``<setting_id>-<seed>.parquet``). Distinct keys never share a name: ``%`` and ``~`` are escaped, so
    is ``-`` inside the values of a key of several columns; a stem over 200 bytes is cut to 150 and
    ends with ``~`` and a hash of the whole."""
    stem = "-".join(_escape(str(key_value(v)), separator=len(key) > 1) for v in key)
    if stem.startswith("."):  # a hidden name is a temporary file's
        stem = "%2E" + stem[1:]
    if len(stem) > _LONGEST:
        stem = f"{stem[:150]}~{hashlib.sha256(stem.encode()).hexdigest()[:16]}"
    return stem + SUFFIX


def is_table_file(name: str) -> bool:
    """Whether a file name in a table's folder is one of its files (not a temporary file, not one
    moved aside as ``.unreadable``)."""
    return name.endswith(SUFFIX) and not name.startswith(".")


def to_arrow(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Rows as an Arrow table: every key of every row is a column, in first-seen order; a row without
    it, or a NaN, is null. The same columns and types ``pa.Table.from_pandas(pd.DataFrame(rows))``
    gives (the store's conversion before), without pandas; values arrow cannot put in one column go
    through pandas, which raises as it did."""
    columns = dict.fromkeys(k for row in rows for k in row)
    try:
        return pa.table({c: pa.array([row.get(c) for row in rows], from_pandas=True) for c in columns})
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        table = pa.Table.from_pandas(pd.DataFrame(list(rows)), preserve_index=False)
        return table.replace_schema_metadata(None)


def empty(key_columns: Sequence[str], key: tuple) -> pa.Table:
    """A key's file with no rows: it hides the key's rows in a table's legacy single file."""
    return pa.table({c: pa.array([v]).slice(0, 0) for c, v in zip(key_columns, key)})


def encode(table: pa.Table, key: tuple) -> bytes:
    """A key's rows as the bytes of its Parquet file, the key in the file's metadata."""
    table = table.replace_schema_metadata({KEY_METADATA: json.dumps(list(key)).encode()})
    sink = pa.BufferOutputStream()
    # plain encoding: a dictionary saves little in files of one key (snappy packs its repeated id)
    # and costs the most of the write of a report's epochs
    pq.write_table(table, sink, use_dictionary=False)
    return sink.getvalue().to_pybytes()


def decode(data: pa.Buffer | bytes) -> pa.Table:
    return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)


def file_key(table: pa.Table) -> tuple | None:
    """The key a file was written for (None for a file without one, e.g. a legacy table)."""
    raw = (table.schema.metadata or {}).get(KEY_METADATA)
    return tuple(key_value(v) for v in json.loads(raw)) if raw else None


def keys_in(table: pa.Table, columns: Sequence[str]) -> set[tuple]:
    """The keys a file holds: the one it was written for (all its rows are that key's), else its rows'."""
    key = file_key(table)
    if key is not None:
        return {key}
    if all(c in table.column_names for c in columns) and table.num_rows:
        return set(zip(*(map(key_value, table.column(c).to_pylist()) for c in columns)))
    return set()


def without_keys(table: pa.Table, columns: Sequence[str], keys: set[tuple]) -> pa.Table:
    """``table`` without the rows of ``keys`` (a legacy table's rows that a key's file replaces)."""
    if not keys or not all(c in table.column_names for c in columns) or not table.num_rows:
        return table
    values = zip(*(map(key_value, table.column(c).to_pylist()) for c in columns))
    keep = pa.array([key not in keys for key in values], pa.bool_())
    return table.filter(keep)


def _groups(tables: Sequence[pa.Table]) -> tuple[list[list[int]], list[pa.Schema]]:
    """The tables (without metadata) grouped by schema, first seen first: each group's indices and schema."""
    groups: dict[pa.Schema, list[int]] = {}
    for i, table in enumerate(tables):
        groups.setdefault(table.schema, []).append(i)
    return list(groups.values()), list(groups)


def _order(tables: Sequence[pa.Table], groups: list[list[int]]) -> np.ndarray | None:
    """Row positions that put the groups' rows, concatenated group by group, back in table order
    (None when they already are)."""
    if len(groups) == 1:
        return None
    starts, position = {}, 0
    for group in groups:
        for i in group:
            starts[i] = position
            position += tables[i].num_rows
    return np.concatenate([np.arange(starts[i], starts[i] + t.num_rows) for i, t in enumerate(tables)] or
                          [np.arange(0)])


def _unified(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _parts(tables: Sequence[pa.Table]) -> tuple[list[pa.Table], list[list[int]], list[pa.Table]]:
    """The tables without metadata, their groups by schema, and each group's rows as one table."""
    tables = [t.replace_schema_metadata(None) for t in tables]
    groups, _ = _groups(tables)
    # one chunk per column: 10,000 files' chunks make every later step (cast, take, to_pandas) slow
    parts = [pa.concat_tables([tables[i] for i in group]).combine_chunks() for group in groups]
    return tables, groups, parts


def combine(tables: Iterable[pa.Table]) -> pa.Table:
    """The tables' rows in order, with the union of their columns (missing: null; int64 and double:
    double). Raises ``pa.ArrowTypeError``/``pa.ArrowInvalid`` where two columns of one name cannot
    be one type."""
    tables, groups, parts = _parts(list(tables))
    if not parts:
        return pa.table({})
    if len(parts) == 1:
        return parts[0]
    schema = pa.unify_schemas([p.schema for p in parts], promote_options="permissive")
    whole = pa.concat_tables([_unified(part, schema) for part in parts]).combine_chunks()
    return whole.take(pa.array(_order(tables, groups)))


def to_frame(tables: Sequence[pa.Table]) -> pd.DataFrame:
    """The tables as one DataFrame (``combine``); where their columns cannot be one Arrow type, each
    schema's rows are converted apart and concatenated by pandas (object columns), in order."""
    if not tables:
        return pd.DataFrame()
    try:
        return combine(tables).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        tables, groups, parts = _parts(tables)
        frames = [part.to_pandas() for part in parts]
        whole = pd.concat(frames, ignore_index=True)
        order = _order(tables, groups)
        return whole if order is None else whole.iloc[order].reset_index(drop=True)

