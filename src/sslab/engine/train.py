"""The one generic training loop, and the two ways a trial runs it.

A trial with Train workers (``num_workers >= 1``) launches a TorchTrainer that
runs the loop on every worker; a single-worker trial with ``num_workers=0``
runs it in the Tune trial's own process (``sessions.InProcessSession``), which
skips Ray Train's start-up. The loop talks to either through a small session
(rank, device, dataset, restore, report).

Every method goes through the same loop: build the backbone and the method
from the registry, wrap it for data parallelism, build the optimiser its
configuration names (``Method.parameter_groups``, ``blocks.optim``), then per
step ``method(batch, ctx)`` (= ``training_step``) → backward → optimiser step →
warm-up + cosine LR step → ``method.after_step(batch, out, ctx)``, where ``ctx``
(``StepContext``) says the global step, the total steps, the epoch and the
world size. Each epoch reports its mean losses to Ray (and so to Tune) as one
``EpochReport`` with a checkpoint (``checkpoints.TrainingState``) holding the
model (every method buffer included), the optimizer, the schedule, the RNG and
the history; the last epoch adds the evaluation of the frozen backbone. A
failure no retry mends is a ``FailureReport``. The loop knows nothing about any
particular method.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from sslab import methods
from sslab.checkpoints import TrainingState
from sslab.methods.base import DataInfo, Method, StepContext
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.optim import build_optimizer, build_schedule
from sslab.engine.augment import EpochViews
from sslab.engine.device import (SteadyTimer, channels_last_batch, finite_on_every_worker, place_on_device,
                                 restore_rng, rng_of_every_worker, set_device_numerics, to_host)
from sslab.engine.errors import DeterministicTrialError, EmptyEpochError, NonFiniteLossError
from sslab.evaluation.evaluate import INVARIANCE_SAMPLES, evaluate_for_profile, evaluation_batches, monitor
from sslab.evaluation.pictures import SAMPLES as PICTURES
from sslab.engine.prefetch import EpochBatches
from sslab.engine.sessions import InProcessSession, RayTrainSession
from sslab.plan.profiles import Profile
from sslab.results import metrics as names
from sslab.results.cpu_steal import StealMeter, share as stolen_share
from sslab.results.provenance import provenance


@dataclass
class TrialRun:
    """What one trial trains: a method and its configuration, a profile, a seed and its data."""

    method: str
    method_config: dict[str, Any]
    profile: Profile
    seed: int
    data: DataInfo
    #: ObjectRef (or dict) of the evaluation arrays: train_images/labels, test_images/labels, stats
    eval_data: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method_class(self) -> type[Method]:
        return methods.get(self.method)

    def config(self):
        """The method's validated configuration."""
        return self.method_class.Config.from_flat(self.method_config)

    def build(self) -> tuple[Backbone, Method]:
        """The backbone and the method, initialised from ``seed`` (identical on every worker)."""
        torch.manual_seed(self.seed)
        backbone = Backbone(self.profile.arch, cifar_stem=self.profile.cifar_stem, width=self.profile.width)
        return backbone, self.method_class.build(self.config(), backbone, self.data)


#: the report fields whose own keys are spread into the result (the rest are keys by their own name)
_SPREAD = ("step_means", "timing", "evaluation", "unmeasured")


def _flat(report, names) -> dict[str, Any]:
    """The fields ``names`` of ``report`` as one flat dict, in that order: a field by its own name, one
    of ``_SPREAD`` by its keys, a None field left out, the history a copy."""
    out: dict[str, Any] = {}
    for name in names:
        value = getattr(report, name)
        if name in _SPREAD:
            out.update(value)
        elif value is not None:
            out[name] = list(value) if name == "history" else value
    return out


@dataclass
class EpochReport:
    """One epoch's result as the loop reports it: to Ray (Tune or Train), and through Tune to the
    store callback (``tune_callbacks.py``), which reads these keys.

    The fields are the result's keys, in this order (``to_result``: Tune takes one flat dict), except
    ``step_means``, ``timing`` and ``evaluation``, whose own keys are spread in; a field that is None
    is left out. The fields up to ``evaluation`` are this epoch's row of the epochs table (``row``)."""

    # ---- this epoch: its row of the epochs table
    #: the method's step metrics (``loss``, ...), each averaged over the epoch's steps
    step_means: dict[str, float]
    epoch: int
    lr: float
    #: images trained on so far, over every attempt
    images_seen: int
    epoch_s: float
    #: the share of the machine's CPU time stolen while this epoch trained
    epoch_cpu_steal: float
    restarts: int
    #: ``steady_images_per_s`` and its window (``device.SteadyTimer``); empty for a too short epoch
    timing: dict[str, float]
    #: rank 0's evaluation: the monitor (kNN, the label-free measures) every epoch, the final one after the last
    #: (``metrics.is_evaluation`` names, and ``INVARIANCE_SAMPLES`` and the ``pictures.SAMPLES``, which
    #: the row leaves out)
    evaluation: dict[str, Any]
    # ---- the trial so far, over every attempt
    #: where this epoch ran (``host/<field>`` of the trial's row)
    provenance: dict[str, Any]
    train_s: float
    #: per-epoch monitor kNN and the final evaluation
    eval_s: float
    #: training seconds × every device the trial holds
    device_s: float
    wall_s: float
    #: the share of CPU time stolen over every attempt (``results/cpu_steal.py``)
    cpu_steal: float
    #: the newer checkpoints that did not load and were passed over, said with the first epoch after a resume
    checkpoints_skipped: str | None = None
    #: every epoch's row so far, this one's last
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_result(self) -> dict[str, Any]:
        return _flat(self, [f.name for f in fields(self)])

    def row(self) -> dict[str, Any]:
        """This epoch's row of the epochs table (an entry of ``history``)."""
        order = [f.name for f in fields(self)]
        row = _flat(self, order[: order.index("evaluation") + 1])
        for samples in (INVARIANCE_SAMPLES, *PICTURES):
            row.pop(samples, None)
        return row

    @staticmethod
    def again(result: dict[str, Any], *, wall_s: float, restarts: int,
              checkpoints_skipped: str | None = None) -> dict[str, Any]:
        """The last epoch's result (``to_result``, kept in the checkpoint) said again by an attempt that
        resumed after the last epoch, with this attempt's wall seconds, restarts and skipped checkpoints."""
        now = dict(wall_s=wall_s, restarts=restarts, checkpoints_skipped=checkpoints_skipped)  # field names
        return {**result, **{name: value for name, value in now.items() if value is not None}}


@dataclass(kw_only=True)
class FailureReport:
    """A failure no retry can mend (``errors.DeterministicTrialError``: a NaN loss, an empty epoch, an
    unreadable only checkpoint), reported as the trial's last result, so that neither Tune nor Ray
    Train starts the trial again. The fields are the result's keys, in this order (``to_result``),
    ``unmeasured`` spread in; ``failure`` is ``errors.FAILURE``."""

    #: the cause, in one line
    failure: str
    #: the epoch it failed in
    failed_epoch: int
    #: the last finished epoch (-1: none)
    epoch: int
    #: the metrics a failed trial has none of (NaN, not missing: a search's metric, whichever it is, must be there)
    unmeasured: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        [names.KNN, names.LOSS, *names.LABEL_FREE, *map(names.embedding, names.LABEL_FREE)], math.nan))
    images_seen: int
    train_s: float
    eval_s: float
    restarts: int
    wall_s: float
    device_s: float
    history: list[dict[str, Any]]

    def to_result(self) -> dict[str, Any]:
        return _flat(self, [f.name for f in fields(self)])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The generic loop on a Ray Train worker (or in-process under Train's local mode)."""
    spec: TrialRun = config["spec"]
    run_loop(spec, RayTrainSession(spec.profile, config["views"]))


def run_loop(spec: TrialRun, session: RayTrainSession | InProcessSession) -> None:
    """Train ``spec`` epoch by epoch, reporting and checkpointing each epoch through ``session``."""
    profile = spec.profile
    if profile.torch_threads:
        torch.set_num_threads(profile.torch_threads)
    rank, world_size, device = session.rank, session.world_size, session.device

    set_device_numerics(profile, device)
    backbone, method = spec.build()
    place_on_device(method, profile, device)
    model = session.wrap(method)
    torch.manual_seed(spec.seed * 1000 + rank)  # negatives and other per-step draws differ per worker
    config = method.config
    optimizer = build_optimizer(method.parameter_groups(), config.optim, global_batch=profile.batch_size * world_size)
    steps_per_epoch = max(1, spec.data.num_samples // (profile.batch_size * world_size))
    # compute spent is seconds × every device the trial holds (GPUs, or the workers' CPUs)
    devices_held = world_size * (1 if profile.use_gpu else profile.cpus_per_worker)
    total_steps = steps_per_epoch * profile.epochs
    schedule = build_schedule(optimizer, total_steps, config.optim.warmup_epochs * steps_per_epoch)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if profile.precision == "bf16" and device.type == "cuda"
        else nullcontext()
    )
    start_epoch, history, images_seen, train_seconds, eval_seconds, restarts = 0, [], 0, 0.0, 0.0, 0
    attempt_start, wall_before, trial_steal = time.perf_counter(), 0.0, StealMeter()

    def wall_seconds() -> float:  # this attempt's seconds so far plus every attempt's before it
        return wall_before + time.perf_counter() - attempt_start

    epoch, ahead = start_epoch, None
    evaluation_cache: dict[str, Any] = {}  # what every epoch's evaluation reuses (the label-free measures' views)
    try:
        restored = session.restore()  # an unreadable only checkpoint ends the trial below, like a NaN
        skipped = session.skipped_checkpoints()
        if restored is not None:  # a retry after a lost worker or node, or a resumed study
            restarts = restored.restarts + 1
            method.load_state_dict(restored.model)
            optimizer.load_state_dict(restored.optimizer)
            schedule.load_state_dict(restored.schedule)
            start_epoch, history = restored.epoch + 1, restored.history
            images_seen, train_seconds = restored.images_seen, restored.train_seconds
            eval_seconds, wall_before = restored.eval_seconds, restored.wall_seconds
            trial_steal.before = restored.cpu_steal_ticks  # None: not measured before (the share is unknown)
            restore_rng(restored.rng, rank, world_size, device)
            if start_epoch >= profile.epochs:  # resumed after the last epoch: say again what it reported
                session.report(EpochReport.again(restored.last_metrics, wall_s=wall_seconds(), restarts=restarts,
                                                 checkpoints_skipped="; ".join(skipped) or None), None)
                return
        else:  # a new run: data-dependent state first (e.g. a memory bank of the untrained features)
            method.before_training(_training_images(spec, device))

        def epoch_batches(epoch: int):
            return iter_epoch_batches(session.dataset(epoch), profile, seed=spec.seed, epoch=epoch, rank=rank,
                                      device=device)

        # the next epoch's pipeline starts while this one's last batches train (src/sslab/engine/prefetch.py)
        ahead = (EpochBatches(epoch_batches, range(start_epoch, profile.epochs), depth=profile.prefetch_batches)
                 if profile.prefetch_batches else None)
        for epoch in range(start_epoch, profile.epochs):
            method.train()
            sums: dict[str, torch.Tensor | float] = {}  # on the device: read once, after the epoch
            steps, epoch_start, timer = 0, time.perf_counter(), SteadyTimer(profile.timing_warmup_steps, device)
            epoch_steal = StealMeter()
            for step, batch in enumerate(ahead.next_epoch() if ahead else epoch_batches(epoch)):
                timer.step(step)
                batch = session.to_model_input(batch)  # uint8 views normalised on the device
                if profile.channels_last:
                    batch = channels_last_batch(batch)
                ctx = StepContext(step=schedule.last_epoch, total_steps=total_steps, epoch=epoch,
                                  world_size=world_size, rank=rank)
                with autocast:
                    out = model(batch, ctx)  # a StepOutput: loss, metrics, and the carry after_step reads
                    loss, step_metrics = out.loss, out.metrics
                if not finite_on_every_worker(loss, world_size):  # the step's one wait for the device
                    raise NonFiniteLossError(
                        f"loss became NaN at epoch {epoch} step {step} (value {loss.item()}); "
                        "lower the learning rate or check the method's temperature"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                method.after_step(batch, out, ctx)
                for key, value in step_metrics.items():
                    sums[key] = sums.get(key, 0.0) + (value.detach().float() if torch.is_tensor(value) else value)
                steps += 1
            if steps == 0:
                raise EmptyEpochError(
                    f"epoch {epoch} produced no full batch of {profile.batch_size} images on worker {rank}; "
                    "the dataset is empty or smaller than batch_size × workers: lower batch_size or use more data"
                )
            train_seconds += time.perf_counter() - epoch_start
            images_seen += steps * profile.batch_size * world_size
            step_means = {key: value / steps for key, value in to_host(sums).items()}
            lr, epoch_s = optimizer.param_groups[0]["lr"], time.perf_counter() - epoch_start
            epoch_cpu_steal = epoch_steal.fraction()  # of the machine's CPU time (src/sslab/results/cpu_steal.py)
            timing = timer.result(steps, profile.batch_size)
            evaluation: dict[str, Any] = {}
            eval_start = time.perf_counter()
            if rank == 0 and spec.eval_data is not None:
                if epoch == profile.epochs - 1:
                    evaluation = evaluate_for_profile(backbone, _eval_arrays(spec), profile, seed=spec.seed,
                                                      method=method, pictures=True, device=device,
                                                      cache=evaluation_cache)
                else:
                    evaluation = monitor(backbone, _eval_arrays(spec), profile, device, method=method, seed=spec.seed,
                                         cache=evaluation_cache)
            eval_seconds += time.perf_counter() - eval_start
            where = provenance(device)  # where this epoch ran (host/<field> of the trial's row)
            wall_s, steal_ticks = wall_seconds(), trial_steal.ticks()
            report = EpochReport(
                step_means=step_means, epoch=epoch, lr=lr, images_seen=images_seen, epoch_s=epoch_s,
                epoch_cpu_steal=epoch_cpu_steal, restarts=restarts, timing=timing, evaluation=evaluation,
                provenance=where, train_s=train_seconds, eval_s=eval_seconds,
                device_s=train_seconds * devices_held, wall_s=wall_s,
                cpu_steal=stolen_share(steal_ticks),  # over every attempt (src/sslab/results/cpu_steal.py)
                checkpoints_skipped="; ".join(skipped) or None,  # said once, with the first epoch after a resume
            )
            skipped = []
            history.append(report.row())
            report.history = list(history)
            state, rng = None, rng_of_every_worker(world_size, device)
            if rank == 0:
                state = TrainingState(
                    model=method.state_dict(), optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                    epoch=epoch, history=history, images_seen=images_seen, train_seconds=train_seconds,
                    eval_seconds=eval_seconds, wall_seconds=wall_s, cpu_steal_ticks=steal_ticks, rng=rng,
                    restarts=restarts, last_metrics=report.to_result(),
                )
            session.report(report.to_result(), state)
    except DeterministicTrialError as err:
        # no retry can mend it: report the cause as the trial's last result and end normally, so
        # neither Tune nor Ray Train starts it again (a raised error would cost max_failures + 1 attempts)
        session.report(FailureReport(
            failure=str(err), failed_epoch=epoch, epoch=epoch - 1, images_seen=images_seen, train_s=train_seconds,
            eval_s=eval_seconds, restarts=restarts, wall_s=wall_seconds(), device_s=train_seconds * devices_held,
            history=list(history),
        ).to_result(), None)
    finally:
        if ahead is not None:
            ahead.close()


def iter_epoch_batches(dataset, profile: Profile, *, seed: int, epoch: int, rank: int, device: torch.device):
    """The batches a worker trains on in ``epoch``, from its dataset of that epoch's views."""
    return dataset.iter_torch_batches(
        batch_size=profile.batch_size,
        drop_last=True,
        device=device,
        # page-locked host copies, so the copy to the GPU does not wait for the step before
        pin_memory=device.type == "cuda",
        prefetch_batches=profile.prefetch_batches,
        local_shuffle_buffer_size=profile.shuffle_buffer or None,
        # a new, reproducible batch order every epoch (and on every retry of that epoch)
        local_shuffle_seed=(seed * 1_000_003 + epoch * 1_009 + rank) if profile.shuffle_buffer else None,
    )


def _training_images(spec: TrialRun, device: torch.device):
    """The trial's training images for ``before_training``, fetched only when the method reads them;
    none for a trial without evaluation arrays (a bare TorchTrainer in a test)."""
    if spec.eval_data is None:
        return
    arrays = _eval_arrays(spec)
    yield from evaluation_batches(arrays["train_images"], arrays["stats"], device=device,
                                  channels_last=spec.profile.channels_last)


def _eval_arrays(spec: TrialRun) -> dict[str, np.ndarray]:
    data = spec.eval_data
    return ray.get(data) if isinstance(data, ray.ObjectRef) else data


def make_trainer(
    spec: TrialRun,
    views: EpochViews,
    *,
    name: str,
    storage_path: str,
    callbacks: list | None = None,
) -> ray.train.torch.TorchTrainer:
    """A TorchTrainer running the generic loop for one trial."""
    from sslab.engine.placement import TRAIN_LABEL_SELECTOR

    profile = spec.profile
    resources = {"CPU": profile.cpus_per_worker}
    if profile.use_gpu:
        resources["GPU"] = 1
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec, "views": views},  # each worker reads its own shard (EpochViews)
        scaling_config=ray.train.ScalingConfig(
            num_workers=profile.num_workers,
            use_gpu=profile.use_gpu,
            resources_per_worker=resources if profile.num_workers else None,
            placement_strategy=profile.worker_placement,
            label_selector=TRAIN_LABEL_SELECTOR if profile.num_workers else None,
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(max_failures=profile.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks or [],
        ),
    )
