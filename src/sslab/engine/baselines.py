"""What the study's driver records itself, before the trials run: the random-init baselines (the
same evaluation of the untrained backbone, once per seed, with its pictures) and, once per dataset,
the thumbnails those pictures and the trials' show (``evaluation/pictures.py``, ``results/pictures.py``).
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


def record_baselines(store: ResultsStore, specs: Specs, data: dict[str, Any], seeds: list[int], progress) -> None:
    """The same evaluation of the untrained backbone, once per seed (the random-init reference),
    recorded under its baseline specification, its pictures under ``pictures.baseline_id``."""
    import torch

    from sslab.methods.blocks.backbone import Backbone
    from sslab.evaluation.evaluate import evaluate_for_profile

    profile = specs.profile
    for seed in seeds:
        start = time.perf_counter()
        torch.manual_seed(seed)
        backbone = Backbone(profile.arch, cifar_stem=profile.cifar_stem, width=profile.width)
        metrics = evaluate_for_profile(backbone, data["arrays"], profile, seed=seed, pictures=True)
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
