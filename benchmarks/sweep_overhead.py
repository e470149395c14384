"""What a sweep costs beyond its trials' own work: start-up per trial, and the study's.

Runs the same small grid study through the real ``run_study`` twice on one local Ray instance,
once per way a trial can run:

- ``in-process`` (``num_workers=0``, the local profile): the Tune trial's process trains, and
  serves the next trial;
- ``torch-trainer`` (``num_workers=1``): each trial launches a TorchTrainer (controller, worker
  group, placement group, dataset split coordinator), as GPU and multi-worker profiles do.

Per trial it reads the results store: ``wall_s`` (the trial as Tune saw it, start to end)
against its own work, ``train_s`` (the epochs) plus ``eval_s`` (per-epoch monitor kNN and the
final evaluation); the rest is start-up and teardown. The study's own time outside its trials
(data, baselines, summary) is reported apart; Ray itself is started before both.

    python benchmarks/sweep_overhead.py [--trials 3] [--images 1024] [--epochs 2] [--workers 0 1]
    python benchmarks/sweep_overhead.py --profile local --workers 0 --trials 2   # a built-in profile as is
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sslab.plan.profiles import Profile, get_profile
from sslab.results.store import ResultsStore
from sslab.engine.runner import _init_ray, run_study
from sslab.plan.study import Study

MODES = {0: "in-process", 1: "torch-trainer"}


def measure(workers: int, args: argparse.Namespace) -> dict:
    values = [round(i / max(1, args.trials - 1), 3) for i in range(args.trials)]
    study = Study(name="bench_sweep", method="pirl", grid={"loss_weight": values},
                  description="sweep overhead benchmark")
    if args.profile:  # a built-in profile as studies run it (its subset, epochs, evaluation)
        return _run(study, get_profile(args.profile).with_overrides(num_workers=workers), workers)
    profile = Profile(name="bench", train_subset=args.images, test_subset=512, width=8, epochs=args.epochs,
                      batch_size=64, monitor_images=256, probe_epochs=5,
                      invariance_samples=128, torch_threads=os.cpu_count() or 1, num_workers=workers,
                      method_defaults={"loss_form": "infonce", "num_negatives": 512, "base_lr": 0.4,
                                       "warmup_epochs": 1})
    return _run(study, profile, workers)


def _run(study: Study, profile: Profile, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        run_study(study, profile=profile, root=root, quiet=True)
        study_s = time.perf_counter() - start
        trials = ResultsStore(root, study.name).read("trials").sort_values("finished_at")
    if (trials["status"] != "ok").any():
        raise SystemExit(f"benchmark trials failed: {trials[['trial_id', 'status', 'error']].to_dict('records')}")
    trials["own_s"] = trials["train_s"] + trials["eval_s"]
    trials["overhead_s"] = trials["wall_s"] - trials["own_s"]
    return {
        "mode": MODES.get(workers, f"{workers} workers"),
        "num_workers": workers,
        "study_s": study_s,
        "outside_trials_s": study_s - float(trials["wall_s"].sum()),
        "overhead_per_trial_s": float(trials["overhead_s"].mean()),
        "overhead_fraction": float(trials["overhead_s"].sum() / trials["wall_s"].sum()),
        "own_work_per_trial_s": float(trials["own_s"].mean()),
        "trials": trials[["trial_id", "wall_s", "train_s", "eval_s", "overhead_s"]].to_dict("records"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="num_workers of each mode measured")
    parser.add_argument("--profile", default=None, help="measure this built-in profile as is (--images and --epochs "
                                                         "are then its own)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "sweep_overhead.json"))
    args = parser.parse_args()

    _init_ray(None)  # started once, before both modes: not part of either
    modes = [measure(workers, args) for workers in args.workers]

    size = f"profile {args.profile}" if args.profile else f"{args.epochs} epoch(s) on {args.images} images"
    print(f"sweep overhead: {args.trials} PIRL trials, {size}, local Ray, {os.cpu_count()} CPU(s)")
    print(f"{'mode':<15}{'trial':<32}{'wall s':>8}{'train s':>9}{'eval s':>8}{'overhead s':>12}")
    for mode in modes:
        for row in mode["trials"]:
            print(f"{mode['mode']:<15}{row['trial_id'][:31]:<32}{row['wall_s']:>8.1f}{row['train_s']:>9.1f}"
                  f"{row['eval_s']:>8.1f}{row['overhead_s']:>12.1f}")
    for mode in modes:
        print(f"{mode['mode']}: {mode['overhead_per_trial_s']:.1f} s of start-up and teardown per trial against "
              f"{mode['own_work_per_trial_s']:.1f} s of its own work "
              f"({mode['overhead_fraction']:.1%} of the trials' wall time); study {mode['study_s']:.1f} s, "
              f"{mode['outside_trials_s']:.1f} s outside the trials")
    by_mode = {m["mode"]: m for m in modes}
    result = {"benchmark": "sweep_overhead", "profile": args.profile, "trials_per_mode": args.trials, "images": args.images,
              "epochs": args.epochs, "machine": platform.machine(), "cpus": os.cpu_count(), "modes": modes}
    if {"in-process", "torch-trainer"} <= set(by_mode):
        fast, slow = by_mode["in-process"], by_mode["torch-trainer"]
        result["overhead_ratio"] = slow["overhead_per_trial_s"] / max(fast["overhead_per_trial_s"], 1e-9)
        result["study_ratio"] = slow["study_s"] / fast["study_s"]
        print(f"in-process vs torch-trainer: {result['overhead_ratio']:.0f}x less start-up per trial, "
              f"the study {result['study_ratio']:.2f}x faster")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
