"""The Tune callback that writes every trial into the results store as it happens.

It runs in the study's driver. A trial's row (``results.rows.TrialRow``) is written the moment it
completes or fails, with its per-epoch rows just before it, so an interrupted study loses nothing
that had finished. While trials run, each epoch report writes that trial's epochs: the store keeps
one file per trial and rewrites only it (``results/store.py``), so a write costs what the trial
holds, never what the study holds (``benchmarks/store_writes.py``). A write that fails (a full disk,
a lost bucket) is said once and remembered, never raised: the study goes on, the trial's next
write or its end writes its history again, and a rerun records what is still missing from the
trial's checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from sslab.evaluation.pictures import EMBEDDING_SAMPLES, NEIGHBOUR_SAMPLES, PICTURES_SECONDS
from sslab.results.pictures import record_pictures
from sslab.results.rows import TrialRow
from sslab.results.store import ResultsStore, StoreWriteError
from sslab.plan.spec import Specs, TrialSpec
from sslab.engine.errors import FAILURE, root_cause


class StoreCallback(Callback):
    def __init__(self, store: ResultsStore, specs: Specs, progress, *, stops_early: bool = False):
        self.store = store
        self.specs = specs
        #: whether a trial may legitimately end before its last epoch (ASHA, a search's time budget);
        #: otherwise such a trial was interrupted (Ctrl-C) and stays pending, to resume from its checkpoint
        self.stops_early = stops_early
        self.profile = specs.profile
        self.progress = progress
        self._started: dict[str, float] = {}
        #: trial key -> {what: why} for each of its writes ("epochs", "invariance", "pictures", "trial") whose
        #: latest attempt failed; a later write of the same kind that succeeds clears it
        self._failed_writes: dict[str, dict[str, str]] = {}
        #: trial key -> how many of its epochs the store holds
        self._written_epochs: dict[str, int] = {}

    def __getstate__(self):
        # Tune pickles its callbacks into the experiment state; the live progress
        # display (a terminal handle) stays with the driver that owns it.
        return {**self.__dict__, "progress": None}

    # ------------------------------------------------------------- helpers
    def _spec(self, trial) -> TrialSpec:
        """The trial's spec: a lookup (``Specs.of_tune_config`` resolves a search's proposal once)."""
        return self.specs.of_tune_config(trial.config)

    def _identity(self, trial) -> dict[str, Any]:
        """The start of the trial's row: its id, the setting it is compared within, the baseline
        setting it is compared with, and its whole specification."""
        spec = self._spec(trial)
        return {"trial_id": spec.trial_id, "setting_id": spec.setting_id, "baseline_setting": spec.baseline.setting_id,
                **spec.record()}

    @property
    def unrecorded(self) -> dict[str, str]:
        """Trial key -> why some of its results are not in the store (the study goes on; the rerun
        records them from the trial's checkpoint)."""
        return {key: next(iter(failed.values())) for key, failed in self._failed_writes.items() if failed}

    def _write(self, what: str, key: str, write, *args) -> bool:
        """One write of ``what`` to the store, for the trial ``key``; whether it was written. A
        failure (disk full, permissions) is said once and remembered until the same write succeeds,
        never raised: raised here, Tune would retry a finished trial that only needs recording."""
        try:
            write(*args)
        except StoreWriteError as err:
            if not self.unrecorded and self.progress is not None:
                self.progress.note(f"{err} (the study goes on)")
            self._failed_writes.setdefault(key, {})[what] = str(err)
            return False
        self._failed_writes.get(key, {}).pop(what, None)
        return True

    def _write_epochs(self, key: str, history: list[dict[str, Any]]) -> None:
        """The trial's whole history so far, replacing the one the store has."""
        if self._write("epochs", key, self.store.record_epochs, {key: history}):
            self._written_epochs[key] = len(history)

    def _wall_s(self, trial, result: dict[str, Any]) -> float:
        """Seconds since this driver first started the trial, or the loop's own sum over every attempt
        (a resumed study's driver did not see the attempts before it), whichever is longer."""
        seen_here = time.time() - self._started.get(trial.trial_id, time.time())
        return max(seen_here, float(result.get("wall_s", 0.0)))

    def _row(self, trial, result: dict[str, Any], *, status: str, epochs: int, error: str = "") -> TrialRow:
        return TrialRow.from_result(self._identity(trial), result, status=status, epochs=epochs, error=error,
                                    wall_s=self._wall_s(trial, result), device="gpu" if self.profile.use_gpu else "cpu",
                                    tune_failures=int(trial.num_failures))

    # ----------------------------------------------------------- callbacks
    def on_trial_start(self, iteration, trials, trial, **info):
        key = self._spec(trial).trial_id
        self._started.setdefault(trial.trial_id, time.time())  # a retried trial keeps its first start
        self.progress.trial_started(key)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        key = self._spec(trial).trial_id
        if result.get("history"):
            self._write_epochs(key, result["history"])
        if result.get("checkpoints_skipped") and self.progress is not None:
            self.progress.note(f"{key}: resumed from an older checkpoint: {result['checkpoints_skipped']}")
        self.progress.trial_epoch(key, result)

    def _write_final_epochs(self, key: str, result: dict[str, Any]) -> None:
        """Before a trial's row: its last history, unless the store has it already."""
        history = result.get("history") or []
        if history and len(history) != self._written_epochs.get(key):
            self._write_epochs(key, history)

    def on_trial_complete(self, iteration, trials, trial, **info):
        key = self._spec(trial).trial_id
        result = trial.last_result or {}
        self._write_final_epochs(key, result)
        if result.get(FAILURE):  # a failure no retry can mend, reported by the loop as its last result
            self._record(trial, self._row(trial, result, status="failed", error=result[FAILURE],
                                          epochs=int(result.get("failed_epoch", 0))))
            return
        epochs = int(result.get("epoch", -1)) + 1
        finished = epochs >= self.profile.epochs
        if not finished and not self.stops_early:
            return  # interrupted, not stopped: the next run resumes it from its last checkpoint
        # stopped early (ASHA, or the search's time budget): its kNN is the cheap per-epoch
        # monitor, not the final evaluation, so the row keeps it apart from knn_top1
        row = self._row(trial, result, status="ok" if finished else "stopped", epochs=epochs,
                        error="" if finished else f"stopped early after epoch {epochs} of {self.profile.epochs}")
        if result.get("invariance_samples"):
            self._write("invariance", key, self.store.record_invariance, key, result["invariance_samples"])
        if result.get(NEIGHBOUR_SAMPLES) or result.get(EMBEDDING_SAMPLES):  # evaluation/pictures.py
            self._write("pictures", key, record_pictures, self.store, key, result.get(NEIGHBOUR_SAMPLES),
                        result.get(EMBEDDING_SAMPLES), result.get(PICTURES_SECONDS))
        self._record(trial, row)

    def on_trial_error(self, iteration, trials, trial, **info):
        key = self._spec(trial).trial_id
        result = trial.last_result or {}
        self._write_final_epochs(key, result)
        error = trial.get_error()
        cause = root_cause(error) if error is not None else "unknown error (see the trial's error file)"
        self._record(trial, self._row(trial, result, status="failed", error=cause,
                                      epochs=int(result.get("epoch", -1)) + 1))

    def _record(self, trial, row: TrialRow) -> None:
        self._write("trial", row.trial_id, self.store.record_trial, row)
        self.progress.trial_finished(row.trial_id, row.to_record())
