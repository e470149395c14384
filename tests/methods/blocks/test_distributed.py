"""Data-parallel helpers: identity with one worker, the right values and gradients with two.

The two-worker checks run once per module in two CPU processes joined by gloo; each worker
saves what it saw and the tests compare it with the closed forms.
"""

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from global_batch import free_port
from sslab.methods.blocks.distributed import (
    all_gather_no_grad,
    all_gather_with_grad,
    log_mean_exp_over_workers,
    mean_over_workers,
    rank,
    world_size,
)

WORLD = 2


def local_rows(r: int) -> torch.Tensor:
    """Worker r's (3, 2) input: distinct values on every worker."""
    return torch.arange(6, dtype=torch.float64).reshape(3, 2) + 100.0 * r


def loss_weights(r: int) -> torch.Tensor:
    """Worker r's weights on the gathered (6, 2) rows in its loss Σ w·x²."""
    return torch.arange(12, dtype=torch.float64).reshape(6, 2) * (r + 1) - 5.0


def log_values(r: int) -> torch.Tensor:
    """Worker r's log-values; ±1000 would overflow a naive exp."""
    return torch.tensor([1000.0, -1000.0, 0.0], dtype=torch.float64) + r * torch.tensor([1.0, 2.0, -3.0])


def _worker(r: int, world: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=r, world_size=world)
    try:
        x = local_rows(r).requires_grad_(True)
        gathered = all_gather_with_grad(x)
        (loss_weights(r) * gathered.pow(2)).sum().backward()
        no_grad = all_gather_no_grad(x)
        mean = mean_over_workers(x * 2)
        log_mean = log_mean_exp_over_workers(log_values(r).requires_grad_(True))
        torch.save({
            "world_size": world_size(), "rank": rank(),
            "gathered": gathered.detach(), "gathered_requires_grad": gathered.requires_grad, "grad": x.grad,
            "no_grad": no_grad, "no_grad_requires_grad": no_grad.requires_grad,
            "mean": mean, "mean_requires_grad": mean.requires_grad,
            "log_mean": log_mean, "log_mean_requires_grad": log_mean.requires_grad,
        }, f"{out}/rank{r}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_workers")
    mp.spawn(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_world_size_and_rank(two_workers):
    assert [res["world_size"] for res in two_workers] == [WORLD, WORLD]
    assert [res["rank"] for res in two_workers] == [0, 1]


def test_all_gather_with_grad_concatenates_in_rank_order(two_workers):
    expected = torch.cat([local_rows(r) for r in range(WORLD)])
    for res in two_workers:
        torch.testing.assert_close(res["gathered"], expected, rtol=0, atol=0)
        assert res["gathered_requires_grad"]


def test_all_gather_with_grad_sends_every_workers_gradient_to_the_owner_of_the_rows(two_workers):
    # worker w's loss Σ W_w ⊙ X² (X the gathered rows) has gradient 2 W_w ⊙ X; the rows of
    # worker r receive the sum over w of that gradient restricted to r's rows.
    gathered = torch.cat([local_rows(r) for r in range(WORLD)])
    total = sum(2 * loss_weights(w) * gathered for w in range(WORLD))
    for r, res in enumerate(two_workers):
        torch.testing.assert_close(res["grad"], total[3 * r: 3 * (r + 1)])


def test_all_gather_no_grad_values_without_graph(two_workers):
    expected = torch.cat([local_rows(r) for r in range(WORLD)])
    for res in two_workers:
        torch.testing.assert_close(res["no_grad"], expected, rtol=0, atol=0)
        assert not res["no_grad_requires_grad"]


def test_mean_over_workers_is_the_same_mean_everywhere_and_detached(two_workers):
    expected = sum(2 * local_rows(r) for r in range(WORLD)) / WORLD
    for res in two_workers:
        torch.testing.assert_close(res["mean"], expected)
        assert not res["mean_requires_grad"]


def test_log_mean_exp_over_workers_is_stable_and_detached(two_workers):
    values = torch.stack([log_values(r) for r in range(WORLD)])
    # log((e^a + e^b) / 2) written out as a + log((1 + e^(b − a)) / 2) with a the larger
    expected = []
    for a, b in zip(values.max(0).values.tolist(), values.min(0).values.tolist()):
        expected.append(a + math.log((1 + math.exp(b - a)) / 2))
    for res in two_workers:
        torch.testing.assert_close(res["log_mean"], torch.tensor(expected, dtype=torch.float64))
        assert torch.isfinite(res["log_mean"]).all()
        assert not res["log_mean_requires_grad"]


# --- one worker (no process group): every helper is the identity ------------------------------


def test_without_a_process_group_every_helper_is_the_identity():
    assert not dist.is_initialized()
    assert world_size() == 1 and rank() == 0
    x = torch.randn(4, 3, requires_grad=True)
    gathered = all_gather_with_grad(x)
    assert gathered is x  # the graph and the gradient are x's own
    for helper in (all_gather_no_grad, mean_over_workers, log_mean_exp_over_workers):
        out = helper(x)
        torch.testing.assert_close(out, x.detach(), rtol=0, atol=0)
        out.zero_()  # a copy, as with many workers: writing into it leaves x alone
        assert x.abs().sum() > 0, helper.__name__


def test_without_a_process_group_no_grad_helpers_return_detached_values_as_with_many():
    # With several workers these helpers cannot carry a gradient; with one they must not
    # either, or a method would train differently on one worker than on many.
    x = torch.randn(4, 3, requires_grad=True)
    for helper in (all_gather_no_grad, mean_over_workers, log_mean_exp_over_workers):
        assert not helper(x).requires_grad, helper.__name__
