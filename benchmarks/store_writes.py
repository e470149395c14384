"""What recording per-epoch rows costs a study's driver: the results store rewrites the whole
epochs table on every write, so writing on every epoch report costs time that grows as the
square of the study's epochs, and an object store adds a round trip to each write.

Replays a study's epoch reports (``--trials`` trials of ``--epochs`` epochs, ``--concurrent`` at a
time, one epoch every ``--epoch-s`` seconds of simulated time per trial) through the real
``StoreCallback`` into a real store on local disk, with ``--latency`` simulated seconds added to
each write (an object store's round trip; 0 for a local disk). Twice: writing on every report (as
before), and at the callback's default ``EPOCHS_WRITE_SHARE``. It prints the driver's seconds in
the callback (measured, plus the simulated latency of its writes), the writes, and checks that
both stores end with the same epochs table.

    python benchmarks/store_writes.py [--trials 40] [--epochs 100] [--concurrent 8] [--epoch-s 5] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from sslab.plan.profiles import Profile
from sslab.results.store import ResultsStore
from sslab.plan.spec import Specs
from sslab.plan.study import Study
from sslab.engine.tune_callbacks import EPOCHS_WRITE_SHARE, StoreCallback


class _Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class _Clock:
    """Simulated study time (epochs, write latency) on top of the real time the driver spends."""

    def __init__(self) -> None:
        self.simulated = 0.0

    def __call__(self) -> float:
        return self.simulated + time.perf_counter()


def replay(root: str, share: float, args: argparse.Namespace) -> dict:
    """The study's reports through a callback writing at ``share``; the driver's seconds in it."""
    study = Study(name="bench_store", method="pirl", grid={"loss_weight": [i / args.trials for i in range(args.trials)]})
    store = ResultsStore(root, study.name)
    clock = _Clock()
    writes = []
    record = store.record_epochs

    def slow_record(histories):
        record(histories)
        clock.simulated += args.latency
        writes.append(len(histories))

    store.record_epochs = slow_record
    specs = Specs(study, Profile(name="bench", epochs=args.epochs), {"dataset": "cifar10"})
    callback = StoreCallback(store, specs, _Quiet(), epochs_write_share=share, clock=clock)
    spent = 0.0

    def timed(call, *call_args):
        nonlocal spent
        start = time.perf_counter()
        call(*call_args)
        spent += time.perf_counter() - start

    for first in range(0, args.trials, args.concurrent):
        group = [SimpleNamespace(trial_id=f"t{i}", config={"method": "pirl", "loss_weight": i / args.trials, "seed": 0},
                                 last_result={}, num_failures=0, get_error=lambda: None)
                 for i in range(first, min(first + args.concurrent, args.trials))]
        for trial in group:
            timed(callback.on_trial_start, 0, [], trial)
        for epoch in range(args.epochs):
            for trial in group:  # the concurrent trials report one after the other
                clock.simulated += args.epoch_s / len(group)
                history = trial.last_result.get("history", []) + [
                    {"epoch": epoch, "loss": 9.0 - epoch / args.epochs, "epoch_s": args.epoch_s}]
                trial.last_result = {"epoch": epoch, "loss": history[-1]["loss"], "history": history}
                timed(callback.on_trial_result, 0, [], trial, trial.last_result)
        for trial in group:
            timed(callback.on_trial_complete, 0, [], trial)
    timed(callback.on_experiment_end, [])
    epochs = store.read("epochs").sort_values(["trial_id", "epoch"]).reset_index(drop=True)
    return {"share": share, "measured_s": round(spent, 2), "writes": len(writes),
            "driver_s": round(spent + args.latency * len(writes), 2), "rows": len(epochs), "table": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--epoch-s", type=float, default=5.0, help="simulated seconds per epoch of one trial")
    parser.add_argument("--latency", type=float, default=0.05, help="simulated seconds added to each write")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "store_writes.json"))
    args = parser.parse_args()
    runs = []
    for label, share in (("every report", math.inf), (f"share {EPOCHS_WRITE_SHARE}", EPOCHS_WRITE_SHARE)):
        with tempfile.TemporaryDirectory() as root:
            runs.append({"label": label, **replay(root, share, args)})
        print(f"{label:>13}: {runs[-1]['writes']:>6,} writes of the epochs table, {runs[-1]['driver_s']:>7.1f} s of "
              f"the driver's time ({runs[-1]['measured_s']:.1f} s measured), {runs[-1]['rows']:,} rows", flush=True)
    pd.testing.assert_frame_equal(runs[0]["table"], runs[1]["table"])  # the same table in the end
    study_s = args.trials / args.concurrent * args.epochs * args.epoch_s
    summary = (f"{args.trials} trials x {args.epochs} epochs ({study_s / 3600:.1f} h), {args.latency * 1e3:.0f} ms "
               f"a write: {runs[0]['driver_s']:.0f} s of driver time writing on every report, "
               f"{runs[1]['driver_s']:.0f} s at share {EPOCHS_WRITE_SHARE} "
               f"({runs[0]['driver_s'] / max(runs[1]['driver_s'], 1e-9):.1f}x less); same table")
    print(summary)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "store_writes", **{k: v for k, v in vars(args).items() if k != "json"},
                               "runs": [{k: v for k, v in r.items() if k != "table"} for r in runs],
                               "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
