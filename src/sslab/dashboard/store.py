"""What the dashboard knows about the results root: which studies exist, what state each is in,
and their tables with a ``study`` and a readable ``label`` column added.

Reads only the store's files (``sslab.results.store``: pyarrow, no Ray, no torch), so it works
on a laptop against a cluster's ``s3://`` root. Every problem a reader can meet (an empty root, a
study whose first trial has not landed, a store written by another schema version, a corrupt
file) becomes a message on the study, never an exception.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from sslab.results import metrics
from sslab.results import summary
from sslab.results.store import SCHEMA_VERSION, TABLES, ResultsStore, StoreError, results_root, study_stamp
from sslab.results.summary import current_setting


@dataclass
class StudyData:
    """One study as read from the store; ``problem`` says why parts of it cannot be shown."""

    name: str
    location: str
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame
    baselines: pd.DataFrame
    invariance: pd.DataFrame
    updated: float | None = None
    problem: str | None = None
    #: what the store holds beyond the setting shown (trials of other settings: ``summary.current_setting``)
    setting_note: str | None = None

    @property
    def knobs(self) -> list[str]:
        """The hyperparameters the study varies: its declared knobs, else the config columns that vary."""
        declared = [k for k in self.meta.get("knobs") or [] if f"config/{k}" in self.trials]
        if declared or self.trials.empty:
            return declared
        varying = [c for c in self.trials if c.startswith("config/") and self.trials[c].nunique(dropna=True) > 1]
        return [c.removeprefix("config/") for c in varying]

    @property
    def metric(self) -> str:
        return metrics.study_metrics(self.meta)[0][0]

    @property
    def mode(self) -> str:
        return metrics.study_metrics(self.meta)[0][1]

    @property
    def kind(self) -> str:
        return self.meta.get("kind") or ("search" if self.meta.get("search") else "grid")

    @property
    def total(self) -> int | None:
        total = self.meta.get("total_trials")
        return int(total) if total is not None else None


@dataclass
class StudyStatus:
    """One row of the Studies page."""

    name: str
    kind: str
    method: str
    state: str
    done: int
    total: int | None
    counts: dict[str, int] = field(default_factory=dict)
    best: str = ""
    best_value: float = math.nan
    best_spread: str = ""
    device_s: float = 0.0
    wall_s: float = 0.0
    images_seen: float = 0.0
    #: share of the machine's CPU time stolen while the trials ran (wall-weighted); NaN when unmeasured
    cpu_steal: float = math.nan
    updated: float | None = None
    problem: str | None = None


def filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in root:
        return pafs.FileSystem.from_uri(root)
    return pafs.LocalFileSystem(), root


def scan(root: str | None = None) -> dict[str, tuple[tuple[str, int, int], ...]]:
    """Every study folder under the root with its store's stamp (``store.study_stamp``: the
    (name, mtime_ns, size) of study.json and of each table).

    The stamps are the loaders' cache key: a study is re-read exactly when one of its files changed.
    A folder counts as a study when it holds ``study.json`` or a trials table (``trials/``, or an
    older store's ``trials.parquet``).
    """
    root = results_root(root)
    fs, base = filesystem(root)
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return {}
    found = {}
    for entry in sorted(fs.get_file_info(pafs.FileSelector(base)), key=lambda e: e.base_name):
        if entry.type != pafs.FileType.Directory or entry.base_name.startswith("."):
            continue
        files = {f.base_name: f for f in fs.get_file_info(pafs.FileSelector(entry.path))}
        if not {"study.json", "trials", "trials.parquet"} & set(files):
            continue
        found[entry.base_name] = study_stamp(fs, entry.path, files.values())
    return found


def read_study(root: str, name: str, stamp: tuple = (), setting_ids: tuple[str, ...] = ()) -> StudyData:
    """Read one study's tables, of its last run's setting or of ``setting_ids`` (an earlier run's);
    ``stamp`` (from :func:`scan`) is unused here but keys the cache."""
    store = ResultsStore(root, name)
    empty = {t: pd.DataFrame() for t in TABLES}
    updated = max((mtime for _, mtime, _ in stamp), default=0) / 1e9 or None
    try:
        meta = store.metadata()
    except (StoreError, OSError) as err:  # the store's message names the file and the way out
        return StudyData(name, store.location, {}, **empty, updated=updated, problem=str(err))
    version = meta.get("schema_version", SCHEMA_VERSION if not meta else None)
    if version != SCHEMA_VERSION:
        return StudyData(
            name, store.location, meta, **empty, updated=updated,
            problem=(f"written with results schema version {version}; this dashboard reads version {SCHEMA_VERSION}. "
                     "Open it with the sslab release that wrote it, or rerun the study to rewrite its store."),
        )
    tables, problems = {}, []
    for table in TABLES:
        try:
            tables[table] = store.read(table)
        except (StoreError, OSError) as err:  # a truncated or foreign file: say which, show the rest
            tables[table] = pd.DataFrame()
            problems.append(str(err))
    if not meta and not tables["trials"].empty:
        problems.append("study.json is missing (an interrupted or hand-made store): knobs are guessed from the "
                        "configurations that vary; rerun the study's command to rewrite it")
    # one setting of the study (its last run's): trials of other settings are never compared with it
    of_setting = {**meta, "setting_ids": list(setting_ids)} if setting_ids else meta
    shown = current_setting(tables["trials"], tables["baselines"], of_setting)
    if "trial_id" in tables["trials"]:
        hidden = set(tables["trials"]["trial_id"]) - set(shown.trials.get("trial_id", []))
        for table in ("epochs", "invariance"):  # a finished trial of another setting is not a running one
            if hidden and "trial_id" in tables[table]:
                tables[table] = tables[table][~tables[table]["trial_id"].isin(hidden)].reset_index(drop=True)
    tables["trials"], tables["baselines"] = shown.trials, shown.baselines
    data = StudyData(name, store.location, meta, **tables, updated=updated, problem="; ".join(problems) or None,
                     setting_note=shown.note)
    _annotate(data)
    return data


def configuration_label(row: pd.Series, knobs: list[str], with_method: bool = False) -> str:
    """A configuration as a reader names it: the method (when the study compares several) and every
    knob the study varies that this method has, ``pirl transform=rotation``."""
    parts = [str(row["method"])] if with_method and pd.notna(row.get("method")) else []
    parts += [f"{k}={_short(row.get(f'config/{k}'))}" for k in knobs if _present(row.get(f"config/{k}"))]
    return " ".join(parts)


def trial_label(row: pd.Series, knobs: list[str], with_method: bool = False) -> str:
    """A trial as a reader names it: its configuration and the seed, ``loss_weight=0.5 seed 1``."""
    seed = f"seed {int(row['seed'])}" if pd.notna(row.get("seed")) else ""
    return " ".join(p for p in (configuration_label(row, knobs, with_method), seed) if p)


def _present(value: Any) -> bool:
    """False for a knob the trial's method does not have (NaN or None in a study of several methods)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _annotate(data: StudyData) -> None:
    """Add ``study``, ``key`` (study/trial_id) and ``label`` to the trial-level tables.

    Trials still running have epoch rows but no trial row: they appear as ``running``."""
    knobs = data.knobs
    trials = data.trials
    if not data.epochs.empty and "trial_id" in data.epochs:
        finished = set(trials["trial_id"]) if not trials.empty else set()
        running = sorted(set(data.epochs["trial_id"]) - finished)
        if running:
            last = data.epochs[data.epochs["trial_id"].isin(running)].sort_values("epoch").groupby("trial_id").tail(1)
            rows = pd.DataFrame({"trial_id": last["trial_id"], "status": "running",
                                 "epochs": last["epoch"].astype(int) + 1, "loss": last.get("loss")})
            trials = pd.concat([trials, rows], ignore_index=True) if not trials.empty else rows.reset_index(drop=True)
    if trials.empty:
        data.trials = trials
        return
    trials = trials.copy()
    trials.insert(0, "study", data.name)
    trials["key"] = data.name + "/" + trials["trial_id"]
    if "seed" not in trials:
        trials["seed"] = math.nan
    several = "method" in trials and trials["method"].nunique(dropna=True) > 1
    named = [pd.notna(row.get("method")) for _, row in trials.iterrows()]
    trials["label"] = [f"{data.name} · {trial_label(row, knobs, several)}" if ok else f"{data.name} · {row['trial_id']}"
                       for ok, (_, row) in zip(named, trials.iterrows())]
    trials["configuration"] = [
        f"{data.name} · {configuration_label(row, knobs, True)}" if ok else f"{data.name} · {row['trial_id']}"
        for ok, (_, row) in zip(named, trials.iterrows())]
    data.trials = trials
    lookup = trials.set_index("trial_id")[["key", "label", "configuration", "status"]]
    for table in ("epochs", "invariance"):
        frame = getattr(data, table)
        if not frame.empty and "trial_id" in frame:
            frame = frame.join(lookup, on="trial_id")
            frame.insert(0, "study", data.name)
            # one row per epoch or sample repeats each trial's strings: categories keep the
            # cached copy (pickled on every page run) small: 1,000 × 200 epochs went from 90 to 12 MB
            for column in ("study", "trial_id", "key", "label", "configuration", "status"):
                frame[column] = frame[column].astype("category")
            setattr(data, table, frame)
    if not data.baselines.empty:
        data.baselines = data.baselines.assign(study=data.name)


def findings_of(data: StudyData) -> pd.DataFrame:
    """The verdict on each of the paper's findings the study declares (``summary.judge``), one row each."""
    findings = data.meta.get("findings") or []
    if not findings or data.trials.empty:
        return pd.DataFrame()
    finished = data.trials[data.trials["status"] == "ok"]
    return summary.judge_all(findings, finished, data.metric, data.mode).assign(study=data.name)


def status_of(data: StudyData, now: float | None = None) -> StudyStatus:
    """The Studies page's row: state, counts, the best configuration and the compute spent."""
    now = time.time() if now is None else now
    trials = data.trials
    finished = trials[trials["status"].isin(("ok", "failed", "stopped"))] if not trials.empty else trials
    counts = finished["status"].value_counts().to_dict() if not finished.empty else {}
    running = int((trials["status"] == "running").sum()) if not trials.empty else 0
    if running:
        counts["running"] = running
    method = ", ".join(data.meta.get("methods") or [str(data.meta.get("method", "?"))])
    status = StudyStatus(data.name, data.kind, method, "", len(finished), data.total,
                         counts=counts, updated=data.updated, problem=data.problem)
    status.state = _state(data, len(finished), now)
    cost = summary.totals(finished) if not finished.empty else {}
    status.wall_s, status.device_s, status.images_seen = (cost.get(c, 0.0) for c in ("wall_s", "device_s", "images_seen"))
    status.cpu_steal = cost.get("cpu_steal", math.nan)
    knobs = data.knobs
    if not finished.empty and knobs and data.metric in finished:
        table = summary.by_configuration(finished, knobs, data.metric, data.mode)
        if not table.empty:
            best = table[table["best"]].iloc[0]
            status.best = ", ".join(f"{k}={_short(best[f'config/{k}'])}" for k in knobs)
            status.best_value = float(best["mean"])
            n = int(best["n"])
            status.best_spread = f"± {best['std']:.3f} (n={n})" if n > 1 else "(n=1)"
    return status


def _state(data: StudyData, done: int, now: float) -> str:
    if data.problem and data.trials.empty:
        return "unreadable"
    if data.total is not None and done >= data.total:
        return "complete"
    if data.updated is not None and now - data.updated < _idle_limit(data.epochs):
        return "running"
    if done == 0 and (data.trials.empty or not (data.trials["status"] == "running").any()):
        return "not started"
    return "interrupted"


def _idle_limit(epochs: pd.DataFrame) -> float:
    """How long a study may go without writing before it counts as interrupted: three typical
    epochs (a running trial's epochs reach the store at every epoch report), at least five minutes."""
    typical = float(epochs["epoch_s"].median()) if "epoch_s" in epochs and epochs["epoch_s"].notna().any() else 0.0
    return max(300.0, 3 * typical)


def combine(studies: list[StudyData], table: str) -> pd.DataFrame:
    """One table across several studies (each row carries its ``study``)."""
    frames = [getattr(s, table) for s in studies if not getattr(s, table).empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
