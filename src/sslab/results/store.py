"""The results store: a study's tables as Parquet, the only thing the dashboard and ``sslab report`` read.

Layout under the results root (``$SSLAB_RESULTS``, default ``./results``)::

    <root>/<study>/study.json                           schema version, method, search space, profile
    <root>/<study>/trials/<trial_id>.parquet            a finished, failed or stopped trial's row
    <root>/<study>/epochs/<trial_id>.parquet            a trial's rows, one per epoch
    <root>/<study>/invariance/<trial_id>.parquet        a trial's invariance distance samples
    <root>/<study>/baselines/<setting_id>-<seed>.parquet  the untrained backbone's evaluation of one seed
    <root>/<study>/neighbours/, embedding/, thumbnails/  pictures of what was learned (``pictures.py``)
    <root>/<study>/ray/                                 Ray Tune / Train files and checkpoints

Each table is a folder of Parquet files, one per key (a trial; a baseline setting and seed:
``table_files.KEYS``), read together as one table (``read``): the files' rows in file-name order,
with the union of their columns (a column a file lacks is NaN/None, as ``pandas.concat`` gave; an
integer column meeting a float one reads as float). A write adds or replaces the files of the
keys it holds and nothing else: no table is ever rewritten whole, so a write costs what its trial
holds, however large the study (``benchmarks/store_writes.py``), and a running trial's epochs are
written on every report. A rewrite of a key (a retried or resumed trial, a trial's growing epoch
history, a re-measured baseline) replaces that key's file, atomically: a temporary file renamed into
place locally, one upload on an object store. A reader never sees half a file and a crash never loses
a row already written. Epochs are one file per trial, rewritten with the trial's whole history on
each report (its cost grows with that trial's epochs only); one file per trial *and epoch* would
make the same writes but leave a 10,000-trial, 100-epoch study a million files to read. Reading
decodes every file of a table once; reading it again decodes only the files written since
(``table_reads``), so a dashboard following a running study re-reads little.

Stores written before this layout (one file per table: ``<study>/trials.parquet``, ``epochs.parquet``,
``baselines.parquet``, ``invariance.parquet``) still read and take new writes. Such a *legacy*
file is read as the first part of its table and never written again; a key's file in the folder
wins over the key's rows in it (a trial rewritten since replaces its legacy row; a key replaced by no
rows is hidden by an empty file). Nothing is migrated: a migration would rewrite every old row
(the very cost this layout removes), and a crash halfway would need its own recovery, while the
legacy file read as it is stays consistent at every instant. An older sslab reads a store written in
this layout as empty (it looks for the single files only): the row schema did not change, so
``SCHEMA_VERSION`` did not either.

Schema (version 2: trials carry their specification and setting)
-----------------------------------------------------------------
trials: ``trial_id`` (the readable name and a hash of the trial's whole specification:
``spec.TrialSpec``), ``setting_id`` and ``baseline_setting`` (what it is compared within and with),
the specification's fields (``config/<name>``, ``train/<field>``, ``eval/<field>``, ``data/<field>``),
where it ran (``host/<field>``: ``provenance.py``),
``method``, ``seed``, ``status`` (``ok`` / ``failed`` / ``stopped``), ``error``,
``config/<name>`` per hyperparameter (the union over a study's methods; a
method without a knob has none), ``knn_top1``, ``probe_<tap>_top1`` per
probed tap, ``invariance_l2_mean``, ``loss``, ``epochs``, ``wall_s``,
``images_seen``, ``cpu_steal`` (the share of the machine's CPU time stolen by
its hypervisor while the trial trained, over every attempt of a resumed trial up
to its last checkpoint; NaN where unmeasured),
``finished_at``. The row is ``rows.TrialRow``; the metric names are defined in
``src/sslab/results/metrics.py``.
epochs: ``trial_id``, ``epoch``, ``loss`` and every other per-epoch metric
(``epoch_s``, ``epoch_cpu_steal``, ...).
baselines: ``backbone``, ``setting_id`` (``spec.BaselineSpec``: backbone, data, evaluation), ``seed``,
``knn_top1``, ``probe_<tap>_top1`` and the baseline specification's fields.
invariance: ``trial_id``, ``distance``.

The root is a local path or a URI (``s3://bucket/sslab``, ``gs://...``): files
go through ``pyarrow.fs``, so a cluster's nodes and a laptop read the same store.
"""

from __future__ import annotations

import itertools
import json
import os
import posixpath
import shlex
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sslab.results import table_files as files
from sslab.results import table_reads as reads
from sslab.results.rows import TrialRow

SCHEMA_VERSION = 2
TRIAL_STATUSES = ("ok", "failed", "stopped")
TRIAL_COLUMNS = ("trial_id", "method", "seed", "status", "error")
TABLES = ("trials", "epochs", "baselines", "invariance")

#: what a rerun does once an unreadable file is moved aside
_RECOVERY = {
    "trials": "finished trials are then recorded again from their last checkpoints, without training",
    "epochs": "unfinished trials rewrite their epochs; the epoch curves of finished trials are lost",
    "baselines": "the random-init baselines are then measured again",
    "invariance": "the invariance samples of finished trials are lost; their rows in the trials table are kept",
    "neighbours": "those trials' neighbours are lost; their rows are kept",
    "embedding": "those trials' embedding maps are lost; their rows are kept",
    "thumbnails": "the dataset's thumbnails are then made again",
    "label_checks": "the study's pick is then evaluated with labels again",
    "study": "it is written again by the next run",
}
#: files read at once from an object store (each read is a round trip), and from a local disk
_REMOTE_READERS = 32
_LOCAL_READERS = min(8, os.cpu_count() or 1)
#: the unreadable files an error names one by one (the rest are counted)
_NAMED = 5


class StoreError(Exception):
    """The results store cannot be used as it is; the message names the file, the cause and the fix."""


class UnreadableStoreError(StoreError):
    """A file of the store exists but does not read (truncated, corrupt, not Parquet)."""


class StoreWriteError(StoreError):
    """A file of the store could not be written (disk full, permissions, a lost bucket)."""


def results_root(override: str | os.PathLike | None = None) -> str:
    """The results root: a flag wins over ``$SSLAB_RESULTS``, which wins over ``./results``.

    A local path comes back absolute (Ray's storage needs one); a URI comes back as given.
    """
    root = str(override or os.environ.get("SSLAB_RESULTS") or "results")
    return root.rstrip("/") if "://" in root else os.path.abspath(os.path.expanduser(root))


def results_flag(root: str | os.PathLike | None) -> str:
    """`` --results ROOT`` for a command suggested to the user, where ``root`` (the ``--results`` given)
    is not the default root (``$SSLAB_RESULTS``, else ``./results``); "" otherwise."""
    if not root or results_root(root) == results_root(None):
        return ""
    return f" --results {shlex.quote(os.fspath(root))}"


def filesystem_for(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it of a local path or a URI."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def _listing(fs: pafs.FileSystem, folder: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))


def study_stamp(fs: pafs.FileSystem, folder: str,
                entries: Iterable[pafs.FileInfo] | None = None) -> tuple[tuple[str, int, int], ...]:
    """What says whether a study's store changed: ``(name, mtime_ns, size)`` of ``study.json`` and of
    each legacy table file, and per table folder (``trials/``, ...) its newest file's mtime and its
    files' total size. ``entries``: the study folder's listing, where the caller has it."""
    entries = {e.base_name: e for e in (_listing(fs, folder) if entries is None else entries)}
    stamp = []
    for name in ("study.json", *(f"{t}.parquet" for t in TABLES)):
        if name in entries and entries[name].type == pafs.FileType.File:
            stamp.append((name, entries[name].mtime_ns or 0, entries[name].size or 0))
    for table in TABLES:
        if table in entries and entries[table].type == pafs.FileType.Directory:
            found = [e for e in _listing(fs, entries[table].path) if files.is_table_file(e.base_name)]
            stamp.append((f"{table}/", max((e.mtime_ns or 0 for e in found), default=0),
                          sum(e.size or 0 for e in found) + len(found)))
    return tuple(stamp)


class ResultsStore:
    """Reads and writes the tables of one study (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike, study: str):
        self.root = results_root(root)
        self.study = study
        #: where the study lives, as the user names it (a path or a URI)
        self.location = f"{self.root}/{study}" if "://" in self.root else os.path.join(self.root, study)
        self.fs, self._base = filesystem_for(self.location)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)
        #: folders this store made (made once per store object: each check is a request on an object store)
        self._folders: set[str] = set()

    # ------------------------------------------------------------------ paths
    def _path(self, name: str) -> str:
        return posixpath.join(self._base, name)

    def table_folder(self, table: str) -> str:
        """The folder of a table's files, one per key."""
        return self._path(table)

    def table_path(self, table: str) -> str:
        """The table's single file as stores before the per-key layout wrote it (read, never written)."""
        return self._path(f"{table}.parquet")

    def key_path(self, table: str, key: Any) -> str:
        """The file holding one key's rows: a trial id (trials, epochs, invariance) or a
        ``(setting_id, seed)`` pair (baselines)."""
        key = key if isinstance(key, tuple) else (key,)
        return posixpath.join(self.table_folder(table), files.file_name(tuple(map(files.key_value, key))))

    @property
    def ray_storage(self) -> str:
        """Where Ray Tune and Ray Train keep this study's files and checkpoints (same storage as the store)."""
        return f"{self.location}/ray" if "://" in self.location else os.path.join(self.location, "ray")

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _shown(self, path: str) -> str:
        """A store path as the user names the store (a local path or a URI)."""
        if "://" not in self.location:
            return path
        return f"{self.location}/{posixpath.relpath(path, self._base)}"

    def _unreadable(self, bad: list[tuple[str, Exception]], table: str) -> UnreadableStoreError:
        """The files of ``bad`` ((path, why) each) named with the way out: move them aside, run again."""
        shown = [(self._shown(p), err) for p, err in bad]
        named = shown[:_NAMED]
        more = len(shown) - len(named)
        moves = "; ".join(f"mv {s} {s}.unreadable" for s, _ in named)
        return UnreadableStoreError(
            "; ".join(f"{s} cannot be read ({err})" for s, err in named)
            + (f"; and {more} more file(s) of {posixpath.dirname(named[-1][0])} cannot be read" if more else "")
            + f"; move {'it' if len(shown) == 1 else 'them'} aside ({moves}"
            + ("; the others alike" if more else "") + f") and run the study again: {_RECOVERY[table]}"
        )

    # ----------------------------------------------------------------- writes
    def _write_bytes(self, path: str, data: bytes) -> None:
        try:
            self._replace(path, data)
        except OSError as err:
            raise self._write_error(path, err) from err

    def _write_error(self, path: str, err: OSError) -> StoreWriteError:
        return StoreWriteError(
            f"cannot write {self._shown(path)} ({getattr(err, 'strerror', None) or err}); nothing already "
            "recorded is lost and the trials keep their checkpoints: free space or fix the permissions, "
            "then run the same command again to record them"
        )

    def _make_folder(self, folder: str, *, again: bool = False) -> None:
        if again or folder not in self._folders:
            self.fs.create_dir(folder, recursive=True)
            self._folders.add(folder)

    def _replace(self, path: str, data: bytes) -> None:
        """Atomically replace a file: write beside it, then rename; on an object store, one upload (the
        object appears whole once it completes)."""
        folder = posixpath.dirname(path)
        self._make_folder(folder)
        if not self._local:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        tmp = posixpath.join(folder, f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            try:
                out = self.fs.open_output_stream(tmp)
            except FileNotFoundError:  # the folder went away since this store made it
                self._make_folder(folder, again=True)
                out = self.fs.open_output_stream(tmp)
            with out:
                out.write(data)
            self.fs.move(tmp, path)
        except BaseException:
            if self._exists(tmp):
                self.fs.delete_file(tmp)
            raise

    def check_writable(self) -> None:
        """Fail before any work if the study folder cannot be written."""
        probe = self._path(".write-test")
        try:
            self._replace(probe, b"ok")
            self.fs.delete_file(probe)
        except OSError as err:
            raise PermissionError(
                f"cannot write the results store at {self.location} ({getattr(err, 'strerror', None) or err}); "
                "set SSLAB_RESULTS or --results to a writable folder or bucket"
            ) from err

    # -------------------------------------------------------------- metadata
    def write_metadata(self, meta: dict[str, Any]) -> None:
        payload = {"schema_version": SCHEMA_VERSION, "study": self.study, **meta}
        self._write_bytes(self._path("study.json"), json.dumps(payload, indent=2, default=str).encode())

    def metadata(self) -> dict[str, Any]:
        path = self._path("study.json")
        if not self._exists(path):
            return {}
        try:
            with self.fs.open_input_stream(path) as src:
                return json.loads(src.read())
        except (OSError, ValueError) as err:  # ValueError: not JSON (a truncated write by another tool)
            raise self._unreadable([(path, err)], "study") from None

    def check_readable(self) -> None:
        """Read every file of the store whole, so that a damaged one stops a run before any work."""
        self.metadata()
        for table in TABLES:
            self.read(table)

    def stamp(self) -> tuple[tuple[str, int, int], ...]:
        """``study_stamp`` of this study: changes exactly when the store is written."""
        return study_stamp(self.fs, self._base)

    def updated(self, table: str) -> float | None:
        """When a file of ``table`` was last written (seconds since the epoch), None if it has none."""
        times = [e.mtime_ns for e in self._files(table) if e.mtime_ns]
        legacy = self.fs.get_file_info(self.table_path(table))
        if legacy.type == pafs.FileType.File and legacy.mtime_ns:
            times.append(legacy.mtime_ns)
        return max(times) / 1e9 if times else None

    # ---------------------------------------------------------------- reading
    def _files(self, table: str) -> list[pafs.FileInfo]:
        """The table's files, in name order."""
        found = [e for e in _listing(self.fs, self.table_folder(table))
                 if e.type == pafs.FileType.File and files.is_table_file(e.base_name)]
        return sorted(found, key=lambda e: e.base_name)

    def _read_file(self, path: str) -> pa.Table:
        if self._local:
            with self.fs.open_input_file(path) as src:
                return pq.ParquetFile(src).read(use_threads=False)  # threads cost more than they save on a small file
        with self.fs.open_input_stream(path) as src:  # one GET, where a random-access file makes several
            return files.decode(src.read())

    def _readers(self, files_count: int) -> int:
        # decoding a file lets go of the GIL: locally, one reader per core; remotely, many (each
        # read is a round trip)
        return min(_LOCAL_READERS, files_count // 16) if self._local else min(_REMOTE_READERS, files_count)

    def _read_files(self, found: list[pafs.FileInfo], table: str) -> list[pa.Table]:
        """Every file whole, each its own table; an unreadable one (or several) raises, naming each."""

        def attempt(info: pafs.FileInfo) -> pa.Table | Exception:
            try:
                return self._read_file(info.path)
            except (pa.ArrowException, OSError) as err:
                return err

        readers = self._readers(len(found))
        if readers < 2:
            read = [attempt(info) for info in found]
        else:
            with ThreadPoolExecutor(readers) as pool:
                read = list(pool.map(attempt, found))
        bad = [(info.path, r) for info, r in zip(found, read) if isinstance(r, Exception)]
        if bad:
            raise self._unreadable(bad, table) from None
        return read

    def _file(self, path: str) -> pafs.FileInfo | None:
        info = self.fs.get_file_info(path)
        return info if info.type == pafs.FileType.File else None

    def read(self, table: str) -> pd.DataFrame:
        """The whole table (empty if nothing was written): its legacy file's rows (less the keys a
        file replaces), then each key's file's, with the union of their columns (see the module
        docstring). Files read before and unchanged since are not decoded again (``table_reads``)."""
        found, legacy = self._files(table), self._file(self.table_path(table))
        columns, bad = files.KEYS[table], []

        def folder(name: str, infos: list[pafs.FileInfo]) -> tuple[pa.Table, set[tuple]] | None:
            try:
                return reads.read_folder((self.fs.type_name, name), infos, self._read_file, columns,
                                         readers=self._readers(len(infos)))
            except reads.UnreadableFiles as err:
                bad.extend(err.bad)
                return None

        try:
            old = folder(legacy.path, [legacy]) if legacy else None
            new = folder(self.table_folder(table), found)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # columns that cannot be one type: pandas joins them
            return files.to_frame(self._tables(table))
        if bad:
            raise self._unreadable(bad, table)
        parts = [files.without_keys(old[0], columns, new[1] if new else set())] if old else []
        parts += [new[0]] if new else []
        return files.to_frame(parts) if parts else pd.DataFrame()

    def _tables(self, table: str) -> list[pa.Table]:
        """The table's parts, one per file, in reading order: its legacy file's rows (less the keys a
        file replaces), then each key's file's."""
        found = self._files(table)
        legacy = self._file(self.table_path(table))
        parts = self._read_files(found + [legacy] if legacy else found, table)
        if not legacy:
            return parts
        columns = files.KEYS[table]
        replaced = set().union(*(files.keys_in(part, columns) for part in parts[:-1]))
        return [files.without_keys(parts[-1], columns, replaced), *parts[:-1]]

    def _rows_of(self, table: str, key: tuple) -> pa.Table | None:
        """A key's rows as stored: its file's, else its rows in the legacy file (None: no rows)."""
        mine = self._file(self.key_path(table, key))
        if mine:
            return self._read_files([mine], table)[0]
        legacy = self._file(self.table_path(table))
        if legacy:
            old = self._read_files([legacy], table)[0]
            others = files.keys_in(old, files.KEYS[table]) - {key}
            rows = files.without_keys(old, files.KEYS[table], others)
            return rows if rows.num_rows else None
        return None

    # ---------------------------------------------------------------- writing
    def _replaced_keys(self, table: str, replace_where: Mapping[str, Any]) -> set[tuple]:
        columns = files.KEYS[table]
        if set(replace_where) != set(columns):
            raise ValueError(f"replace_where of {table} names its key columns {list(columns)}, got "
                             f"{list(replace_where)}: the store replaces the rows of whole keys")
        values = [replace_where[c] if isinstance(replace_where[c], (tuple, list, set, frozenset))
                  else [replace_where[c]] for c in columns]
        return {tuple(map(files.key_value, key)) for key in itertools.product(*values)}

    def append(self, table: str, rows: Iterable[Mapping[str, Any]] | pd.DataFrame, *,
               replace_where: Mapping[str, Any] | None = None) -> None:
        """Add rows to a table, each to its key's file; with ``replace_where`` ({key column: value},
        a tuple, list or set of values matching any), the stored rows of those keys are dropped first
        (a retried trial, or a re-measured baseline, replaces its rows), and a key named there with
        no new rows is left with none. Only the files of the keys written are touched."""
        if isinstance(rows, pd.DataFrame):
            rows = rows.to_dict("records")
        columns = files.KEYS[table]
        by_key: dict[tuple, list[Mapping[str, Any]]] = {}
        for row in rows:
            missing = [c for c in columns if c not in row]
            if missing:
                raise ValueError(f"a row of {table} lacks its key columns {missing}")
            by_key.setdefault(files.key_of(row, columns), []).append(row)
        self._write_keys(table, by_key, self._replaced_keys(table, replace_where) if replace_where else set())

    def _write_keys(self, table: str, by_key: Mapping[tuple, list[Mapping[str, Any]]], replaced: set[tuple]) -> None:
        """Write each key's rows to its file: after its stored rows, or instead of them for a key in
        ``replaced``; a replaced key without rows is left with none."""
        for key, new in by_key.items():
            data = files.to_arrow(new)
            old = None if key in replaced else self._rows_of(table, key)
            self._write_key(table, key, files.combine([old, data]) if old is not None else data)
        for key in replaced - set(by_key):
            self._drop_key(table, key)

    def _write_key(self, table: str, key: tuple, data: pa.Table) -> None:
        self._write_bytes(self.key_path(table, key), files.encode(data, key))

    def _drop_key(self, table: str, key: tuple) -> None:
        """No rows for ``key``: its file goes, or, where a legacy file may hold the key's rows, an
        empty file hides them."""
        if self._exists(self.table_path(table)):
            self._write_key(table, key, files.empty(files.KEYS[table], key))
            return
        path = self.key_path(table, key)
        try:
            if self._exists(path):
                self.fs.delete_file(path)
        except OSError as err:
            raise self._write_error(path, err) from err

    def record_trial(self, row: TrialRow | Mapping[str, Any]) -> None:
        """A trial's row (``rows.TrialRow``, or its ``to_record()``), replacing the trial's file."""
        if isinstance(row, TrialRow):
            row = row.to_record()
        if row.get("status") not in TRIAL_STATUSES:
            raise ValueError(f"trial status must be one of {TRIAL_STATUSES}, got {row.get('status')!r}")
        missing = [c for c in TRIAL_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"trial row lacks columns {missing}")
        self.append("trials", [row], replace_where={"trial_id": row["trial_id"]})

    def record_epochs(self, histories: dict[str, list[dict[str, Any]]]) -> None:
        """Replace the per-epoch rows of each trial in ``histories`` ({trial_id: rows}), one file per
        trial (a retried trial rewrites its history)."""
        keys = {(files.key_value(key),): [{"trial_id": key, **r} for r in history] for key, history in histories.items()}
        self._write_keys("epochs", {key: rows for key, rows in keys.items() if rows}, set(keys))

    def record_invariance(self, trial_id: str, distances: list[float]) -> None:
        self.append("invariance", [{"trial_id": trial_id, "distance": float(d)} for d in distances],
                    replace_where={"trial_id": trial_id})

    def record_baseline(self, row: dict[str, Any]) -> None:
        """One seed's random-init baseline, replacing the row of the same baseline setting and seed."""
        self.append("baselines", [row], replace_where={"setting_id": row["setting_id"], "seed": row["seed"]})

    def finished_trial_ids(self, statuses: tuple[str, ...] = TRIAL_STATUSES) -> set[str]:
        trials = self.read("trials")
        if trials.empty:
            return set()
        return set(trials.loc[trials["status"].isin(statuses), "trial_id"])

    def trial_ids_of_settings(self, setting_ids: Iterable[str]) -> list[str]:
        """The recorded trials of the given settings (``spec.TrialSpec.setting_id``)."""
        trials = self.read("trials")
        if trials.empty or "setting_id" not in trials:
            return []
        return list(trials.loc[trials["setting_id"].isin(list(setting_ids)), "trial_id"])

    @property
    def lock_path(self) -> str:
        """The file that says which process writes this store (``store_lock.StoreLock``)."""
        return self._path(".lock")
