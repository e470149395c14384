"""The results store: one tidy Parquet table per study, the only thing the
dashboard and ``sslab report`` read.

Layout under the results root (``$SSLAB_RESULTS``, default ``./results``)::

    <root>/<study>/study.json          schema version, method, search space, profile
    <root>/<study>/trials.parquet      one row per finished, failed or stopped trial
    <root>/<study>/epochs.parquet      one row per trial and epoch
    <root>/<study>/baselines.parquet   the untrained backbone's evaluation, per seed
    <root>/<study>/invariance.parquet  invariance distance samples, per trial
    <root>/<study>/ray/                Ray Tune / Train files and checkpoints

Schema (version 1)
------------------
trials: ``trial_id`` (stable across re-runs: method, configuration and seed),
``method``, ``seed``, ``status`` (``ok`` / ``failed`` / ``stopped``), ``error``,
``config/<name>`` per hyperparameter, ``knn_top1``, ``probe_<tap>_top1`` per
probed tap, ``invariance_l2_mean``, ``loss``, ``epochs``, ``wall_s``,
``images_seen``, ``finished_at``.
epochs: ``trial_id``, ``epoch``, ``loss`` and every other per-epoch metric.
baselines: ``backbone``, ``seed``, ``knn_top1``, ``probe_<tap>_top1``.
invariance: ``trial_id``, ``distance``.

Every file is rewritten atomically (temporary file, then rename), so a reader
never sees half a table and a crash never loses rows already written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

SCHEMA_VERSION = 1
TRIAL_STATUSES = ("ok", "failed", "stopped")
TRIAL_COLUMNS = ("trial_id", "method", "seed", "status", "error")


def results_root(override: str | os.PathLike | None = None) -> Path:
    """The results root: a flag wins over ``$SSLAB_RESULTS``, which wins over ``./results``."""
    return Path(override or os.environ.get("SSLAB_RESULTS") or "results").expanduser()


def _write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ResultsStore:
    """Reads and appends the tables of one study."""

    def __init__(self, root: str | os.PathLike, study: str):
        self.root = Path(root)
        self.study = study
        self.path = self.root / study

    # ------------------------------------------------------------------ paths
    def table_path(self, table: str) -> Path:
        return self.path / f"{table}.parquet"

    @property
    def ray_storage(self) -> Path:
        return (self.path / "ray").resolve()

    def check_writable(self) -> None:
        """Fail before any work if the study folder cannot be written."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise PermissionError(
                f"cannot write the results store at {self.path} ({err.strerror or err}); "
                "set SSLAB_RESULTS or --results to a writable folder"
            ) from err

    # -------------------------------------------------------------- metadata
    def write_metadata(self, meta: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        payload = {"schema_version": SCHEMA_VERSION, "study": self.study, **meta}
        tmp = self.path / ".study.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, self.path / "study.json")

    def metadata(self) -> dict[str, Any]:
        path = self.path / "study.json"
        return json.loads(path.read_text()) if path.exists() else {}

    # ---------------------------------------------------------------- tables
    def read(self, table: str) -> pd.DataFrame:
        path = self.table_path(table)
        return pd.read_parquet(path) if path.exists() else pd.DataFrame()

    def append(self, table: str, rows: Iterable[dict[str, Any]], *, replace_where: dict[str, Any] | None = None) -> None:
        """Append rows to a table; rows matching every ``replace_where`` column=value are dropped first
        (a retried trial, or a re-measured baseline, replaces its old rows)."""
        new = pd.DataFrame(list(rows))
        old = self.read(table)
        if replace_where and not old.empty:
            match = pd.Series(True, index=old.index)
            for column, value in replace_where.items():
                match &= old[column] == value if column in old else False
            old = old[~match]
        frame = pd.concat([old, new], ignore_index=True) if not old.empty else new
        if not frame.empty:
            _write_parquet_atomic(frame, self.table_path(table))

    def record_trial(self, row: dict[str, Any]) -> None:
        if row.get("status") not in TRIAL_STATUSES:
            raise ValueError(f"trial status must be one of {TRIAL_STATUSES}, got {row.get('status')!r}")
        missing = [c for c in TRIAL_COLUMNS if c not in row]
        if missing:
            raise ValueError(f"trial row lacks columns {missing}")
        self.append("trials", [row], replace_where={"trial_id": row["trial_id"]})

    def record_epochs(self, trial_id: str, rows: list[dict[str, Any]]) -> None:
        """Replace the per-epoch rows of one trial (a retried trial rewrites its history)."""
        self.append("epochs", [{"trial_id": trial_id, **r} for r in rows], replace_where={"trial_id": trial_id})

    def record_invariance(self, trial_id: str, distances: list[float]) -> None:
        self.append("invariance", [{"trial_id": trial_id, "distance": float(d)} for d in distances],
                    replace_where={"trial_id": trial_id})

    def record_baseline(self, row: dict[str, Any]) -> None:
        self.append("baselines", [row], replace_where={"backbone": row["backbone"], "seed": row["seed"]})

    def finished_trial_ids(self, statuses: tuple[str, ...] = TRIAL_STATUSES) -> set[str]:
        trials = self.read("trials")
        if trials.empty:
            return set()
        return set(trials.loc[trials["status"].isin(statuses), "trial_id"])
