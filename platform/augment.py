"""The Ray Data stage that turns decoded images into a method's views.

``with_views(dataset, Method.views(config, image_size), stats=...)`` appends a ``map_batches`` stage that
runs on CPU wherever the cluster has free CPUs, streaming to the Train
workers. Every execution of the stage (one per epoch) draws fresh randomness,
so each epoch sees new crops, jitters and permutations.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import ray.data

from sslab.methods.views import Normalization, View, apply_views

#: images per augmentation task; large enough to amortise Python, small enough to stream
VIEW_BATCH = 256


def make_views(batch: dict[str, np.ndarray], views: Sequence[View], stats: Normalization) -> dict[str, np.ndarray]:
    """One Ray Data batch {idx, image, label} → {idx, label, <view arrays>}."""
    out = apply_views(views, batch["image"], np.random.default_rng(), train=True, stats=stats)
    out["idx"] = batch["idx"]
    if "label" in batch:
        out["label"] = batch["label"]
    return out


def with_views(
    dataset: ray.data.Dataset,
    views: Sequence[View],
    *,
    stats: Normalization,
    num_cpus: float = 1.0,
    remote_args: dict[str, Any] | None = None,
) -> ray.data.Dataset:
    """The dataset with the method's views computed per epoch inside Ray Data.

    ``stats`` normalises every view (the training split's statistics).
    Blocks are visited in a new random order every epoch; the Train loop adds a
    local shuffle buffer, so batches differ from epoch to epoch at no global-shuffle cost.
    ``remote_args`` (e.g. a ``label_selector`` from ``placement.augment_remote_args``)
    decide which nodes run the augmentation tasks.
    """
    return dataset.randomize_block_order().map_batches(
        make_views,
        fn_kwargs={"views": list(views), "stats": stats},
        batch_size=VIEW_BATCH,
        batch_format="numpy",
        num_cpus=num_cpus,
        **(remote_args or {}),
    )
