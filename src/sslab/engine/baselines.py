"""What the study's driver evaluates and records itself: before the trials, the random-init
baselines (the same evaluation of the untrained backbone, once per seed, with its pictures) and,
once per dataset, the thumbnails those pictures and the trials' show (``evaluation/pictures.py``,
``results/pictures.py``); after them, the labelled check of what a study that chose without
labels picked (``check_pick``, ``results/picks.py``).
"""

from __future__ import annotations

import time
from typing import Any

from sslab.evaluation.pictures import EMBEDDING_SAMPLES, NEIGHBOUR_SAMPLES, PICTURES_SECONDS, SAMPLES, thumbnails
from sslab.plan.spec import Specs
from sslab.results import pictures
from sslab.results.store import ResultsStore


def missing_baseline_seeds(store: ResultsStore, specs: Specs, seeds: int) -> list[int]:
    """Seeds whose random-init baseline of this run's backbone, data and evaluation is not in the store yet."""
    existing = store.read("baselines")
    if existing.empty or "setting_id" not in existing:
        return list(range(seeds))
    done = set(existing.loc[existing["setting_id"] == specs.baseline(0).setting_id, "seed"])
    return [seed for seed in range(seeds) if seed not in done]


def _backbone(profile, seed: int | None = None):
    """The profile's backbone; with ``seed``, drawn as the random-init baseline of that seed is."""
    import torch

    from sslab.methods.blocks.backbone import Backbone

    if seed is not None:
        torch.manual_seed(seed)
    return Backbone(profile.arch, cifar_stem=profile.cifar_stem, width=profile.width)


def record_baselines(store: ResultsStore, specs: Specs, data: dict[str, Any], seeds: list[int], progress) -> None:
    """The same evaluation of the untrained backbone, once per seed (the random-init reference),
    recorded under its baseline specification, its pictures under ``pictures.baseline_id``."""
    from sslab.evaluation.evaluate import evaluate_for_profile

    profile = specs.profile
    for seed in seeds:
        start = time.perf_counter()
        metrics = evaluate_for_profile(_backbone(profile, seed), data["arrays"], profile, seed=seed, pictures=True)
        shown = {name: metrics.pop(name, None) for name in SAMPLES}
        baseline = specs.baseline(seed)
        pictures.record_pictures(store, pictures.baseline_id(baseline.setting_id, seed), shown[NEIGHBOUR_SAMPLES],
                                 shown[EMBEDDING_SAMPLES], shown[PICTURES_SECONDS])
        store.record_baseline({"backbone": profile.backbone_name, "seed": seed, "setting_id": baseline.setting_id,
                               **metrics, "wall_s": time.perf_counter() - start, **baseline.record()})
        measured = (f"kNN top-1 {metrics['knn_top1']:.3f}" if "knn_top1" in metrics  # none without labels
                    else f"RankMe {metrics['rankme']:.1f}")
        progress.note(f"random-init baseline (seed {seed}): {measured}")


def record_thumbnails(store: ResultsStore, specs: Specs, arrays: dict[str, Any]) -> None:
    """The thumbnails of this run's data (its training subset and the test queries), unless the
    store has them: made once per dataset, not per trial; none without a labelled evaluation
    (``evaluate.labelled_arrays``: the pictures are of the images kNN reads)."""
    from sslab.evaluation.evaluate import labelled_arrays

    dataset, labelled = pictures.dataset_key(specs.data), labelled_arrays(arrays)
    if dataset is None or labelled is None or pictures.has_thumbnails(store, dataset):
        return
    pictures.record_thumbnails(store, dataset, thumbnails(labelled["train_images"], labelled["train_labels"],
                                                          labelled["test_images"], labelled["test_labels"]))


def check_pick(store: ResultsStore, study, profile, train, test, trials, sizes: dict[str, Any], progress) -> None:
    """A study that chose without labels (``Study.reads_labels`` false, no ``--eval-dataset``) on data
    that has them: once its choosing is over, the trial it picks (the best of ``trials``, the shown
    setting's, by its metric) is evaluated with the labels, as ``--eval-dataset <its dataset>``
    would have (kNN and the probes on the labelled splits, the images normalised with the
    statistics it trained with), beside the random-init backbone of its seed on the same images,
    and recorded in ``results/picks.TABLE`` under its trial id; a pick already checked is not
    evaluated again. ``sizes``: how the run read its splits (``load_train_test``'s arguments), with
    which the labelled ones are read. Data without labels: one note saying how to check it instead."""
    import datetime

    from sslab.checkpoints import backbone_weights, final_state
    from sslab.data.train_test import evaluation_arrays, load_evaluation
    from sslab.evaluation.evaluate import evaluate_for_profile
    from sslab.results import metrics, picks

    if study.reads_labels or profile.eval_dataset or isinstance(study.metric, list):
        return
    pick = picks.best_trial(trials, study.primary_metric, study.primary_mode)
    if pick is None:
        return
    checks = store.read(picks.TABLE)
    if not checks.empty and pick["trial_id"] in set(checks["trial_id"]):
        return
    try:
        evaluation = load_evaluation(profile.dataset, **sizes)
    except ValueError:  # data without labels: nothing to check the pick with here
        progress.note(f"{pick['trial_id']} is this study's pick by {study.primary_metric}; to see its kNN, run the "
                      f"study again with --eval-dataset NAME (a labelled dataset)")
        return
    state, path, passed = final_state(f"{store.ray_storage}/train/{pick['trial_id']}", int(pick["epochs"]))
    if state is None:
        progress.note(f"the pick {pick['trial_id']} cannot be checked with labels: its final weights are not in "
                      f"{store.ray_storage}/train ({'; '.join(passed) or 'no checkpoint'})")
        return
    start = time.perf_counter()
    arrays = evaluation_arrays(train, test, evaluation)
    seed = int(pick["seed"])
    trained = _backbone(profile)
    trained.load_state_dict(backbone_weights(state), strict=True)
    measured = [{k: v for k, v in evaluate_for_profile(backbone.eval(), arrays, profile, seed=seed).items()
                 if metrics.needs_labels(k)} for backbone in (trained, _backbone(profile, seed))]
    identity = {f"data/eval_{split}_content_sha256": part.identity()["content_sha256"]
                for split, part in zip(("train", "test"), evaluation)}
    store.append(picks.TABLE, [{
        "trial_id": pick["trial_id"], "setting_id": pick.get("setting_id"), "method": pick["method"], "seed": seed,
        "picked_by": study.primary_metric, "mode": study.primary_mode,
        "picked_value": float(pick[study.primary_metric]), "checkpoint": path,
        "data/eval_dataset": profile.dataset, **identity,
        **{c: pick[c] for c in pick.index if str(c).startswith("eval/")},
        **measured[0], **{picks.RANDOM_INIT + k: v for k, v in measured[1].items()},
        "check_s": time.perf_counter() - start,
        "checked_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }], replace_where={"trial_id": pick["trial_id"]})
