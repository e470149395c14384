"""Data parallelism, checked for every registered method with no per-method code: two workers
that train on different shards of each global batch must end every step as one model.

Two CPU processes (gloo) build the method alike (one seed), wrap it in DistributedDataParallel
with the platform's keyword arguments (``RayTrainSession.wrap``: only ``find_unused_parameters``)
and take ``STEPS`` optimisation steps the way ``platform/train.run_loop`` does: per-step draws
seeded ``seed * 1000 + rank``, ``out = model(batch, ctx)`` (a ``StepOutput``, which DDP's search for
the tensors of a forward's output traverses), backward of ``out.loss``, optimiser step, schedule
step, ``method.after_step(batch, out, ctx)``. Each worker gets its own shard of the global
batch (its own images, disjoint ``idx``). The tests compare what the workers saved.

What must be identical, bit for bit, after every step:

- every parameter (DDP averages the gradients, so every worker takes the same step);
- the optimiser's state (momentum buffers, step counts, learning rates);
- every buffer a method updates itself: the memory bank (``after_step`` all-gathers the
  rows of every worker before writing), NCE's log Z (estimated once, then averaged over
  the workers as log-mean-exp), BatchNorm's ``num_batches_tracked``.

What may differ: BatchNorm's ``running_mean`` and ``running_var``. They are statistics of
each worker's own batch (no SyncBatchNorm; see the SimCLR docstring); DDP re-broadcasts rank
0's before every forward (its default ``broadcast_buffers`` / ``forward_sync_buffers=True``,
which the platform keeps), and only rank 0 checkpoints and evaluates. So between the forward
and the next, rank 1's hold its own batch's update.

That broadcast also overwrites every *other* buffer with rank 0's before each forward: a
memory bank or a log Z that diverged in one step would look identical again by the next. The
states are therefore compared right after each ``after_step``, before the next forward, where
a divergence is still visible (a bank write kept local, a log Z left per worker).

The whole run is one spawn of two processes for every case (importing torch twice costs more
than all the training), each case saving its states under its own name.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from sslab import methods
from sslab.methods.base import DataInfo, StepContext, StepOutput
from sslab.methods.blocks.backbone import Backbone
from sslab.methods.blocks.optim import build_optimizer, build_schedule
from sslab.methods.contrastive.pirl import PIRL
from sslab.methods.views import CIFAR10, apply_views

from host_syncs import count_host_syncs

WORLD = 2
SEED = 3
#: 16 px: the smallest round size above the jigsaw's minimum of 12 (tiles of 4 px on a width-4 ResNet-10)
DATA = DataInfo(num_samples=64, num_classes=4, image_size=16)
LOCAL_BATCH = 4
GLOBAL_BATCH = LOCAL_BATCH * WORLD
STEPS = 3
STEPS_PER_EPOCH = DATA.num_samples // GLOBAL_BATCH  # as run_loop: a schedule over one epoch
#: configurations beyond each method's defaults and profile defaults (kept even if a default changes)
EXTRA = {"pirl": [{"loss_weight": 0.5, "loss_form": "nce"},  # PIRL proper: the jigsaw term, NCE with log Z
                  {"transform": "rotation"}, {"transform": "jigsaw+rotation"}],
         "moco": [{"symmetric": True, "bn_splits": 2}], "supcon": [{"loss_form": "in"}],
         "context_encoder": [{"adversarial_weight": 0.001}]}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    method: str
    overrides: tuple[tuple[str, object], ...]

    def config(self):
        return methods.get(self.method).Config.from_flat(dict(self.overrides))


def _cases() -> list[Case]:
    """Every method's default configuration, each of its profiles', the ``EXTRA`` ones and, for a
    method with a momentum encoder option, the other side of it (with one when its default has
    none, and without when it has one), without duplicates (a configuration equal to an earlier
    one is left out)."""
    cases, seen = [], set()
    for name in methods.names():
        cls = methods.get(name)
        candidates = [(name, {})]
        candidates += [(f"{name}-{profile}", dict(o)) for profile, o in sorted(cls.profile_defaults.items())]
        extra = list(EXTRA.get(name, []))
        if "encoder_momentum" in cls.Config.field_names():  # with and without a momentum encoder
            extra.append({"encoder_momentum": 0.0 if cls.Config().encoder_momentum else 0.99})
        candidates += [(f"{name}-" + ",".join(f"{k}={v}" for k, v in o.items()), o) for o in extra]
        for case_id, overrides in candidates:
            resolved = tuple(sorted(cls.Config.from_flat(overrides).flat().items()))
            if (name, resolved) not in seen:
                seen.add((name, resolved))
                cases.append(Case(case_id, name, tuple(sorted(overrides.items()))))
    return cases


CASES = _cases()
NCE_CASES = [c for c in CASES if issubclass(methods.get(c.method), PIRL) and c.config().loss_form == "nce"]


def _shard(cls, config, step: int, rank: int) -> dict[str, torch.Tensor]:
    """This worker's slice of global batch ``step``: the global batch (its images, views, labels
    and distinct ``idx``) is drawn alike on every worker, then each keeps its own rows."""
    rng = np.random.default_rng([SEED, step])
    size = DATA.image_size
    images = rng.integers(0, 256, (GLOBAL_BATCH, size, size, 3), dtype=np.uint8)
    arrays = apply_views(cls.views(config, size), images, rng, stats=CIFAR10)
    batch = {k: torch.from_numpy(v) for k, v in arrays.items()}
    batch["idx"] = torch.from_numpy(rng.choice(DATA.num_samples, GLOBAL_BATCH, replace=False))
    batch["label"] = torch.from_numpy(rng.integers(0, DATA.num_classes, GLOBAL_BATCH))
    rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
    return {k: v[rows] for k, v in batch.items()}


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def _log_z_estimates(replica: PIRL, batch, negatives: list[torch.Tensor]) -> dict[str, float]:
    """This worker's own first-batch estimate of log Z per NCE term, recomputed from scratch on
    a copy of the model before the step: s = f · m for the positive row m_I and the negative
    rows the step drew (recorded, as only the draw itself cannot be redone independently), then
    log Z = log(|D| · mean exp(s / τ)) (NPID eq. 4-5), in float64."""
    config = replica.config
    embeddings = {"image": replica.embed_image(batch["image"])}
    if config.loss_weight > 0:
        embeddings.update(replica.transform_embeddings(batch))
    bank = replica.memory_bank.bank.double()
    idx = batch["idx"].long()
    out = {}
    for i, (term, emb) in enumerate(embeddings.items()):
        drawn = negatives[min(i, len(negatives) - 1)]  # PIRL draws once per step for both terms
        emb = emb.double()
        pos = (emb * bank[idx]).sum(dim=1, keepdim=True)
        neg = torch.einsum("bd,bnd->bn", emb, bank[drawn])
        logits = torch.cat([pos, neg], dim=1).reshape(-1) / config.temperature
        out[term] = math.log(DATA.num_samples) + (torch.logsumexp(logits, 0) - math.log(len(logits))).item()
    return out


def _train(case: Case, rank: int) -> dict:
    """``STEPS`` steps of ``case`` on this worker, as run_loop takes them; the states after each."""
    cls = methods.get(case.method)
    config = case.config()
    torch.manual_seed(SEED)  # TrialRun.build: the same initial model on every worker
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. PIRL capping N at the tiny bank's size
        method = cls.build(config, Backbone("resnet10", cifar_stem=True, width=4), DATA)
    replica = copy.deepcopy(method)  # the model before any step, for the log Z recompute
    initial = _state(method)
    model = DistributedDataParallel(method, find_unused_parameters=bool(method.unused_parameters()))
    torch.manual_seed(SEED * 1000 + rank)  # run_loop: negatives and other per-step draws differ per worker
    optimizer = build_optimizer(method.parameter_groups(), config.optim, global_batch=GLOBAL_BATCH)
    schedule = build_schedule(optimizer, STEPS_PER_EPOCH, config.optim.warmup_epochs * STEPS_PER_EPOCH)

    negatives: list[torch.Tensor] = []
    bank = getattr(method, "memory_bank", None)
    if bank is not None:  # record the negatives each step draws (the draw is unchanged)
        draw = bank.sample_negatives

        def recording(*args, **kwargs):
            negatives.append(draw(*args, **kwargs))
            return negatives[-1]

        bank.sample_negatives = recording

    bn_running = sorted(f"{name}.{stat}" for name, m in method.named_modules()
                        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
                        for stat in ("running_mean", "running_var"))
    result = {"initial": initial, "bn_running": bn_running, "states": [], "optimizer": [], "losses": [], "syncs": []}
    method.train()
    for step in range(STEPS):
        batch = _shard(cls, config, step, rank)
        negatives.clear()
        ctx = StepContext(step=schedule.last_epoch, total_steps=STEPS_PER_EPOCH, epoch=0,
                          world_size=WORLD, rank=rank)
        with count_host_syncs() as syncs:  # what would make a GPU wait for the host, per step
            out = model(batch, ctx)
            loss = out.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            method.after_step(batch, out, ctx)
        assert isinstance(out, StepOutput), f"{case.id}: DDP returned {type(out).__name__}, not the StepOutput"
        assert torch.isfinite(loss), f"{case.id}: loss {loss.item()} at step {step} on rank {rank}"
        result["syncs"].append(dict(syncs))
        result["states"].append(_state(method))
        result["optimizer"].append(copy.deepcopy(optimizer.state_dict()))
        result["losses"].append(loss.item())
        result.setdefault("views", []).append({k: v for k, v in batch.items() if v.is_floating_point()})
        if step == 0 and isinstance(method, PIRL) and config.loss_form == "nce":
            result["estimates"] = _log_z_estimates(replica, batch, list(negatives))
            result["log_z"] = {term: getattr(method, f"log_z_{term}").item() for term in result["estimates"]}
    return result


def _worker(rank: int, world: int, init_file: str, cases: list[Case], out: str) -> None:
    torch.set_num_threads(1)
    # a timeout, so that a case that fails on one worker cannot leave the other waiting for ever
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        for case in cases:
            torch.save(_train(case, rank), f"{out}/{case.id}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{case id: [rank 0's result, rank 1's result]}."""
    out = tmp_path_factory.mktemp("data_parallel")
    mp.spawn(_worker, args=(WORLD, str(out / "rendezvous"), CASES, str(out)), nprocs=WORLD, join=True)
    return {c.id: [torch.load(out / f"{c.id}-rank{r}.pt", weights_only=False) for r in range(WORLD)] for c in CASES}


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same dtype, shape and bytes (NaN equal to the same NaN: an unset log Z; 0.0 != -0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))


def _differences(a, b, path: str = "") -> list[str]:
    """Paths where two nested (dict / list / tensor / plain value) structures differ."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        same = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and _bitwise_equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for k in a for d in _differences(a[k], b[k], f"{path}.{k}" if path else str(k))]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
    return [] if same else [path]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_worker_ends_every_step_with_the_same_model_and_optimiser(trained, case):
    workers = trained[case.id]
    first = workers[0]
    # not vacuous: the workers saw different images (a loss over the gathered global batch may
    # still be the same number on both), and training moved the model
    assert all(not torch.equal(v, workers[1]["views"][0][k]) for k, v in first["views"][0].items()), \
        f"{case.id}: both workers saw the same views on step 0"
    moved = [k for k, v in first["states"][-1].items()
             if v.is_floating_point() and not torch.equal(v, first["initial"][k])]
    assert moved, f"{case.id}: {STEPS} steps changed nothing"
    allowed = set(first["bn_running"])  # per-worker batch statistics (module docstring)
    assert allowed <= first["initial"].keys()
    for other in workers[1:]:
        for step in range(STEPS):
            state, theirs = first["states"][step], other["states"][step]
            assert state.keys() == theirs.keys()
            differ = [k for k in state if k not in allowed and not _bitwise_equal(state[k], theirs[k])]
            assert not differ, f"{case.id}: after step {step} the workers' state differs in {differ}"
            differ = _differences(first["optimizer"][step], other["optimizer"][step])
            assert not differ, f"{case.id}: after step {step} the workers' optimiser state differs in {differ}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_no_step_makes_the_host_wait_for_the_device(trained, case):
    """Under DDP, a method's training_step and after_step (with backward and the optimiser step)
    ask the device for nothing: no .item(), bool(tensor), torch.unique, boolean-mask indexing
    (``tests/host_syncs.py``). A one-off check on the first step is allowed (NCE asks whether
    each of its log Z is set yet, once per run and term); the training loop adds its own one check
    per step."""
    for rank, worker in enumerate(trained[case.id]):
        first, *rest = worker["syncs"]
        allowed = max(2, len(worker.get("log_z", {})))
        assert sum(first.values()) <= allowed, f"{case.id}: rank {rank}'s first step synchronised {first}"
        for step, syncs in enumerate(rest, start=1):
            assert not syncs, f"{case.id}: rank {rank}'s step {step} made the host wait for the device: {syncs}"


@pytest.mark.parametrize("case", NCE_CASES, ids=[c.id for c in NCE_CASES])
def test_nce_log_z_is_the_log_mean_exp_of_every_workers_first_batch_estimate(trained, case):
    """Z ≈ |D| · mean exp(s / τ) over the first global batch: with equal shards, the mean of the
    workers' own estimates Z_r, so log Z = log(mean_r exp(log Z_r)) on every worker."""
    workers = trained[case.id]
    for term in workers[0]["estimates"]:
        estimates = torch.tensor([w["estimates"][term] for w in workers], dtype=torch.float64)
        expected = (torch.logsumexp(estimates, 0) - math.log(len(workers))).item()
        # not vacuous: each worker's own estimate is far from the shared one
        assert (estimates - expected).abs().min() > 1e-4, f"{case.id}: the workers' {term} estimates barely differ"
        for rank, w in enumerate(workers):
            assert w["log_z"][term] == pytest.approx(expected, rel=1e-6, abs=1e-5), (
                f"{case.id}: rank {rank}'s log_z_{term} {w['log_z'][term]} is not the log-mean-exp {expected} "
                f"of the workers' estimates {estimates.tolist()}")
