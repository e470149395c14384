"""The Ray Data stage that turns decoded images into a method's views.

``with_views(dataset, Method.views(config, image_size), stats=...)`` appends a ``map_batches`` stage that
runs on CPU wherever the cluster has free CPUs, streaming to the Train
workers. Every execution of the stage (one per epoch) draws fresh randomness,
so each epoch sees new crops, jitters and permutations.

Given a ``seed`` (the trial's seed and the epoch), the stage is reproducible: the
blocks are visited in a seeded order, Ray Data keeps that order through the
stage (``preserve_order``: an output waits for the ones before it, so a slow task
can hold the stream back), and each batch of views draws from a generator seeded
by the seed and the first image of the batch, so the same trial sees the same
views in the same order on every run, whatever the task scheduling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import ray.data

import torch

from sslab.methods.views import Normalization, Uint8Pixels, View, apply_views
from sslab.data.split import Split
from sslab.engine import placement

#: images per augmentation task; large enough to amortise Python, small enough to stream
VIEW_BATCH = 256


def make_views(batch: dict[str, np.ndarray], views: Sequence[View], stats: Normalization,
               seed: Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """One Ray Data batch {idx, image, label} → {idx, label, <view arrays>}; with a ``seed``, the
    views are a function of the seed and the batch's rows."""
    rng = np.random.default_rng(None if seed is None else [*seed, int(batch["idx"][0]), len(batch["idx"])])
    out = apply_views(views, batch["image"], rng, train=True, stats=stats)
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
    seed: Sequence[int] | None = None,
) -> ray.data.Dataset:
    """The dataset with the method's views computed per epoch inside Ray Data.

    ``stats`` normalises every view (the training split's statistics).
    Blocks are visited in a new random order every epoch; the Train loop adds a
    local shuffle buffer, so batches differ from epoch to epoch at no global-shuffle cost.
    ``remote_args`` (e.g. a ``label_selector`` from ``placement.augment_remote_args``)
    decide which nodes run the augmentation tasks; their ``label_selector`` also goes on every
    other demand of the pipeline, its requests to the autoscaler included. ``seed`` (non-negative integers, e.g.
    ``(trial seed, epoch)``) makes the block order and every view reproducible.
    """
    viewed = dataset.randomize_block_order(seed=None if seed is None else _block_seed(seed)).map_batches(
        make_views,
        fn_kwargs={"views": list(views), "stats": stats, "seed": None if seed is None else tuple(seed)},
        batch_size=VIEW_BATCH,
        batch_format="numpy",
        num_cpus=num_cpus,
        **(remote_args or {}),
    )
    return _own_context(viewed, preserve_order=seed is not None, label_selector=placement.label_selector(remote_args))


def _own_context(dataset: ray.data.Dataset, *, preserve_order: bool = False,
                 label_selector: dict[str, str] | None = None) -> ray.data.Dataset:
    """``dataset`` with a DataContext of its own, set for this pipeline alone: a derived dataset shares
    its source's DataContext object, and the source's every later pipeline must not change (no public
    setter; recheck on Ray upgrades).

    ``preserve_order`` keeps the blocks' order through the stages. ``label_selector`` (the augmentation
    tasks' own) goes to the pipeline's execution options, which put it on *every* demand the pipeline
    makes, not only on the ``map_batches`` tasks: Ray Data's other tasks, and the CPUs that its
    streaming executor asks the autoscaler for (``ray.autoscaler.sdk.request_resources`` through the
    AutoscalingCoordinator, including the CPUs it adds to get more object store while an all-to-all
    stage such as ``randomize_block_order`` runs). Without it those requests carry no label selector,
    and an autoscaler may satisfy them with any node type, a GPU machine included.
    """
    if not preserve_order and not label_selector:
        return dataset
    context = dataset.context.copy()
    if preserve_order:
        context.execution_options.preserve_order = True
    if label_selector:
        context.execution_options.label_selector = {**(context.execution_options.label_selector or {}),
                                                    **label_selector}
    dataset._context = dataset._logical_plan.context = context
    return dataset


def _block_seed(seed: Sequence[int]) -> int:
    return int(np.random.SeedSequence(list(seed)).generate_state(1)[0])


@dataclass(frozen=True)
class EpochViews:
    """A trial's views, epoch by epoch and worker by worker, reproducible from the trial's seed.

    ``views(epoch, rank, world_size)`` is the Ray Dataset that Train worker ``rank`` of
    ``world_size`` iterates in ``epoch``: the decoded images' blocks in an order seeded by (seed,
    epoch), split into ``world_size`` equal shards (each epoch deals the images out anew, as a
    ``DistributedSampler`` with ``set_epoch`` does), and this worker's shard through
    ``with_views(..., seed=(seed, epoch))``. Every worker builds its own shard from the same
    seed, so no coordinator is needed and a restarted worker group sees the very views and batch
    order it saw before: a retried trial is the uninterrupted trial. (Ray Train's
    ``streaming_split`` would deal blocks to whichever worker asks first, and its map tasks
    could not know the epoch.) Augmentation still runs as Ray Data tasks wherever
    ``remote_args`` place them.
    """

    dataset: ray.data.Dataset
    views: Sequence[View]
    stats: Normalization
    seed: int
    remote_args: dict[str, Any] | None = field(default=None)
    #: how the views travel to the trainer: "float32" (normalised) or "uint8" (pixels, a quarter
    #: of the bytes, normalised on the training device by ``to_model_input``)
    transfer: str = "float32"

    def __post_init__(self) -> None:
        self.stats.for_transfer(self.transfer)  # refuses an unknown dtype here, not in a Ray task

    def to_model_input(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch as the method reads it: uint8 views (every uint8 tensor of a batch is a view's
        pixels) normalised where they are, on the training device."""
        stats = self.stats.for_transfer(self.transfer)
        if not isinstance(stats, Uint8Pixels):
            return batch
        return {k: stats.normalise(v) if v.dtype == torch.uint8 else v for k, v in batch.items()}

    def __call__(self, epoch: int, rank: int = 0, world_size: int = 1) -> ray.data.Dataset:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a worker group of {world_size}")
        shard = self.dataset
        if world_size > 1:
            dealt = shard.randomize_block_order(seed=_block_seed((self.seed, epoch, world_size)))
            # dealing runs Ray Data too: where augmentation runs, asking the autoscaler for those nodes only
            dealt = _own_context(dealt, label_selector=placement.label_selector(self.remote_args))
            shard = dealt.split(world_size, equal=True)[rank]
        return with_views(shard, self.views, stats=self.stats.for_transfer(self.transfer),
                          remote_args=self.remote_args, seed=(self.seed, epoch))


def to_ray_dataset(split: Split, *, rows_per_block: int | None = None) -> ray.data.Dataset:
    """``split`` as a Ray Dataset with columns ``idx`` int64, ``image`` uint8 H x W x 3 (a tensor
    column) and ``label`` int64 (none for a split without labels: its batches carry none), in several blocks (~8 MiB each, at least 4 when there are
    enough rows) so that ``map_batches`` can stream and spread them over workers.

    Initialises Ray (``ray.init()``) if it is not running yet, as any Ray Data call does.
    """
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    n = len(split.images)
    labels = split.labels
    if (labels is not None and len(labels) != n) or len(split.idx) != n:
        raise ValueError(f"inconsistent Split: {n} images, {None if labels is None else len(labels)} labels, "
                         f"{len(split.idx)} idx")
    if n == 0:
        raise ValueError("cannot make a Ray Dataset of an empty Split")
    if rows_per_block is None:
        row_bytes = max(1, int(np.prod(split.images.shape[1:])))
        rows_per_block = min(max(1, (8 << 20) // row_bytes), math.ceil(n / 4))
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block = {rows_per_block} must be >= 1")
    tables = []
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        columns = {"idx": pa.array(np.ascontiguousarray(split.idx[start:stop], dtype=np.int64)),
                   "image": ArrowTensorArray.from_numpy(np.ascontiguousarray(split.images[start:stop]))}
        if labels is not None:
            columns["label"] = pa.array(np.ascontiguousarray(labels[start:stop], dtype=np.int64))
        tables.append(pa.table(columns))
    return ray.data.from_arrow(tables)
