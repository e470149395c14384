"""A trial's row of the trials table, typed: what is recorded of a finished, stopped or failed trial.

``TrialRow.from_result`` builds it from the trial's last result (the dict its loop reports, with
its metrics, timings, counts and provenance) for every status alike; ``to_record`` gives the row
as stored, one column per field and per entry of the open-ended groups (``config/<name>`` ...,
``knn_top1``, ``probe_<tap>_top1`` ..., ``host/<field>``), in the order the store has always
written them. Pure Python: no Ray, no torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from sslab.results import metrics as names

#: the identity columns before the specification's fields
_IDENTITY = ("trial_id", "setting_id", "baseline_setting", "method", "seed")
STATUSES = ("ok", "stopped", "failed")


def _float(result: Mapping[str, Any], key: str) -> float:
    return float(result.get(key, math.nan))


@dataclass
class TrialRow:
    """One trial's row. ``None`` in an optional field means the column is not recorded for this
    trial (a failed trial's row has no ``train_s``, ``eval_s`` or ``cpu_steal``; only a stopped
    trial's has ``monitor_knn_top1``); reading a table, such a column is NaN."""

    trial_id: str
    setting_id: str
    baseline_setting: str
    method: str
    seed: int
    status: str
    error: str
    loss: float
    epochs: int
    wall_s: float
    device_s: float
    device: str
    images_seen: int
    restarts: int
    finished_at: float
    train_s: float | None = None
    eval_s: float | None = None
    cpu_steal: float | None = None
    #: the cheap per-epoch kNN of a trial stopped before its last epoch, kept apart from ``knn_top1``
    monitor_knn_top1: float | None = None
    #: the specification's fields: ``config/<name>``, ``train/<field>``, ``eval/<field>``, ``data/<field>``
    spec: dict[str, Any] = field(default_factory=dict)
    #: the final evaluation (a finished trial's): ``knn_top1``, ``probe_<tap>_top1``, ``invariance_l2_mean``
    metrics: dict[str, float] = field(default_factory=dict)
    #: where it ran (``provenance.py``), stored as ``host/<field>``
    host: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(cls, identity: Mapping[str, Any], result: Mapping[str, Any], *, status: str, epochs: int,
                    wall_s: float, device: str, error: str = "", tune_failures: int = 0,
                    finished_at: float | None = None) -> "TrialRow":
        """The row of a trial whose last result is ``result``.

        ``identity``: ``trial_id``, ``setting_id``, ``baseline_setting`` and the specification's record
        (``spec.TrialSpec.record``: ``method``, ``seed``, ``config/...``). ``status``: ``ok`` (trained to
        the end: its evaluation metrics are recorded), ``stopped`` (ended early: the per-epoch kNN is
        kept as ``monitor_knn_top1``) or ``failed`` (no evaluation, no train/eval split of its time).
        ``epochs``: the epochs it trained; ``tune_failures``: how often Tune restarted it (the row's
        ``restarts`` is that or the loop's own count of resumes, whichever saw more)."""
        if status not in STATUSES:
            raise ValueError(f"trial status must be one of {STATUSES}, got {status!r}")
        measured = status != "failed"
        return cls(
            trial_id=identity["trial_id"],
            setting_id=identity["setting_id"],
            baseline_setting=identity["baseline_setting"],
            method=identity["method"],
            seed=identity["seed"],
            spec={k: v for k, v in identity.items() if k not in _IDENTITY},
            status=status,
            error=error,
            metrics={k: float(result[k]) for k in result if names.is_evaluation(k)} if status == "ok" else {},
            monitor_knn_top1=_float(result, names.KNN) if status == "stopped" else None,
            loss=_float(result, "loss"),
            epochs=int(epochs),
            wall_s=float(wall_s),
            train_s=_float(result, "train_s") if measured else None,
            eval_s=_float(result, "eval_s") if measured else None,
            device_s=_float(result, "device_s"),
            cpu_steal=_float(result, "cpu_steal") if measured else None,
            device=device,
            images_seen=int(result.get("images_seen", 0)),
            restarts=max(int(result.get("restarts", 0)), int(tune_failures)),
            finished_at=time.time() if finished_at is None else float(finished_at),
            host=dict(result.get("provenance") or {}),
        )

    def to_record(self) -> dict[str, Any]:
        """The row as the trials table stores it: column name -> value."""
        record: dict[str, Any] = {"trial_id": self.trial_id, "setting_id": self.setting_id,
                                  "baseline_setting": self.baseline_setting, "method": self.method,
                                  "seed": self.seed, **self.spec}
        if self.monitor_knn_top1 is not None:
            record[names.MONITOR_KNN] = self.monitor_knn_top1
        record.update(status=self.status, error=self.error, **self.metrics, loss=self.loss, epochs=self.epochs,
                      wall_s=self.wall_s)
        for name in ("train_s", "eval_s"):
            if getattr(self, name) is not None:
                record[name] = getattr(self, name)
        record["device_s"] = self.device_s
        if self.cpu_steal is not None:
            record["cpu_steal"] = self.cpu_steal
        record.update(device=self.device, images_seen=self.images_seen, restarts=self.restarts,
                      finished_at=self.finished_at, **{f"host/{k}": v for k, v in self.host.items()})
        return record
