"""One check for every loss that spans the global batch: two data-parallel workers, each holding
half the rows, must give the loss and the gradients of one worker holding all of them.

    from global_batch import assert_two_workers_match_one
    assert_two_workers_match_one(nt_xent, {"z1": z1, "z2": z2}, tmp_path)

``loss_fn(**shard)`` is called on every worker with its rows of each input (dim 0 split in two,
in rank order; integer inputs such as labels are split alike but take no gradient) inside a gloo
process group, and once without a process group on the whole batch. It must be picklable (a
module-level function, or a ``functools.partial`` of one), as the workers are spawned.

What must hold (DDP averages the parameter gradients over the workers):

- the mean of the workers' losses equals the one worker's loss (and, with ``same_value`` for a
  loss computed wholly from gathered rows, every worker's loss equals it);
- worker r's gradient on its rows, divided by the number of workers, equals the one worker's
  gradient on the same rows: then every parameter upstream gets the same averaged gradient.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def free_port() -> int:
    """A free TCP port on localhost, for a gloo rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    rows = len(x) // world
    return x[rank * rows:(rank + 1) * rows]


def _loss_and_grads(loss_fn: Callable, inputs: dict[str, torch.Tensor]) -> tuple[float, dict[str, torch.Tensor]]:
    leaves = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    loss = loss_fn(**leaves)
    loss.backward()
    grads = {k: (v.grad if v.grad is not None else torch.zeros_like(v))
             for k, v in leaves.items() if v.is_floating_point()}
    return float(loss.detach()), grads


def _worker(rank: int, world: int, port: int, loss_fn: Callable, inputs: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        shard = {k: _shard(v, rank, world) for k, v in inputs.items()}
        torch.save(_loss_and_grads(loss_fn, shard), f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def assert_two_workers_match_one(loss_fn: Callable, inputs: dict[str, torch.Tensor], tmp_path, *,
                                 same_value: bool = True, atol: float = 1e-6) -> None:
    """Raises AssertionError naming the input whose gradient (or the loss) differs."""
    for name, x in inputs.items():
        assert len(x) % WORLD == 0, f"{name}: {len(x)} rows do not split over {WORLD} workers"
    single_loss, single_grads = _loss_and_grads(loss_fn, inputs)
    mp.spawn(_worker, args=(WORLD, free_port(), loss_fn, inputs, str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    losses = [loss for loss, _ in results]
    assert abs(sum(losses) / WORLD - single_loss) <= atol * max(1.0, abs(single_loss)), \
        f"mean loss over workers {losses} != one worker's {single_loss}"
    if same_value:
        for r, loss in enumerate(losses):
            assert abs(loss - single_loss) <= atol * max(1.0, abs(single_loss)), \
                f"worker {r}'s loss {loss} != one worker's {single_loss} on the global batch"
    for r, (_, grads) in enumerate(results):
        for name, grad in grads.items():
            expected = _shard(single_grads[name], r, WORLD)
            assert torch.allclose(grad / WORLD, expected, atol=atol, rtol=1e-5), (
                f"worker {r}'s gradient on {name} / {WORLD} differs from one worker's by "
                f"{(grad / WORLD - expected).abs().max().item():.3g}")
