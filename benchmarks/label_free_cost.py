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

from one_trial import parser, run_one_trial, write


def main() -> None:
    args = parser(__doc__.splitlines()[0], "label_free_cost").parse_args()
    run = run_one_trial(args, "label_free_cost-")
    from sslab.results.metrics import LABEL_FREE_SECONDS

    store = run.store
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
        **run.header(args.profile), "trials": rows, "baseline_label_free_s": round(float(baselines[LABEL_FREE_SECONDS].iloc[0]), 2),
        "summary": "; ".join(f"label-free measures {r['label_free_s']:.1f} s of the trial's {r['wall_s']:.0f} s wall "
                             f"({r['share_of_wall']:.1%})" for r in rows),
    }
    write(result, args.json)


if __name__ == "__main__":
    main()
