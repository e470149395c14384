"""What the label-free measures cost a trial (evaluation/label_free_metrics.py: RankMe, α-ReQ, LiDAR,
alignment and uniformity of the representation and of the embedding, after every epoch and at the
final evaluation), against the trial's whole wall time, at a profile (``local``: the limit is 3 %).

It runs one trial of a study exactly as a user does (``python studies/pirl_lambda.py --results ROOT
--seeds 1 --max-trials 1 --yes``, through Ray), then reads the store: each epoch's ``label_free_s``
(measured in the trial: drawing the views once, their forward passes, the embedding and the
measures; the test images' features are kNN's, which the measures share) and the trial's ``wall_s``, and the random-init baseline's ``label_free_s``
(measured in the driver). The load average before and after, and the trial's CPU steal, say how
busy the machine was.

    python benchmarks/label_free_cost.py [--study studies/pirl_lambda.py] [--profile local] [--root /tmp/lf_run]
    python benchmarks/label_free_cost.py --study studies/siamese/siamese_unified.py --method simsiam   # a 2048-d projection

Writes ``benchmarks/results/label_free_cost.json``; the numbers are in docs/label-free.md#cost.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default=str(HERE.parent / "studies" / "pirl_lambda.py"))
    parser.add_argument("--profile", default="local")
    parser.add_argument("--root", default=None, help="the results root (default: a new temporary folder)")
    parser.add_argument("--method", default=None, help="the study's --method (one method of a comparison)")
    parser.add_argument("--json", default=str(HERE / "results" / "label_free_cost.json"))
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="label_free_cost-")
    load_before = os.getloadavg()
    command = [sys.executable, args.study, "--results", root, "--profile", args.profile, "--seeds", "1",
               "--max-trials", "1", "--yes", *(["--method", args.method] if args.method else [])]
    print("$", " ".join(command), flush=True)
    # a Ray of its own: one another process started on this machine would otherwise be joined
    env = {**os.environ, "RAY_TMPDIR": os.environ.get("RAY_TMPDIR") or tempfile.mkdtemp(prefix="rl", dir="/tmp")}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env)
    study_s, load_after = time.perf_counter() - start, os.getloadavg()

    from sslab.results.metrics import LABEL_FREE_SECONDS
    from sslab.results.store import ResultsStore

    (name,) = [p.name for p in Path(root).iterdir() if (p / "study.json").exists()]
    store = ResultsStore(root, name)
    trials, epochs, baselines = store.read("trials"), store.read("epochs"), store.read("baselines")
    rows = []
    for trial in trials.to_dict("records"):
        mine = epochs[epochs["trial_id"] == trial["trial_id"]].sort_values("epoch")
        seconds = mine[LABEL_FREE_SECONDS]
        rows.append({"trial_id": trial["trial_id"], "epochs": len(mine), "label_free_s": round(float(seconds.sum()), 2),
                     "per_monitor_epoch_s": round(float(seconds.iloc[:-1].mean()), 3),
                     "final_evaluation_s": round(float(seconds.iloc[-1]), 3), "wall_s": round(trial["wall_s"], 1),
                     "eval_s": round(trial["eval_s"], 1), "share_of_wall": round(float(seconds.sum()) / trial["wall_s"], 4),
                     "cpu_steal": trial.get("cpu_steal")})
    result = {
        "command": " ".join(command), "profile": args.profile, "cpus": os.cpu_count(), "study_s": round(study_s, 1),
        "load_average_before": [round(v, 2) for v in load_before], "load_average_after": [round(v, 2) for v in load_after],
        "trials": rows, "baseline_label_free_s": round(float(baselines[LABEL_FREE_SECONDS].iloc[0]), 2),
        "summary": "; ".join(f"label-free measures {r['label_free_s']:.1f} s of the trial's {r['wall_s']:.0f} s wall "
                             f"({r['share_of_wall']:.1%})" for r in rows),
    }
    print(json.dumps(result, indent=2))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
