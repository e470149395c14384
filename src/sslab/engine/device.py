"""The training device's side of the loop: numerics, memory format, per-worker random generators,
metrics read back in one transfer, a steady-state timer, and the all-workers finite-loss check."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist

from sslab.methods.base import Method
from sslab.plan.profiles import Profile


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


def set_device_numerics(profile: Profile, device: torch.device) -> None:
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


def rng_of_every_worker(world_size: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
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


def restore_rng(saved, rank: int, world_size: int, device: torch.device) -> None:
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


def to_host(sums: dict[str, torch.Tensor | float]) -> dict[str, float]:
    """The epoch's metric sums as floats, every device tensor copied in one transfer."""
    on_device = [key for key, value in sums.items() if torch.is_tensor(value)]
    out = {key: float(value) for key, value in sums.items() if key not in on_device}
    if on_device:
        out.update(zip(on_device, torch.stack([sums[key] for key in on_device]).tolist()))
    return out


class SteadyTimer:
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


def finite_on_every_worker(loss: torch.Tensor, world_size: int) -> bool:
    """Whether the loss is finite on every data-parallel worker, so that all of them stop together
    (one stopping alone would leave the others waiting in the gradient all-reduce)."""
    finite = torch.isfinite(loss.detach()).float()
    if world_size > 1:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())
