"""What a sweep costs beyond its trials' own work: Tune + Train start-up per trial, and the study's.

Runs a small grid study through the real ``run_study`` (Ray Tune launching one TorchTrainer per
trial) on a local Ray instance, then reads the results store: per trial, ``wall_s`` (the
trial as Tune saw it, start to end) against its own work, ``train_s`` (the epochs) plus
``eval_s`` (per-epoch monitor kNN and the final evaluation). The rest is start-up and
teardown: Tune scheduling the trial, Train's worker group and placement group, the dataset's
first blocks, checkpoints and reports. The study's own start (Ray, data, baselines) is reported
apart.

    python benchmarks/sweep_overhead.py [--trials 3] [--images 1024] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from sslab.platform.profiles import Profile
from sslab.platform.results import ResultsStore
from sslab.platform.study import Study, run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "sweep_overhead.json"))
    args = parser.parse_args()

    values = [round(i / max(1, args.trials - 1), 3) for i in range(args.trials)]
    study = Study(name="bench_sweep", method="pirl", grid={"loss_weight": values},
                  description="sweep overhead benchmark")
    profile = Profile(name="bench", train_subset=args.images, test_subset=512, width=8, epochs=args.epochs,
                      batch_size=64, lr=0.1, warmup_epochs=1, monitor_images=256, probe_epochs=5,
                      invariance_samples=128, torch_threads=os.cpu_count() or 1, num_workers=args.workers,
                      method_defaults={"loss_form": "infonce", "num_negatives": 512})
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        run_study(study, profile=profile, root=root, quiet=True)
        study_s = time.perf_counter() - start
        trials = ResultsStore(root, study.name).read("trials")
    if (trials["status"] != "ok").any():
        raise SystemExit(f"benchmark trials failed: {trials[['trial_id', 'status', 'error']].to_dict('records')}")
    trials["own_s"] = trials["train_s"] + trials["eval_s"]
    trials["overhead_s"] = trials["wall_s"] - trials["own_s"]
    rows = trials[["trial_id", "wall_s", "train_s", "eval_s", "overhead_s"]].to_dict("records")
    per_trial = float(trials["overhead_s"].mean())
    own = float(trials["own_s"].mean())
    outside = study_s - float(trials["wall_s"].sum())

    print(f"sweep overhead: {len(trials)} PIRL trials × {args.epochs} epoch(s) on {args.images} images, local Ray, "
          f"{os.cpu_count()} CPU(s)")
    print(f"{'trial':<40}{'wall s':>8}{'train s':>9}{'eval s':>8}{'overhead s':>12}")
    for row in rows:
        print(f"{row['trial_id'][:39]:<40}{row['wall_s']:>8.1f}{row['train_s']:>9.1f}{row['eval_s']:>8.1f}"
              f"{row['overhead_s']:>12.1f}")
    print(f"per trial: {per_trial:.1f} s of Tune + Train start-up and teardown against {own:.1f} s of its own work "
          f"({per_trial / own:.0%})")
    print(f"study: {study_s:.1f} s in all, {outside:.1f} s outside the trials (Ray start, data, baselines, summary)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "sweep_overhead", "images": args.images, "epochs": args.epochs,
                               "machine": platform.machine(), "cpus": os.cpu_count(), "study_s": study_s,
                               "outside_trials_s": outside, "overhead_per_trial_s": per_trial,
                               "own_work_per_trial_s": own, "trials": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
