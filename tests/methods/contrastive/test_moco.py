"""MoCo v2: InfoNCE against the queue written out by hand, the queue's FIFO order across workers and
steps, a resume from a checkpoint, shuffle-BN shards, and the configurations it refuses."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from sslab.methods.base import StepContext, StepOutput
from sslab.methods.blocks.optim import build_optimizer
from sslab.methods.contrastive.moco import MoCo, MoCoConfig

from host_syncs import count_host_syncs
from method_testing import build_method, step_context, train_steps, view_batch

CTX = step_context(0, total=10)


def _moco(seed: int = 0, **config) -> MoCo:
    return build_method(MoCo, seed=seed, **{"projection_dim": 8, "queue_size": 32, **config})


def _info_nce_by_hand(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> float:
    """mean_i −log exp(q_i·k_i/τ) / (exp(q_i·k_i/τ) + Σ_j exp(q_i·queue_j/τ)), in float64 Python."""
    q, k, queue = q.double(), k.double(), queue.double()
    terms = []
    for i in range(len(q)):
        pos = float(q[i] @ k[i]) / tau
        negs = [float(q[i] @ row) / tau for row in queue]
        terms.append(-pos + math.log(math.exp(pos) + sum(math.exp(s) for s in negs)))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("symmetric", [False, True])
def test_loss_is_infonce_against_the_queue_and_the_keys_are_enqueued_after_it(symmetric):
    method = _moco(temperature=0.3, encoder_momentum=0.99, symmetric=symmetric)
    with torch.no_grad():  # a key encoder apart from the query encoder, and a queue of known rows
        for p in method.target.ema.parameters():
            p.add_(0.05 * torch.randn_like(p))
    batch = view_batch(MoCo.views(method.config, 16), 8, size=16)
    queue = method.queue.clone()
    out = method.training_step(batch, CTX)
    loss, metrics = out.loss, out.metrics
    with torch.no_grad():
        q0, q1 = (F.normalize(method.project(batch[v]), dim=1) for v in ("view_0", "view_1"))
        k0, k1 = (F.normalize(method.target.ema(batch[v]), dim=1) for v in ("view_0", "view_1"))
    expected = _info_nce_by_hand(q0, k1, queue, 0.3)
    if symmetric:
        expected = 0.5 * (expected + _info_nce_by_hand(q1, k0, queue, 0.3))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(loss.item())
    torch.testing.assert_close(method.queue, queue)  # untouched until after_step

    loss.backward()
    method.after_step(batch, out, CTX)
    keys = torch.cat([k0, k1]) if symmetric else k1  # view 0's keys, then view 1's
    n = len(keys)
    torch.testing.assert_close(method.queue[:n], keys)
    torch.testing.assert_close(method.queue[n:], queue[n:])
    assert method.queue_ptr.item() == n
    assert method.kept_in_sync() == [method.queue, method.queue_ptr, method.target]


def test_the_queue_is_a_fifo_that_wraps_around():
    method = _moco(queue_size=12, projection_dim=2)
    initial = method.queue.clone()
    steps = [torch.full((1, 4, 2), float(s)) for s in range(4)]  # 1 view x 4 keys per step
    method.enqueue(steps[0])
    method.enqueue(steps[1])
    assert method.queue_ptr.item() == 8
    assert torch.equal(method.queue[:8, 0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert torch.equal(method.queue[8:], initial[8:])  # the oldest entries, not yet replaced
    method.enqueue(steps[2])
    method.enqueue(steps[3])  # replaces the oldest, step 0's keys
    assert method.queue_ptr.item() == 4
    assert torch.equal(method.queue[:, 0], torch.tensor([3.0] * 4 + [1.0] * 4 + [2.0] * 4))

    odd = _moco(queue_size=10, projection_dim=1)  # not reachable through training_step (refused there)
    odd.queue_ptr.fill_(8)
    odd.enqueue(torch.arange(4.0).reshape(1, 4, 1))  # positions 8, 9, 0, 1
    assert odd.queue[[8, 9, 0, 1], 0].tolist() == [0.0, 1.0, 2.0, 3.0] and odd.queue_ptr.item() == 2


def _enqueue_worker(rank: int, world: int, init_file: str, steps: dict, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for name, keys in steps.items():
            method = _moco(queue_size=24, projection_dim=3, symmetric=name == "symmetric")
            rows = keys.shape[2] // world
            for step_keys in keys:  # views x global batch x d per step; this worker holds its rows
                method.enqueue(step_keys[:, rank * rows:(rank + 1) * rows])
            torch.save((method.queue, method.queue_ptr), f"{out}/{name}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_workers_fill_the_queue_with_every_workers_keys_as_one_worker_on_the_global_batch(tmp_path):
    torch.manual_seed(1)
    # 4 steps of a global batch of 4 (2 per worker); 24 rows: the asymmetric queue wraps after 6
    # steps, the symmetric one (8 keys per step) after 3
    steps = {"asymmetric": torch.randn(4, 1, 4, 3), "symmetric": torch.randn(4, 2, 4, 3)}
    mp.spawn(_enqueue_worker, args=(2, str(tmp_path / "rendezvous"), steps, str(tmp_path)), nprocs=2, join=True)
    for name, keys in steps.items():
        single = _moco(queue_size=24, projection_dim=3, symmetric=name == "symmetric")
        for step_keys in keys:
            single.enqueue(step_keys)
        workers = [torch.load(tmp_path / f"{name}-rank{r}.pt") for r in range(2)]
        for queue, ptr in workers:
            assert torch.equal(queue, single.queue) and torch.equal(ptr, single.queue_ptr), name
    # and the order is view 0's keys of the whole global batch, then view 1's
    last = steps["symmetric"][3]
    torch.testing.assert_close(single.queue[0:8], torch.cat([last[0], last[1]]))


def _step(method: MoCo, optimizer, batch, step: int) -> torch.Tensor:
    (loss,) = train_steps(method, optimizer, [(batch, step_context(step, total=10))])
    return loss


def test_a_resumed_run_takes_the_same_next_step_bit_for_bit():
    config = dict(queue_size=16, encoder_momentum=0.9, symmetric=True, bn_splits=2)
    first = _moco(**config)
    optimizer = build_optimizer(first.parameter_groups(), first.config.optim, global_batch=4)
    for step in range(3):  # 8 keys per step into 16 rows: the queue has wrapped
        _step(first, optimizer, view_batch(MoCo.views(first.config, 16), 4, size=16, seed=step), step)
    saved = io.BytesIO()
    torch.save({"method": first.state_dict(), "optimizer": optimizer.state_dict()}, saved)

    second = _moco(seed=5, **config)  # other weights and queue, then the checkpoint
    second_optimizer = build_optimizer(second.parameter_groups(), second.config.optim, global_batch=4)
    saved.seek(0)
    state = torch.load(saved)
    second.load_state_dict(state["method"])
    second_optimizer.load_state_dict(state["optimizer"])

    batch = view_batch(MoCo.views(first.config, 16), 4, size=16, seed=3)
    torch.manual_seed(7)  # the shuffle-BN permutation
    expected = _step(first, optimizer, batch, 3)
    torch.manual_seed(7)
    got = _step(second, second_optimizer, batch, 3)
    assert torch.equal(got, expected)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name  # queue, pointer, key encoder and the online weights
    assert first.queue_ptr.item() == 0


def test_shuffle_bn_normalises_queries_in_shards_and_keys_in_shards_of_a_permutation():
    method = _moco(encoder_momentum=0.99, bn_splits=2)
    batch = view_batch(MoCo.views(method.config, 16), 8, size=16)
    x0, x1 = batch["view_0"], batch["view_1"]
    torch.manual_seed(3)
    out = method.training_step(batch, CTX)
    loss, keys = out.loss, out.carry[0]
    torch.manual_seed(3)
    order = torch.randperm(8)
    with torch.no_grad():
        q = F.normalize(torch.cat([method.project(x0[:4]), method.project(x0[4:])]), dim=1)
        shuffled = torch.cat([method.target.ema(x1[order[:4]]), method.target.ema(x1[order[4:]])])
        expected_keys = torch.empty_like(shuffled)
        expected_keys[order] = F.normalize(shuffled, dim=1)
        whole = F.normalize(method.target.ema(x1), dim=1)
    torch.testing.assert_close(keys, expected_keys)
    assert not torch.allclose(keys, whole, atol=1e-4)  # the shards' statistics differ from the batch's
    assert loss.item() == pytest.approx(_info_nce_by_hand(q, keys, method.queue, 0.2), rel=1e-5)


def test_a_symmetric_shuffled_step_never_waits_for_the_device():
    method = _moco(symmetric=True, bn_splits=2)
    batch = view_batch(MoCo.views(method.config, 16), 8, size=16)
    with count_host_syncs() as syncs:
        out = method.training_step(batch, CTX)
        out.loss.backward()
        method.after_step(batch, out, CTX)
    assert sum(syncs.values()) == 0, dict(syncs)


def test_without_a_momentum_encoder_the_keys_are_the_online_network_under_stop_gradient():
    method = _moco(encoder_momentum=0.0)
    assert method.target is None and not any(k.startswith("target.") for k in method.state_dict())
    assert method.kept_in_sync() == [method.queue, method.queue_ptr]
    batch = view_batch(MoCo.views(method.config, 16), 8, size=16)
    out = method.training_step(batch, CTX)
    loss = out.loss
    loss.backward()
    got = {n: p.grad.clone() for n, p in method.named_parameters()}

    method.zero_grad()
    q = F.normalize(method.project(batch["view_0"]), dim=1)
    k = F.normalize(method.project(batch["view_1"]), dim=1).detach()
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ method.queue.T], dim=1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for name, p in method.named_parameters():
        torch.testing.assert_close(got[name], p.grad, msg=name)
    method.after_step(batch, out, CTX)
    torch.testing.assert_close(method.queue[:8], k)


def test_a_queue_the_keys_of_a_step_cannot_tile_is_refused_at_the_first_step_naming_the_fix():
    batch = view_batch(MoCo.views(MoCoConfig(), 16), 8, size=16)
    with pytest.raises(ValueError, match=r"queue_size \(K\) = 100 .* 8 keys .* world size 1 .* multiple of 8"):
        _moco(queue_size=100).training_step(batch, CTX)
    two_workers = StepContext(step=0, total_steps=10, epoch=0, world_size=2)
    with pytest.raises(ValueError, match=r"32 keys enqueued per step .* world size 2 = 16, x 2 views"):
        _moco(queue_size=48, symmetric=True).training_step(batch, two_workers)
    _moco(queue_size=64, symmetric=True).training_step(batch, two_workers)  # 64 = 2 x 32: fine
    with pytest.raises(ValueError, match=r"bn_splits \(S\) = 3"):
        _moco(bn_splits=3).training_step(batch, CTX)
    with pytest.raises(ValueError, match="queue_size"):
        MoCoConfig(queue_size=0)
    with pytest.raises(RuntimeError, match="training_step"):  # the step's keys are not in the output
        _moco().after_step(batch, StepOutput(torch.zeros(()), {}), CTX)


def test_head_views_and_optimiser_follow_moco_v2():
    method = _moco(projection_dim=128, queue_size=4096)
    config = method.config
    assert [type(m).__name__ for m in method.projector] == ["Linear", "ReLU", "Linear"]  # no BN (v2 --mlp)
    assert method.projector[0].out_features == method.backbone.out_dim
    assert (config.temperature, config.encoder_momentum, config.encoder_momentum_schedule) == (0.2, 0.999, "constant")
    assert (config.optim.optimizer, config.optim.base_lr, config.optim.weight_decay, config.optim.warmup_epochs) == ("sgd", 0.03, 1e-4, 0)
    assert method.queue.shape == (4096, 128)
    torch.testing.assert_close(method.queue.norm(dim=1), torch.ones(4096))
    (view,) = MoCo.views(config, 32)
    assert view.keys() == ("view_0", "view_1")
    assert (view.scale, view.jitter, view.jitter_prob, view.grayscale) == ((0.2, 1.0), (0.4, 0.4, 0.4, 0.1), 0.8, 0.2)
    a, b = method.eval().invariance_pair(view_batch(MoCo.invariance_views(config, 32), 4, train=False))
    torch.testing.assert_close(a.norm(dim=1), torch.ones(len(a)))
    assert (a - b).norm(dim=1).min() > 0

