"""The training loop's two links to Ray: ``RayTrainSession`` on each Train worker of a TorchTrainer,
``InProcessSession`` in a Tune trial's own process (``num_workers=0``). A session says the rank,
the world size and the device, gives each epoch's dataset, wraps the method for data parallelism,
restores the newest checkpoint and reports each epoch. The loop hands a session its typed state
(``checkpoints.TrainingState``); on storage it is a plain dict (``to_dict``), loaded as tensors and
plain types only."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from sslab.checkpoints import RAY_TRAIN_FILE, EpochCheckpoints, TrainingState
from sslab.engine.augment import EpochViews
from sslab.engine.errors import UnreadableCheckpointError
from sslab.methods.base import Method, buffer_names
from sslab.plan.profiles import Profile


def exclude_kept_in_sync(method: Method) -> list[str]:
    """Keep DDP from re-sending, before every forward, the buffers that ``after_step`` already keeps
    equal on every worker (its all-gathered updates, e.g. a memory bank: 25.6 MB per step on
    CIFAR-10, 655 MB at ImageNet's size). Other buffers (BatchNorm's running estimates) are still
    broadcast from rank 0, as DDP does by default. ``Method.kept_in_sync`` declares the modules and
    tensors; their buffers are named here by identity. Returns the names excluded."""
    kept = buffer_names(method, method.kept_in_sync())
    if kept:  # DDP's own hook for this (no public argument names single buffers)
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, kept)
    return kept


def load_checkpoint(checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    """The state of a checkpoint, loaded as tensors and plain types only (``weights_only``): a
    checkpoint on a shared bucket can never run code on the node that resumes from it."""
    with checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, RAY_TRAIN_FILE), map_location="cpu", weights_only=True)


class RayTrainSession:
    """The loop's link to Ray Train: one per Train worker of a TorchTrainer."""


    def __init__(self, profile: Profile, views: EpochViews):
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device() if profile.use_gpu else torch.device("cpu")
        self._views = views
        #: Train copies a reported checkpoint to the run's storage, except in its local mode (no workers)
        self._persisted = profile.num_workers >= 1


    def dataset(self, epoch: int):
        """This worker's shard of the epoch's views, the same on every retry (``augment.EpochViews``)."""
        return self._views(epoch, self.rank, self.world_size)


    def to_model_input(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_model_input(self._views, batch)


    def wrap(self, method: Method) -> torch.nn.Module:
        """Data parallelism across the worker group (gradients all-reduced by DDP)."""
        if self.world_size == 1:
            return method
        exclude_kept_in_sync(method)
        return ray.train.torch.prepare_model(
            method,
            move_to_device=False,
            parallel_strategy_kwargs={"find_unused_parameters": bool(method.unused_parameters())},
        )


    def restore(self) -> TrainingState | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        try:
            state = load_checkpoint(checkpoint)
        except Exception as err:  # noqa: BLE001 - Ray Train offers only its newest: every retry would fail alike
            raise UnreadableCheckpointError(
                f"the checkpoint {checkpoint.path} does not load ({type(err).__name__}: {err}); delete the "
                "trial's folder under <results>/<study>/ray/train to train it from scratch"
            ) from None
        return TrainingState.from_dict(state)


    def skipped_checkpoints(self) -> list[str]:
        return []


    def report(self, result: dict[str, Any], state: TrainingState | None) -> None:
        """The epoch's result (``EpochReport.to_result``) to Ray Train, with rank 0's state as its
        checkpoint, staged in a temporary folder that is removed once Ray has copied it to the run's
        storage (report returns after the upload), so nothing accumulates in a node's temporary
        folder over a long trial. Train's local mode (``num_workers=0`` through a TorchTrainer, tests
        only) keeps the folder itself as the checkpoint (not ``_persisted``), so there it stays."""
        if state is None:
            ray.train.report(result)
            return
        directory = tempfile.mkdtemp(prefix="sslab-ckpt-")
        try:
            torch.save(state.to_dict(), os.path.join(directory, RAY_TRAIN_FILE))
            ray.train.report(result, checkpoint=ray.train.Checkpoint.from_directory(directory))
        finally:
            if self._persisted:
                shutil.rmtree(directory, ignore_errors=True)


class InProcessSession:
    """The loop's link to Ray Tune when a trial trains in its own process (``num_workers=0``).


    A single-worker trial needs no Train controller, worker group or dataset split
    coordinator: on 2 CPUs they cost about 17 s of start-up per trial
    (``benchmarks/sweep_overhead.py``). The trial's process holds the worker's
    resources instead, reads the dataset itself, and keeps its epoch checkpoints in
    ``checkpoints``, from which Tune's retry of a lost process and a re-run of the
    study both continue.
    """


    rank, world_size = 0, 1


    def __init__(self, profile: Profile, views: EpochViews, checkpoints: EpochCheckpoints, report=None):
        self.device = torch.device("cuda" if profile.use_gpu else "cpu")
        self._views, self._checkpoints = views, checkpoints
        if report is None:
            from ray import tune  # only a Tune trial needs it; Train workers never import Tune


            report = tune.report
        self._report = report


    def dataset(self, epoch: int):
        return self._views(epoch)


    def to_model_input(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_model_input(self._views, batch)


    def wrap(self, method: Method) -> torch.nn.Module:
        return method


    def restore(self) -> TrainingState | None:
        state = self._checkpoints.latest()
        return None if state is None else TrainingState.from_dict(state)


    def skipped_checkpoints(self) -> list[str]:
        """The newer checkpoints that did not load and were passed over (said in the trial's report)."""
        return self._checkpoints.skipped


    def report(self, result: dict[str, Any], state: TrainingState | None) -> None:
        """The epoch's result (``EpochReport.to_result``) to Tune, once its state is on storage."""
        if state is not None:  # on storage before Tune hears of the epoch
            self._checkpoints.save(state.to_dict(), state.epoch)
        self._report(result)


def to_model_input(views, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``EpochViews.to_model_input``; a plain dataset-per-epoch function (benchmarks) sends its batches as they are."""
    return views.to_model_input(batch) if isinstance(views, EpochViews) else batch
