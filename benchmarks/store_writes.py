"""What recording a study costs its driver as the study grows: the results store writes one file
per trial and table, so a trial's writes should cost the same whether it is the study's first
trial or its ten-thousandth.

Replays a study's reports (``--trials`` trials of ``--epochs`` epochs, ``--concurrent`` at a time,
their epoch reports interleaved) through the real ``StoreCallback`` into a real store on local disk
(``--root``, default a temporary folder): every report writes that trial's epochs, every trial's
end its invariance samples and its row. It records the driver's seconds in the callback per trial
(its start, its reports and its end, writes included) and, of those, the seconds in the store's
writes; then prints and saves the mean of the first and of the last ``--window`` trials and their
ratio (flat: near 1; the check asks for less than 1.5), the mean per block of ``--window`` trials,
and the time to read the whole trials, epochs and invariance tables at the end (and to read them
again, unchanged). On a shared machine the first and last windows may see different loads: then
``--ab`` trials more are written one at a time, alternately into the full study and into an empty
one, whose ratio compares the two sizes under the same load.

    python benchmarks/store_writes.py [--trials 10000] [--epochs 100] [--concurrent 8] [--window 1000] [--ab 200]

Results (JSON) go to ``benchmarks/results/store_writes.json`` (``--json``); the measured numbers are
in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from sslab.engine.tune_callbacks import StoreCallback
from sslab.plan.profiles import Profile
from sslab.plan.spec import Specs
from sslab.plan.study import Study
from sslab.results.store import ResultsStore


class _Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def _timed_writes(store: ResultsStore, spent: dict) -> None:
    """Add each store write's seconds to ``spent["write"]``."""
    for name in ("record_epochs", "record_trial", "record_invariance"):
        write = getattr(store, name)

        def timed(*args, _write=write):
            start = time.perf_counter()
            try:
                return _write(*args)
            finally:
                spent["write"] += time.perf_counter() - start

        setattr(store, name, timed)


class _Recorder:
    """A ``StoreCallback`` on a store whose writes are timed: per trial, the driver's seconds in the
    callback and, of those, in the store's writes."""

    def __init__(self, root: str, study: Study, epochs: int, trials: int):
        self.store = ResultsStore(root, study.name)
        self.spent = {"write": 0.0}
        _timed_writes(self.store, self.spent)
        specs = Specs(study, Profile(name="bench", epochs=epochs), {"dataset": "cifar10"})
        self.callback = StoreCallback(self.store, specs, _Quiet())
        self.callback_s = [0.0] * trials
        self.write_s = [0.0] * trials

    def _timed(self, i: int, call, *args) -> None:
        before, start = self.spent["write"], time.perf_counter()
        call(*args)
        self.callback_s[i] += time.perf_counter() - start
        self.write_s[i] += self.spent["write"] - before

    def run(self, group: list[tuple[int, float]], epochs: int) -> None:
        """Trials (index, loss_weight) running at once: started, their epoch reports interleaved, ended."""
        trials = [(i, SimpleNamespace(trial_id=f"t{weight}", config={"method": "pirl", "loss_weight": weight, "seed": 0},
                                      last_result={}, num_failures=0, get_error=lambda: None)) for i, weight in group]
        for i, trial in trials:
            self._timed(i, self.callback.on_trial_start, 0, [], trial)
        for epoch in range(epochs):
            for i, trial in trials:  # the concurrent trials report one after the other
                history = trial.last_result.get("history", []) + [
                    {"epoch": epoch, "loss": 9.0 - epoch / epochs, "lr": 0.1, "epoch_s": 5.0,
                     "epoch_cpu_steal": 0.0, "images_seen": 5000 * (epoch + 1), "restarts": 0}]
                trial.last_result = {"epoch": epoch, "loss": history[-1]["loss"], "history": history}
                self._timed(i, self.callback.on_trial_result, 0, [], trial, trial.last_result)
        for i, trial in trials:
            trial.last_result = {**trial.last_result, "knn_top1": 0.3, "probe_res5_top1": 0.35,
                                 "invariance_l2_mean": 0.9, "invariance_samples": [0.9] * 20, "images_seen": 5000,
                                 "train_s": 500.0, "eval_s": 20.0, "device_s": 500.0, "cpu_steal": 0.0}
            self._timed(i, self.callback.on_trial_complete, 0, [], trial)
        assert not self.callback.unrecorded, self.callback.unrecorded


def replay(root: str, args: argparse.Namespace) -> dict:
    """The study's reports through the callback; per trial, the driver's seconds in it and in writes."""
    n = args.trials
    study = Study(name="bench_store", method="pirl", grid={"loss_weight": [i / n for i in range(n)]})
    # one trial first into a study of its own: the imports and first calls are no trial's writes
    _Recorder(root, Study(name="bench_store_warmup", method="pirl", grid=study.grid), 2, 1).run([(0, 0.0)], 2)
    recorder = _Recorder(root, study, args.epochs, n)
    started = time.perf_counter()
    for first in range(0, n, args.concurrent):
        done = min(first + args.concurrent, n)
        recorder.run([(i, i / n) for i in range(first, done)], args.epochs)
        if done % 1000 < args.concurrent:
            print(f"  {done:,} trials, {time.perf_counter() - started:.0f} s, last {done - first}: "
                  f"{sum(recorder.callback_s[first:done]) / (done - first) * 1e3:.0f} ms a trial", flush=True)
    replay_s = time.perf_counter() - started
    reads = {}
    for table in ("trials", "epochs", "invariance"):
        reader = ResultsStore(root, study.name)
        start = time.perf_counter()
        frame = reader.read(table)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        reader.read(table)  # again: the files unchanged since are not decoded again
        reads[table] = {"seconds": round(cold, 2), "again_s": round(time.perf_counter() - start, 2),
                        "rows": len(frame), "columns": len(frame.columns), "files": len(reader._files(table))}
    assert reads["trials"]["rows"] == n and reads["epochs"]["rows"] == n * args.epochs
    return {"callback_s": recorder.callback_s, "write_s": recorder.write_s, "replay_s": replay_s, "reads": reads,
            "study": study}


def interleaved(root: str, study: Study, args: argparse.Namespace) -> dict:
    """``--ab`` more trials written alternately into the full study and into an empty one, one at a
    time (the order swapped every trial): the same machine load for both, whatever else runs."""
    n = args.trials
    full = _Recorder(root, study, args.epochs, args.ab)
    empty = _Recorder(root, Study(name="bench_store_empty", method="pirl", grid=study.grid), args.epochs, args.ab)
    for i in range(args.ab):
        pair = (full, empty) if i % 2 == 0 else (empty, full)
        for recorder in pair:
            recorder.run([(i, (i + 0.5) / n)], args.epochs)  # a λ between the study's: a trial of its own
    return {"full_ms": _mean_ms(full.callback_s), "empty_ms": _mean_ms(empty.callback_s),
            "ratio": round(_mean_ms(full.callback_s) / _mean_ms(empty.callback_s), 3)}


def _mean_ms(values: list[float]) -> float:
    return round(sum(values) / max(len(values), 1) * 1e3, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=8, help="trials running at once (reports interleaved)")
    parser.add_argument("--window", type=int, default=1000, help="trials in the first and last means")
    parser.add_argument("--ab", type=int, default=200,
                        help="then this many trials into the full study and into an empty one, alternately (0: none)")
    parser.add_argument("--root", default=None, help="the results root (default: a temporary folder, removed)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "store_writes.json"))
    args = parser.parse_args()
    window = max(1, min(args.window, args.trials // 2))
    args.ab = min(args.ab, args.trials)
    root = args.root or tempfile.mkdtemp(prefix="store_writes-")
    load_before = os.getloadavg()
    try:
        run = replay(root, args)
        ab = interleaved(root, run["study"], args) if args.ab else None
    finally:
        if args.root is None:
            shutil.rmtree(root, ignore_errors=True)
    per_trial, writes = run["callback_s"], run["write_s"]
    first, last = _mean_ms(per_trial[:window]), _mean_ms(per_trial[-window:])
    ratio = round(last / first, 3)
    blocks = [_mean_ms(per_trial[i:i + window]) for i in range(0, len(per_trial), window)]
    summary = (f"{args.trials:,} trials x {args.epochs} epochs ({args.trials * args.epochs:,} epoch reports), "
               f"{run['replay_s'] / 60:.1f} min: driver time per trial {first:.1f} ms (first {window:,}) vs "
               f"{last:.1f} ms (last {window:,}), ratio {ratio:.2f}; in the store's writes "
               f"{_mean_ms(writes[:window]):.1f} vs {_mean_ms(writes[-window:]):.1f} ms; reading the whole "
               + ", ".join(f"{t} ({r['rows']:,} rows, {r['files']:,} files) {r['seconds']:.1f} s, again "
                           f"{r['again_s']:.2f} s" for t, r in run["reads"].items())
               + (f"; {args.ab} more trials alternately into the full study and an empty one: {ab['full_ms']:.1f} vs "
                  f"{ab['empty_ms']:.1f} ms a trial, ratio {ab['ratio']:.2f}" if ab else ""))
    print(summary)
    print(f"mean ms per trial, by {window:,} trials: {blocks}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "store_writes", "date": time.strftime("%Y-%m-%d"),
        **{k: v for k, v in vars(args).items() if k not in ("json", "root")}, "window": window,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": [round(x, 1) for x in load_before],
                    "load_average_after": [round(x, 1) for x in os.getloadavg()]},
        "replay_s": round(run["replay_s"], 1),
        "per_trial_ms": {"first": first, "last": last, "ratio": ratio, "by_window": blocks,
                         "writes_first": _mean_ms(writes[:window]), "writes_last": _mean_ms(writes[-window:])},
        "reads": run["reads"], "interleaved": ab, "flat": ratio < 1.5, "summary": summary,
    }, indent=1))
    if ratio >= 1.5:
        raise SystemExit(f"the last {window:,} trials' writes took {ratio:.2f}x the first's (the check asks < 1.5)")


if __name__ == "__main__":
    main()
