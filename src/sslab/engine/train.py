"""The one generic training loop, and the two ways a trial runs it.

A trial with Train workers (``num_workers >= 1``) launches a TorchTrainer that
runs the loop on every worker; a single-worker trial with ``num_workers=0``
runs it in the Tune trial's own process (``train_in_process``), which skips
Ray Train's start-up. The loop talks to either through a small session
(rank, device, dataset, restore, report).

Every method goes through the same loop: build the backbone and the method
from the registry, wrap it for data parallelism, build the optimiser its
configuration names (``Method.parameter_groups``, ``blocks.optim``), then per
step ``method(batch, ctx)`` (= ``training_step``) → backward → optimiser step →
warm-up + cosine LR step → ``method.after_step(batch, ctx)``, where ``ctx``
(``StepContext``) says the global step, the total steps, the epoch and the
world size. Each epoch reports its mean losses to Ray (and so to Tune) with a
checkpoint holding the model (every method buffer included), the optimizer,
the schedule and the history; the last epoch adds the evaluation of the frozen
backbone. The loop knows nothing
about any particular method.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from sslab import methods
from sslab.methods.base import DataInfo, Method, StepContext
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.optim import build_optimizer, build_schedule
from sslab.engine.augment import EpochViews
from sslab.engine.checkpoints import EpochCheckpoints
from sslab.results.cpu_steal import StealMeter, share as stolen_share
from sslab.engine.evaluate import evaluate_for_profile, evaluation_batches, monitor_knn
from sslab.engine.prefetch import EpochBatches
from sslab.results import metrics as names
from sslab.plan.profiles import Profile
from sslab.results.provenance import provenance

CHECKPOINT_FILE = "state.pt"


#: the result key of a trial that failed in a way no retry can mend (its value: the one-line cause)
FAILURE = "failure"


class DeterministicTrialError(Exception):
    """A failure that would happen again on a retry (a non-finite loss, an empty epoch): the trial
    reports it as its last result and ends, instead of raising into Tune's and Train's retries."""


class NonFiniteLossError(DeterministicTrialError, FloatingPointError):
    """The loss became NaN or infinite; the trial stops, the study goes on."""


class UnreadableCheckpointError(DeterministicTrialError):
    """The only checkpoint to resume from does not load."""


class EmptyEpochError(DeterministicTrialError, ValueError):
    """An epoch produced no full batch."""


_NAN_MESSAGE = re.compile(r"loss became (?:NaN|infinite) at epoch \d+ step \d+[^\n]*")


def root_cause(error: BaseException | str) -> str:
    """One line naming why a trial failed, dug out of Ray's nested worker tracebacks."""
    text = str(error)
    found = _NAN_MESSAGE.search(text)
    if found:
        return found.group(0)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors[-1] if errors else (lines[-1] if lines else type(error).__name__))[:500]


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
        return self.method_class.Config(**self.method_config)

    def build(self) -> tuple[Backbone, Method]:
        """The backbone and the method, initialised from ``seed`` (identical on every worker)."""
        torch.manual_seed(self.seed)
        backbone = Backbone(self.profile.arch, cifar_stem=self.profile.cifar_stem, width=self.profile.width)
        return backbone, self.method_class.build(self.config(), backbone, self.data)


def exclude_kept_in_sync(method: Method) -> list[str]:
    """Keep DDP from re-sending, before every forward, the buffers that ``after_step`` already keeps
    equal on every worker (its all-gathered updates, e.g. a memory bank: 25.6 MB per step on
    CIFAR-10, 655 MB at ImageNet's size). Other buffers (BatchNorm's running estimates) are still
    broadcast from rank 0, as DDP does by default. Returns the names excluded."""
    kept = [name for name, _ in method.named_buffers() if name.startswith(method.after_step_updates())]
    if kept:  # DDP's own hook for this (no public argument names single buffers)
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, kept)
    return kept


def _report_with_checkpoint(metrics: dict[str, Any], state: dict[str, Any], *, persisted: bool) -> None:
    """``ray.train.report`` with the state as a checkpoint, staged in a temporary folder that is
    removed once Ray has copied it to the run's storage (report returns after the upload), so
    nothing accumulates in a node's temporary folder over a long trial. Train's local mode
    (``num_workers=0`` through a TorchTrainer, tests only) keeps the folder itself as the
    checkpoint (``persisted=False``), so there it stays."""
    directory = tempfile.mkdtemp(prefix="sslab-ckpt-")
    try:
        torch.save(state, os.path.join(directory, CHECKPOINT_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    finally:
        if persisted:
            shutil.rmtree(directory, ignore_errors=True)


def _load_checkpoint(checkpoint: ray.train.Checkpoint) -> dict[str, Any]:
    """The state of a checkpoint, loaded as tensors and plain types only (``weights_only``): a
    checkpoint on a shared bucket can never run code on the node that resumes from it."""
    with checkpoint.as_directory() as directory:
        return torch.load(os.path.join(directory, CHECKPOINT_FILE), map_location="cpu", weights_only=True)


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
        return _to_model_input(self._views, batch)

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

    def restore(self) -> dict[str, Any] | None:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        try:
            return _load_checkpoint(checkpoint)
        except Exception as err:  # noqa: BLE001 - Ray Train offers only its newest: every retry would fail alike
            raise UnreadableCheckpointError(
                f"the checkpoint {checkpoint.path} does not load ({type(err).__name__}: {err}); delete the "
                "trial's folder under <results>/<study>/ray/train to train it from scratch"
            ) from None

    def skipped_checkpoints(self) -> list[str]:
        return []

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is None:
            ray.train.report(metrics)
        else:
            _report_with_checkpoint(metrics, state, persisted=self._persisted)


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
        return _to_model_input(self._views, batch)

    def wrap(self, method: Method) -> torch.nn.Module:
        return method

    def restore(self) -> dict[str, Any] | None:
        return self._checkpoints.latest()

    def skipped_checkpoints(self) -> list[str]:
        """The newer checkpoints that did not load and were passed over (said in the trial's report)."""
        return self._checkpoints.skipped

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None) -> None:
        if state is not None:  # on storage before Tune hears of the epoch
            self._checkpoints.save(state, state["epoch"])
        self._report(metrics)


def _to_model_input(views, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``EpochViews.to_model_input``; a plain dataset-per-epoch function (benchmarks) sends its batches as they are."""
    return views.to_model_input(batch) if isinstance(views, EpochViews) else batch


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The generic loop on a Ray Train worker (or in-process under Train's local mode)."""
    spec: TrialRun = config["spec"]
    run_loop(spec, RayTrainSession(spec.profile, config["views"]))


def train_in_process(spec: TrialRun, views: EpochViews, checkpoints: str, *, report=None) -> None:
    """The generic loop in the calling process (a Tune trial): checkpoints under the path or URI ``checkpoints``."""
    run_loop(spec, InProcessSession(spec.profile, views, EpochCheckpoints(checkpoints), report=report))


def run_loop(spec: TrialRun, session: RayTrainSession | InProcessSession) -> None:
    """Train ``spec`` epoch by epoch, reporting and checkpointing each epoch through ``session``."""
    profile = spec.profile
    if profile.torch_threads:
        torch.set_num_threads(profile.torch_threads)
    rank, world_size, device = session.rank, session.world_size, session.device

    _set_device_numerics(profile, device)
    backbone, method = spec.build()
    place_on_device(method, profile, device)
    model = session.wrap(method)
    torch.manual_seed(spec.seed * 1000 + rank)  # negatives and other per-step draws differ per worker
    config = method.config
    optimizer = build_optimizer(method.parameter_groups(), config, global_batch=profile.batch_size * world_size)
    steps_per_epoch = max(1, spec.data.num_samples // (profile.batch_size * world_size))
    # compute spent is seconds × every device the trial holds (GPUs, or the workers' CPUs)
    devices_held = world_size * (1 if profile.use_gpu else profile.cpus_per_worker)
    total_steps = steps_per_epoch * profile.epochs
    schedule = build_schedule(optimizer, total_steps, config.warmup_epochs * steps_per_epoch)
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
    try:
        state = session.restore()  # an unreadable only checkpoint ends the trial below, like a NaN
        skipped = session.skipped_checkpoints()
        if state is not None:  # a retry after a lost worker or node, or a resumed study
            restarts = state.get("restarts", 0) + 1
            method.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start_epoch, history = state["epoch"] + 1, state["history"]
            images_seen, train_seconds = state["images_seen"], state["train_seconds"]
            eval_seconds, wall_before = state.get("eval_seconds", 0.0), state.get("wall_seconds", 0.0)
            trial_steal.before = state.get("cpu_steal_ticks", None)  # None: a checkpoint from before it was kept
            _restore_rng(state["rng"], rank, world_size, device)
            if start_epoch >= profile.epochs:  # resumed after the last epoch: say again what it reported
                session.report({**state["last_metrics"], "wall_s": wall_seconds(), "restarts": restarts,
                                **({"checkpoints_skipped": "; ".join(skipped)} if skipped else {})}, None)
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
            steps, epoch_start, timer = 0, time.perf_counter(), _SteadyTimer(profile.timing_warmup_steps, device)
            epoch_steal = StealMeter()
            for step, batch in enumerate(ahead.next_epoch() if ahead else epoch_batches(epoch)):
                timer.step(step)
                batch = session.to_model_input(batch)  # uint8 views normalised on the device
                if profile.channels_last:
                    batch = channels_last_batch(batch)
                ctx = StepContext(step=schedule.last_epoch, total_steps=total_steps, epoch=epoch,
                                  world_size=world_size, rank=rank)
                with autocast:
                    loss, step_metrics = model(batch, ctx)
                if not _finite_on_every_worker(loss, world_size):  # the step's one wait for the device
                    raise NonFiniteLossError(
                        f"loss became NaN at epoch {epoch} step {step} (value {loss.item()}); "
                        "lower the learning rate or check the method's temperature"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                method.after_step(batch, ctx)
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
            metrics: dict[str, Any] = {key: value / steps for key, value in _to_host(sums).items()}
            metrics.update(
                epoch=epoch,
                lr=optimizer.param_groups[0]["lr"],
                images_seen=images_seen,
                epoch_s=time.perf_counter() - epoch_start,
                epoch_cpu_steal=epoch_steal.fraction(),  # of the machine's CPU time (src/sslab/results/cpu_steal.py)
                restarts=restarts,
                **timer.result(steps, profile.batch_size),
            )
            eval_start = time.perf_counter()
            if rank == 0 and spec.eval_data is not None:
                if epoch == profile.epochs - 1:
                    metrics.update(
                        evaluate_for_profile(backbone, _eval_arrays(spec), profile, seed=spec.seed, method=method, device=device)
                    )
                else:
                    metrics[names.KNN] = monitor_knn(backbone, _eval_arrays(spec), profile, device)
            eval_seconds += time.perf_counter() - eval_start
            history.append({k: v for k, v in metrics.items() if k != "invariance_samples"})
            metrics["provenance"] = provenance(device)  # where this epoch ran (host/<field> of the trial's row)
            metrics["train_s"] = train_seconds
            metrics["eval_s"] = eval_seconds  # per-epoch monitor kNN and the final evaluation
            metrics["device_s"] = train_seconds * devices_held
            metrics["wall_s"] = wall_seconds()
            steal_ticks = trial_steal.ticks()
            metrics["cpu_steal"] = stolen_share(steal_ticks)  # over every attempt (src/sslab/results/cpu_steal.py)
            if skipped:  # said once, with the first epoch after the resume
                metrics["checkpoints_skipped"], skipped = "; ".join(skipped), []
            state, rng = None, _rng_of_every_worker(world_size, device)
            if rank == 0:
                state = {
                    "model": method.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "epoch": epoch,
                    "history": history,
                    "images_seen": images_seen,
                    "train_seconds": train_seconds,
                    "eval_seconds": eval_seconds,
                    "wall_seconds": metrics["wall_s"],
                    "cpu_steal_ticks": steal_ticks,  # (stolen, total) over every attempt so far
                    "rng": rng,
                    "restarts": restarts,
                    "last_metrics": {**metrics, "history": list(history)},
                }
            metrics["history"] = list(history)
            session.report(metrics, state)
    except DeterministicTrialError as err:
        # no retry can mend it: report the cause as the trial's last result and end normally, so
        # neither Tune nor Ray Train starts it again (a raised error would cost max_failures + 1 attempts)
        session.report({
            FAILURE: str(err), "failed_epoch": epoch, "epoch": epoch - 1, names.KNN: math.nan, names.LOSS: math.nan,
            "images_seen": images_seen, "train_s": train_seconds, "eval_s": eval_seconds, "restarts": restarts,
            "wall_s": wall_seconds(),
            "device_s": train_seconds * devices_held,
            "history": list(history),
        }, None)
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


def channels_last_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with every image tensor (N x C x H x W) in channels_last memory; others as they are."""
    return {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for k, v in batch.items()}


def place_on_device(method: Method, profile: Profile, device: torch.device) -> Method:
    """The method on ``device``, in the profile's memory format, its backbone compiled if asked;
    before any DDP wrap, which builds its gradient buckets from the parameters' layout (NHWC
    parameters wrapped later would have every conv gradient copied across layouts each step)."""
    method.to(device)
    if profile.channels_last:  # NHWC convolutions: faster on tensor cores (and oneDNN, on CPU)
        method.to(memory_format=torch.channels_last)
    if profile.compile:  # in place: parameter and state_dict names stay those of the plain module
        method.backbone.compile()
    return method


def _set_device_numerics(profile: Profile, device: torch.device) -> None:
    """The GPU's numerics, set explicitly (PyTorch's defaults differ between convolutions, which
    run TF32, and matrix products, which do not): ``fp32`` is IEEE float32 throughout, ``tf32`` and
    ``bf16`` let the float32 convolutions and products that remain use TF32 tensor cores.
    ``cudnn_benchmark`` times the convolution algorithms on the first batch of each shape (every
    step has the same shapes here)."""
    if device.type != "cuda":
        return
    tf32 = profile.precision in ("tf32", "bf16")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = profile.cudnn_benchmark


def _rng_of_every_worker(world_size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    """Every worker's generator states, in rank order (the CPU one, and the GPU's when it trains on
    one: negatives and other per-step draws come from the device's generator)."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    if world_size == 1:
        return [mine]
    every: list[Any] = [None] * world_size
    dist.all_gather_object(every, mine)
    return every


def _restore_rng(saved, rank: int, world_size: int, device: torch.device) -> None:
    """Each worker continues its own generators from the checkpoint, so a resumed step draws what the
    uninterrupted run drew. A checkpoint from another number of workers cannot say what this rank
    would have drawn: it keeps the per-worker seed the loop set (the run goes on, no longer draw
    for draw)."""
    if isinstance(saved, torch.Tensor):  # checkpoints before per-worker states: rank 0's CPU state
        saved = [{"cpu": saved}]
    if len(saved) != world_size:
        return
    torch.set_rng_state(saved[rank]["cpu"])
    if device.type == "cuda" and "cuda" in saved[rank]:
        torch.cuda.set_rng_state(saved[rank]["cuda"], device)


def _to_host(sums: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """The epoch's metric sums as floats, every device tensor copied in one transfer."""
    on_device = [key for key, value in sums.items() if torch.is_tensor(value)]
    out = {key: float(value) for key, value in sums.items() if key not in on_device}
    if on_device:
        out.update(zip(on_device, torch.stack([sums[key] for key in on_device]).tolist()))
    return out


class _SteadyTimer:
    """Steady-state throughput of an epoch (``Profile.timing_warmup_steps`` > 0; benchmarks): the
    device is synchronised once the warm-up steps are queued and once after the last step, and the
    images in between are divided by the seconds in between. Also gives the window's wall-clock
    bounds, so that a sampler of the device's utilisation can keep the samples inside it. Off (no
    synchronisation at all) when ``warmup`` is 0."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.start = warmup, device, None

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def step(self, step: int) -> None:
        if self.warmup and step == self.warmup:
            self.start, self.wall_start = self._now(), time.time()

    def result(self, steps: int, batch_size: int) -> dict[str, float]:
        if self.start is None:
            return {}
        seconds = self._now() - self.start
        return {"steady_images_per_s": (steps - self.warmup) * batch_size / seconds,
                "steady_window_start": self.wall_start, "steady_window_end": time.time()}


def _finite_on_every_worker(loss: torch.Tensor, world_size: int) -> bool:
    """Whether the loss is finite on every data-parallel worker, so that all of them stop together
    (one stopping alone would leave the others waiting in the gradient all-reduce)."""
    finite = torch.isfinite(loss.detach()).float()
    if world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


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
