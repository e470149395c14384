"""Data-parallel helpers for losses and state that span every worker (torch.distributed).

Outside a process group (one worker, tests, evaluation) every helper is the identity, so a
method reads the same with one worker or many. The helpers that cannot carry a gradient
across workers (``all_gather_no_grad``, ``mean_over_workers``, ``log_mean_exp_over_workers``)
return a detached copy with one worker too, so a method never trains differently on one
worker than on many, and writing into the result never touches the input.

- ``all_gather_with_grad``: the global batch for a contrastive loss whose negatives come from
  every worker (SimCLR's cross-replica concat); the backward pass sends each worker the
  gradient of its own rows, summed over every worker's loss (all-reduce), as solo-learn's
  and lightly's ``GatherLayer`` do.
- ``all_gather_no_grad``: the same without a graph, for memory-bank writes and queues.
- ``mean_over_workers``: the same value on every worker (averaged statistics, a log Z).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist


def world_size() -> int:
    """Workers in the default process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This worker's rank in the default process group (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward all-reduces the incoming gradient and keeps this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)  # every worker's loss depends on every worker's rows
        return stacked[dist.get_rank()]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` from every worker, concatenated in rank order (dim 0), differentiable.

    The gradient that reaches this worker's ``x`` is the sum over all workers of d loss_w / d x,
    so with DDP's gradient averaging the update equals one worker's on the global batch.
    """
    if world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """The rows of ``x`` from every worker, concatenated in rank order, without gradient (a new tensor)."""
    if world_size() == 1:
        return x.detach().clone()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def mean_over_workers(x: torch.Tensor) -> torch.Tensor:
    """The element-wise mean of ``x`` over workers (a new tensor, detached: no gradient flows)."""
    if world_size() == 1:
        return x.detach().clone()
    total = x.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def log_mean_exp_over_workers(log_x: torch.Tensor) -> torch.Tensor:
    """log of the workers' mean of exp(log_x), computed stably (e.g. one log Z for every replica).

    A new tensor, detached: no gradient flows.
    """
    if world_size() == 1:
        return log_x.detach().clone()
    parts = [torch.empty_like(log_x) for _ in range(world_size())]
    dist.all_gather(parts, log_x.detach().contiguous())
    return torch.logsumexp(torch.stack(parts), dim=0) - math.log(len(parts))


@torch.no_grad()
def broadcast_from_first_worker_(x: torch.Tensor) -> torch.Tensor:
    """``x``, in place, set to rank 0's value on every worker (so that state every replica computed
    alike is also bitwise alike, whatever a GPU's non-deterministic kernels did)."""
    if world_size() > 1:
        dist.broadcast(x, src=0)
    return x
