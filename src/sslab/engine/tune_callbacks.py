"""The Tune callback that writes every trial into the results store as it happens.

It runs in the study's driver. A trial's row is written the moment it completes
or fails, with its per-epoch rows just before it, so an interrupted study loses
nothing that had finished. While trials run, their per-epoch rows are written
on every report, unless writing them would take more than
``EPOCHS_WRITE_SHARE`` of the driver's time: the store rewrites the whole
epochs table each time, so on a large study (or an object store) the next
write waits, and takes every trial that reported meanwhile at once
(``benchmarks/store_writes.py``). A trial interrupted while its rows wait loses
nothing either: its history is in its checkpoint, and the run that resumes it
writes it.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback

from sslab.results import metrics as names
from sslab.results.store import ResultsStore, StoreWriteError
from sslab.plan.spec import Specs
from sslab.engine.errors import FAILURE, root_cause

#: result keys that describe bookkeeping, not per-epoch metrics
_NOT_EPOCH_METRICS = {"history", "invariance_samples", "config", "checkpoint_path"}

#: the most of the driver's time that writing running trials' epochs may take: after a write that
#: took t seconds, the next waits until t / EPOCHS_WRITE_SHARE seconds after it began
EPOCHS_WRITE_SHARE = 0.02


class StoreCallback(Callback):
    def __init__(self, store: ResultsStore, specs: Specs, progress, *, stops_early: bool = False,
                 epochs_write_share: float = EPOCHS_WRITE_SHARE, clock=time.monotonic):
        self.store = store
        self.specs = specs
        #: whether a trial may legitimately end before its last epoch (ASHA, a search's time budget);
        #: otherwise such a trial was interrupted (Ctrl-C) and stays pending, to resume from its checkpoint
        self.stops_early = stops_early
        self.profile = specs.profile
        self.progress = progress
        self._started: dict[str, float] = {}
        #: trial key -> {what: why} for each of its writes ("epochs", "invariance", "trial") whose
        #: latest attempt failed; a later write of the same kind that succeeds clears it
        self._failed_writes: dict[str, dict[str, str]] = {}
        self.epochs_write_share = epochs_write_share
        self._clock = clock
        #: trial key -> its newest history not yet in the store
        self._unwritten_epochs: dict[str, list[dict[str, Any]]] = {}
        #: trial key -> how many of its epochs the store holds
        self._written_epochs: dict[str, int] = {}
        self._next_epochs_write = -math.inf

    def __getstate__(self):
        # Tune pickles its callbacks into the experiment state; the live progress
        # display (a terminal handle) and the clock stay with the driver that owns them.
        return {**self.__dict__, "progress": None, "_clock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _clock=time.monotonic)

    # ------------------------------------------------------------- helpers
    def _identity(self, trial) -> tuple[str, dict[str, Any]]:
        """The trial's id and the start of its row: its whole specification, the setting it is
        compared within and the baseline setting it is compared with."""
        spec = self.specs.of_tune_config(trial.config)
        row = {"trial_id": spec.trial_id, "setting_id": spec.setting_id, "baseline_setting": spec.baseline.setting_id,
               **spec.record()}
        return spec.trial_id, row

    @property
    def unrecorded(self) -> dict[str, str]:
        """Trial key -> why some of its results are not in the store (the study goes on; the rerun
        records them from the trial's checkpoint)."""
        return {key: next(iter(failed.values())) for key, failed in self._failed_writes.items() if failed}

    def _write(self, what: str, keys: str | tuple[str, ...], write, *args) -> bool:
        """One write of ``what`` to the store, for the trial(s) ``keys``; whether it was written. A
        failure (disk full, permissions) is said once and remembered until the same write succeeds,
        never raised: raised here, Tune would retry a finished trial that only needs recording."""
        keys = (keys,) if isinstance(keys, str) else keys
        try:
            write(*args)
        except StoreWriteError as err:
            if not self.unrecorded and self.progress is not None:
                self.progress.note(f"{err} (the study goes on)")
            for key in keys:
                self._failed_writes.setdefault(key, {})[what] = str(err)
            return False
        for key in keys:
            self._failed_writes.get(key, {}).pop(what, None)
        return True

    def _write_epochs(self, *, now: bool) -> None:
        """Write the histories reported since the last write, in one write: ``now``, or once the
        last write's duration is ``epochs_write_share`` of the time since it began."""
        if not self._unwritten_epochs or (not now and self._clock() < self._next_epochs_write):
            return
        histories, self._unwritten_epochs = self._unwritten_epochs, {}
        started = self._clock()
        if self._write("epochs", tuple(histories), self.store.record_epochs, histories):
            self._written_epochs.update((key, len(history)) for key, history in histories.items())
        self._next_epochs_write = started + (self._clock() - started) / self.epochs_write_share

    def _wall_s(self, trial, result: dict[str, Any]) -> float:
        """Seconds since this driver first started the trial, or the loop's own sum over every attempt
        (a resumed study's driver did not see the attempts before it), whichever is longer."""
        seen_here = time.time() - self._started.get(trial.trial_id, time.time())
        return max(seen_here, float(result.get("wall_s", 0.0)))

    # ----------------------------------------------------------- callbacks
    def on_trial_start(self, iteration, trials, trial, **info):
        key, _ = self._identity(trial)
        self._started.setdefault(trial.trial_id, time.time())  # a retried trial keeps its first start
        self.progress.trial_started(key)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key, _ = self._identity(trial)
        if result.get("history"):
            self._unwritten_epochs[key] = result["history"]
            self._write_epochs(now=False)
        if result.get("checkpoints_skipped") and self.progress is not None:
            self.progress.note(f"{key}: resumed from an older checkpoint: {result['checkpoints_skipped']}")
        self.progress.trial_epoch(key, result)

    def _write_final_epochs(self, key: str, result: dict[str, Any]) -> None:
        """Before a trial's row: its last history unless the store has it (and any other trial's
        waiting), now."""
        history = result.get("history") or []
        if history and len(history) != self._written_epochs.get(key):
            self._unwritten_epochs[key] = history
        self._write_epochs(now=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        key, row = self._identity(trial)
        result = trial.last_result or {}
        self._write_final_epochs(key, result)
        if result.get(FAILURE):  # a failure no retry can mend, reported by the loop as its last result
            self._record_failure(key, row, trial, result, result[FAILURE], epochs=int(result.get("failed_epoch", 0)))
            return
        epochs = int(result.get("epoch", -1)) + 1
        finished = epochs >= self.profile.epochs
        if not finished and not self.stops_early:
            return  # interrupted, not stopped: the next run resumes it from its last checkpoint
        metric_keys = [k for k in result if names.is_evaluation(k)]
        if not finished:
            # stopped early (ASHA, or the search's time budget): its kNN is the cheap per-epoch
            # monitor, not the final evaluation, so it is kept apart from knn_top1
            row[names.MONITOR_KNN] = float(result.get(names.KNN, math.nan))
            metric_keys = []
        row.update(
            status="ok" if finished else "stopped",
            error="" if finished else f"stopped early after epoch {epochs} of {self.profile.epochs}",
            **{k: float(result[k]) for k in metric_keys},
            loss=float(result.get("loss", math.nan)),
            epochs=epochs,
            wall_s=self._wall_s(trial, result),
            train_s=float(result.get("train_s", math.nan)),
            eval_s=float(result.get("eval_s", math.nan)),
            device_s=float(result.get("device_s", math.nan)),
            cpu_steal=float(result.get("cpu_steal", math.nan)),
            device="gpu" if self.profile.use_gpu else "cpu",
            images_seen=int(result.get("images_seen", 0)),
            restarts=max(int(result.get("restarts", 0)), int(trial.num_failures)),
            finished_at=time.time(),
            **{f"host/{k}": v for k, v in (result.get("provenance") or {}).items()},
        )
        if result.get("invariance_samples"):
            self._write("invariance", key, self.store.record_invariance, key, result["invariance_samples"])
        self._write("trial", key, self.store.record_trial, row)
        self.progress.trial_finished(key, row)

    def on_trial_error(self, iteration, trials, trial, **info):
        key, row = self._identity(trial)
        result = trial.last_result or {}
        self._write_final_epochs(key, result)
        error = trial.get_error()
        cause = root_cause(error) if error is not None else "unknown error (see the trial's error file)"
        self._record_failure(key, row, trial, result, cause, epochs=int(result.get("epoch", -1)) + 1)

    def _record_failure(self, key: str, row: dict[str, Any], trial, result: dict[str, Any], cause: str,
                        *, epochs: int) -> None:
        row.update(
            status="failed",
            error=cause,
            loss=float(result.get("loss", math.nan)),
            epochs=epochs,
            wall_s=self._wall_s(trial, result),
            device_s=float(result.get("device_s", math.nan)),
            device="gpu" if self.profile.use_gpu else "cpu",
            images_seen=int(result.get("images_seen", 0)),
            # Tune's retries of a lost process, or the loop's own count of resumes, whichever saw more
            restarts=max(int(result.get("restarts", 0)), int(trial.num_failures)),
            finished_at=time.time(),
            **{f"host/{k}": v for k, v in (result.get("provenance") or {}).items()},
        )
        self._write("trial", key, self.store.record_trial, row)
        self.progress.trial_finished(key, row)

    def on_experiment_end(self, trials, **info):
        self._write_epochs(now=True)
