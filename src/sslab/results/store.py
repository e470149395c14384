"""The results store: one tidy Parquet table per study, the only thing the
dashboard and ``sslab report`` read.

Layout under the results root (``$SSLAB_RESULTS``, default ``./results``)::

    <root>/<study>/study.json          schema version, method, search space, profile
    <root>/<study>/trials.parquet      one row per finished, failed or stopped trial
    <root>/<study>/epochs.parquet      one row per trial and epoch
    <root>/<study>/baselines.parquet   the untrained backbone's evaluation, per seed
    <root>/<study>/invariance.parquet  invariance distance samples, per trial
    <root>/<study>/ray/                Ray Tune / Train files and checkpoints

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
``finished_at``. The metric names are defined in ``src/sslab/results/metrics.py``.
epochs: ``trial_id``, ``epoch``, ``loss`` and every other per-epoch metric
(``epoch_s``, ``epoch_cpu_steal``, ...).
baselines: ``backbone``, ``setting_id`` (``spec.BaselineSpec``: backbone, data, evaluation), ``seed``,
``knn_top1``, ``probe_<tap>_top1`` and the baseline specification's fields.
invariance: ``trial_id``, ``distance``.

The root is a local path or a URI (``s3://bucket/sslab``, ``gs://...``): files
go through ``pyarrow.fs``, so a cluster's nodes and a laptop read the same
store. Every file is rewritten atomically (a temporary file renamed into
place locally; one PUT on an object store), so a reader never sees half a
table and a crash never loses rows already written.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

SCHEMA_VERSION = 2
TRIAL_STATUSES = ("ok", "failed", "stopped")
TRIAL_COLUMNS = ("trial_id", "method", "seed", "status", "error")
TABLES = ("trials", "epochs", "baselines", "invariance")

#: what a rerun does once an unreadable file is moved aside
_RECOVERY = {
    "trials": "finished trials are then recorded again from their last checkpoints, without training",
    "epochs": "unfinished trials rewrite their epochs; the epoch curves of finished trials are lost",
    "baselines": "the random-init baselines are then measured again",
    "invariance": "the invariance samples of finished trials are lost; their rows in trials.parquet are kept",
    "study": "it is written again by the next run",
}


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


def filesystem_for(location: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path on it of a local path or a URI."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


class ResultsStore:
    """Reads and appends the tables of one study."""

    def __init__(self, root: str | os.PathLike, study: str):
        self.root = results_root(root)
        self.study = study
        #: where the study lives, as the user names it (a path or a URI)
        self.location = f"{self.root}/{study}" if "://" in self.root else os.path.join(self.root, study)
        self.fs, self._base = filesystem_for(self.location)
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    # ------------------------------------------------------------------ paths
    def _path(self, name: str) -> str:
        return posixpath.join(self._base, name)

    def table_path(self, table: str) -> str:
        return self._path(f"{table}.parquet")

    @property
    def ray_storage(self) -> str:
        """Where Ray Tune and Ray Train keep this study's files and checkpoints (same storage as the store)."""
        return f"{self.location}/ray" if "://" in self.location else os.path.join(self.location, "ray")

    def _exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type == pafs.FileType.File

    def _shown(self, path: str) -> str:
        """A store path as the user names the store (a local path or a URI)."""
        return f"{self.location}/{posixpath.basename(path)}" if "://" in self.location else path

    def _unreadable(self, path: str, table: str, err: Exception) -> UnreadableStoreError:
        shown = self._shown(path)
        return UnreadableStoreError(
            f"{shown} cannot be read ({err}); move it aside (mv {shown} {shown}.unreadable) and run the "
            f"study again: {_RECOVERY[table]}"
        )

    def _write_bytes(self, path: str, data: bytes) -> None:
        try:
            self._replace(path, data)
        except OSError as err:
            raise StoreWriteError(
                f"cannot write {self._shown(path)} ({getattr(err, 'strerror', None) or err}); nothing already "
                "recorded is lost and the trials keep their checkpoints: free space or fix the permissions, "
                "then run the same command again to record them"
            ) from err

    def _replace(self, path: str, data: bytes) -> None:
        """Atomically replace a file: write beside it, then rename (one PUT on object stores)."""
        self.fs.create_dir(self._base, recursive=True)
        if not self._local:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        tmp = self._path(f".{posixpath.basename(path)}.{uuid.uuid4().hex}.tmp")
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            self.fs.move(tmp, path)
        finally:
            if self._exists(tmp):
                self.fs.delete_file(tmp)

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
            raise self._unreadable(path, "study", err) from None

    def check_readable(self) -> None:
        """Read every file of the store whole, so that a damaged one stops a run before any work."""
        self.metadata()
        for table in TABLES:
            self.read(table)

    # ---------------------------------------------------------------- tables
    def read(self, table: str) -> pd.DataFrame:
        path = self.table_path(table)
        if not self._exists(path):
            return pd.DataFrame()
        try:
            return pq.read_table(path, filesystem=self.fs).to_pandas()
        except (pa.ArrowException, OSError) as err:
            raise self._unreadable(path, table, err) from None

    def append(self, table: str, rows: Iterable[dict[str, Any]], *, replace_where: dict[str, Any] | None = None) -> None:
        """Append rows to a table; rows matching every ``replace_where`` column=value are dropped first
        (a retried trial, or a re-measured baseline, replaces its old rows). A value that is a tuple,
        list or set matches any of its members."""
        new = pd.DataFrame(list(rows))
        old = self.read(table)
        if replace_where and not old.empty:
            match = pd.Series(True, index=old.index)
            for column, value in replace_where.items():
                if column not in old:
                    match &= False
                elif isinstance(value, (tuple, list, set, frozenset)):
                    match &= old[column].isin(list(value))
                else:
                    match &= old[column] == value
            old = old[~match]
        frame = pd.concat([old, new], ignore_index=True) if not old.empty else new
        if not frame.empty:
            sink = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
            self._write_bytes(self.table_path(table), sink.getvalue().to_pybytes())

    def record_trial(self, row: dict[str, Any]) -> None:
        if row.get("status") not in TRIAL_STATUSES:
            raise ValueError(f"trial status must be one of {TRIAL_STATUSES}, got {row.get('status')!r}")
        missing = [c for c in TRIAL_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"trial row lacks columns {missing}")
        self.append("trials", [row], replace_where={"trial_id": row["trial_id"]})

    def record_epochs(self, histories: dict[str, list[dict[str, Any]]]) -> None:
        """Replace the per-epoch rows of each trial in ``histories`` ({trial_id: rows}), in one write
        (a retried trial rewrites its history)."""
        self.append("epochs", [{"trial_id": key, **r} for key, history in histories.items() for r in history],
                    replace_where={"trial_id": tuple(histories)})

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
