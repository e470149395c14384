"""What the pictures of what was learned cost a trial (evaluation/pictures.py: the nearest training
images of 16 fixed test queries and a t-SNE map of 1,000 test images, at the final evaluation),
against the trial's whole wall time, at a profile (``local``: the limit is 5 %).

It runs one trial of a study exactly as a user does (``python studies/pirl_lambda.py --results ROOT
--seeds 1 --max-trials 1 --yes``, through Ray), then reads the store: each trial's ``pictures_s``
(measured in the trial, beside the features its kNN computes anyway) and ``wall_s``, the random-init
baseline's ``pictures_s`` (measured in the driver), and the size of the dataset's thumbnails; then it
times the driver's thumbnails (once per dataset, not per trial) on the same data. The load average
before and after, and the trial's CPU steal, say how busy the machine was.

    python benchmarks/pictures_cost.py [--study studies/pirl_lambda.py] [--profile local] [--root /tmp/pics_run]

Writes ``benchmarks/results/pictures_cost.json``; the numbers are in docs/dashboard.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from one_trial import parser, run_one_trial, write


def main() -> None:
    args = parser(__doc__.splitlines()[0], "pictures_cost").parse_args()
    run = run_one_trial(args, "pictures_cost-")
    from sslab.results import pictures

    store = run.store
    trials = store.read("trials")
    baselines = store.read("baselines")
    rows = []
    for trial in trials.to_dict("records"):
        points = pictures.read(store, pictures.EMBEDDING, [trial["trial_id"]])
        seconds = float(points["pictures_s"].iloc[0])
        rows.append({"trial_id": trial["trial_id"], "pictures_s": round(seconds, 2), "wall_s": round(trial["wall_s"], 1),
                     "eval_s": round(trial["eval_s"], 1), "share_of_wall": round(seconds / trial["wall_s"], 4),
                     "map_points": len(points), "cpu_steal": trial.get("cpu_steal")})
    baseline = baselines.iloc[0]
    base_points = pictures.read(store, pictures.EMBEDDING, [pictures.baseline_id(baseline["setting_id"], baseline["seed"])])
    dataset = pictures.dataset_key(trials.iloc[0])
    thumbs_file = Path(store.key_path(pictures.THUMBNAILS, dataset))

    from sslab.data.train_test import load_train_test
    from sslab.evaluation.pictures import thumbnails
    from sslab.plan.profiles import get_profile

    profile = get_profile(args.profile)
    train, test = load_train_test(profile.dataset, image_size=profile.image_size, train_subset=profile.train_subset,
                                  test_subset=profile.test_subset, note=lambda _: None)
    start = time.perf_counter()
    made = thumbnails(train.images, train.labels, test.images, test.labels)
    thumbnails_s = time.perf_counter() - start
    result = {
        **run.header(args.profile), "trials": rows, "baseline_pictures_s": round(float(base_points["pictures_s"].iloc[0]), 2),
        "thumbnails": {"images": len(made), "seconds": round(thumbnails_s, 2), "file_bytes": thumbs_file.stat().st_size},
        "summary": "; ".join(f"pictures {r['pictures_s']:.1f} s of the trial's {r['wall_s']:.0f} s wall "
                             f"({r['share_of_wall']:.1%})" for r in rows),
    }
    write(result, args.json)


if __name__ == "__main__":
    main()
