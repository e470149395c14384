"""The generic worker loop: in-process (num_workers=0) and with 2 real Train workers."""

import math

import numpy as np
import pytest
import ray
import torch

from sslab.engine.augment import EpochViews, with_views
from sslab.plan.profiles import Profile
from sslab.methods.base import DataInfo
from sslab.methods.views import CIFAR10
from sslab.engine.errors import root_cause
from sslab.engine.sessions import load_checkpoint as _load_checkpoint
from sslab.checkpoints import EpochCheckpoints, TrainingState
from sslab.engine.sessions import InProcessSession
from sslab.engine.train import EpochReport, FailureReport, TrialRun, make_trainer, run_loop
from sslab.results import metrics as names

TINY = Profile(
    name="tiny", width=8, epochs=2, batch_size=16, num_workers=0,
    knn_k=5, probe_epochs=2, invariance_samples=8, monitor_images=32,
    method_defaults={"base_lr": 0.05, "lr_scaling": "none", "warmup_epochs": 0},
)
DATA = DataInfo(num_samples=64, num_classes=4, image_size=32)


@pytest.fixture(scope="module")
def ray_local():
    from sslab.engine.placement import TRIAL_RESOURCE

    ray.init(num_cpus=4, resources={TRIAL_RESOURCE: 10}, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n) % 4
    ds = ray.data.from_items([{"idx": i, "image": images[i], "label": labels[i]} for i in range(n)])
    eval_data = {"train_images": images, "train_labels": labels, "test_images": images[:24], "test_labels": labels[:24],
                 "stats": CIFAR10}
    return ds, eval_data


def _fit(tmp_path, profile, method_config=None, name="t"):
    ds, eval_data = _data()
    config = {"num_negatives": 16, **profile.method_defaults, **(method_config or {})}
    spec = TrialRun("pirl", config, profile, seed=0, data=DATA, eval_data=eval_data)
    views = spec.method_class.views(spec.config(), 32)
    trainer = make_trainer(spec, EpochViews(ds, views, CIFAR10, spec.seed), name=name, storage_path=str(tmp_path))
    return trainer.fit(), spec


def test_root_cause_digs_the_nan_message_out_of_ray_tracebacks():
    text = "TrainingFailedError: ...\nTraceback...\nsslab.engine.train.NonFiniteLossError: loss became NaN at epoch 3 step 7 (value nan); lower"
    assert root_cause(text).startswith("loss became NaN at epoch 3 step 7")
    assert root_cause("Traceback\n  File x\nValueError: bad thing") == "ValueError: bad thing"


def test_in_process_loop_trains_evaluates_and_checkpoints_method_buffers(ray_local, tmp_path):
    result, spec = _fit(tmp_path, TINY)
    metrics = result.metrics
    assert metrics["epoch"] == 1 and metrics["images_seen"] == 2 * (64 // 16) * 16
    assert {"knn_top1", "probe_res5_top1", "probe_conv1_top1", "invariance_l2_mean"} <= set(metrics)
    assert len(metrics["invariance_samples"]) == 8 and len(metrics["history"]) == 2
    assert all(math.isfinite(h["loss"]) for h in metrics["history"])
    # the trial's own work, apart from start-up: epochs and evaluation timed separately
    assert metrics["train_s"] > 0 and metrics["eval_s"] > 0
    state = _load_checkpoint(result.checkpoint)
    _, fresh = spec.build()
    bank_keys = [k for k in state["model"] if "bank" in k]
    assert bank_keys, "the memory bank must be a persistent buffer in the checkpoint"
    moved = [not torch.allclose(state["model"][k], fresh.state_dict()[k]) for k in bank_keys]
    assert any(moved), "training must have written the memory bank"
    assert state["epoch"] == 1 and len(state["history"]) == 2


def test_nan_loss_ends_the_trial_at_once_naming_epoch_and_step(ray_local, tmp_path):
    """A learning rate of 1e30 makes the second step's loss NaN: the trial reports the cause as its
    last result instead of raising, so neither Ray Train nor Tune retries it."""
    result, _ = _fit(tmp_path, TINY, {"base_lr": 1e30}, name="nan")
    assert result.metrics["failure"].startswith("loss became NaN at epoch 0 step 1")
    assert result.metrics["failed_epoch"] == 0 and result.checkpoint is None


def test_two_workers_stop_together_when_one_loss_is_not_finite(ray_local, tmp_path):
    """Both Train workers agree that the loss is not finite and end normally: no error, so Ray
    Train starts no retry; a worker stopping alone would leave the other in the all-reduce."""
    profile = TINY.with_overrides(num_workers=2, epochs=2, batch_size=8)
    result, _ = _fit(tmp_path, profile, {"base_lr": 1e30}, name="nan2")
    assert result.error is None and result.checkpoint is None  # (the study test reads the reported cause)


class _Crash(Exception):
    pass


def _in_process(tmp_path, profile, crash_after_epoch=None, on_report=lambda metrics: None):
    """Run the loop in this process (as a Tune trial does) with checkpoints under tmp_path; the
    report function records every epoch, calls ``on_report`` and may crash the 'process' once an
    epoch is reported."""
    ds, eval_data = _data()
    spec = TrialRun("pirl", {"num_negatives": 16, **profile.method_defaults}, profile, seed=0, data=DATA,
                     eval_data=eval_data)
    views = spec.method_class.views(spec.config(), 32)
    reported = []

    def report(metrics):
        reported.append(metrics)
        on_report(metrics)
        if metrics["epoch"] == crash_after_epoch:
            raise _Crash

    try:
        run_loop(spec, InProcessSession(profile, EpochViews(ds, views, CIFAR10, spec.seed),
                                        EpochCheckpoints(str(tmp_path / "ckpt")), report=report))
    except _Crash:
        pass
    return reported


def test_an_in_process_trial_resumes_from_its_last_epoch_checkpoint(ray_local, tmp_path):
    profile = TINY.with_overrides(epochs=3)
    uninterrupted = _in_process(tmp_path / "a", profile)
    assert [m["epoch"] for m in uninterrupted] == [0, 1, 2] and "knn_top1" in uninterrupted[-1]

    before = _in_process(tmp_path / "b", profile, crash_after_epoch=1)  # the process dies after epoch 1
    assert [m["epoch"] for m in before] == [0, 1]
    after = _in_process(tmp_path / "b", profile)  # Tune's retry, or the study run again
    assert [m["epoch"] for m in after] == [2]  # no finished epoch is trained twice
    final = after[-1]
    # the history before the crash is restored, not retrained: identical losses
    assert [h["loss"] for h in final["history"][:2]] == [m["loss"] for m in before]
    assert [h["restarts"] for h in final["history"]] == [0, 0, 1]
    assert final["images_seen"] == uninterrupted[-1]["images_seen"] == 3 * (64 // 16) * 16
    # the optimizer and LR schedule went on from where they were: 3 epochs × 4 steps in all, and
    # the same final LR as the uninterrupted run (a fresh schedule would have counted 4 steps)
    for run in ("a", "b"):
        assert EpochCheckpoints(str(tmp_path / run / "ckpt")).latest()["schedule"]["last_epoch"] == 3 * 4
    assert final["lr"] == uninterrupted[-1]["lr"] and math.isfinite(final["loss"])

    # seeded views, restored RNG, bank and optimiser: the resumed run is the uninterrupted run,
    # to the last bit of every weight, memory-bank row and momentum buffer
    assert [h["loss"] for h in final["history"]] == [m["loss"] for m in uninterrupted]
    assert final["knn_top1"] == uninterrupted[-1]["knn_top1"]
    whole, resumed = (EpochCheckpoints(str(tmp_path / run / "ckpt")).latest() for run in ("a", "b"))
    assert whole["model"].keys() == resumed["model"].keys()
    for key, value in whole["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, equal_nan=True, msg=key)
    for key, value in whole["optimizer"]["state"].items():
        assert torch.equal(resumed["optimizer"]["state"][key]["momentum_buffer"], value["momentum_buffer"])

    again = _in_process(tmp_path / "b", profile)  # resumed after its last epoch: the final report again
    assert len(again) == 1 and again[0]["epoch"] == 2 and again[0]["loss"] == final["loss"]
    # cost adds up over the attempts: wall time of every attempt, device time of every epoch once
    assert final["wall_s"] > before[-1]["wall_s"] > 0 and again[0]["wall_s"] >= final["wall_s"]
    assert final["device_s"] == pytest.approx(sum(h["epoch_s"] for h in final["history"]), rel=0.05)
    assert again[0]["restarts"] == 2


def _old_checkpoint(**changes) -> dict:
    """A checkpoint as the loop wrote it before its state was typed: a plain dict, these keys."""
    state = {
        "model": {"w": torch.arange(3.0)}, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "schedule": {"last_epoch": 8}, "epoch": 1, "history": [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.5}],
        "images_seen": 128, "train_seconds": 3.0, "eval_seconds": 0.5, "wall_seconds": 4.0,
        "cpu_steal_ticks": (1, 40), "rng": [{"torch": torch.zeros(4, dtype=torch.uint8)}], "restarts": 1,
        "last_metrics": {"epoch": 1, "loss": 1.5, "history": [{"epoch": 0, "loss": 2.0}, {"epoch": 1, "loss": 1.5}]},
    }
    return {**state, **changes}


def test_a_checkpoint_in_the_old_format_loads_into_the_typed_state(tmp_path):
    """Checkpoints are plain dicts on storage, with the keys they always had: one written before
    ``TrainingState`` loads into it (through the session, weights only), and saving it again
    writes the same dict; one written before the loop kept its evaluation and wall seconds, its
    CPU steal and its restarts resumes with none counted before and the steal unknown."""
    old = _old_checkpoint()
    checkpoints = EpochCheckpoints(str(tmp_path / "ckpt"))
    checkpoints.save(old, old["epoch"])
    session = InProcessSession(TINY, lambda epoch: None, checkpoints, report=lambda result: None)
    state = session.restore()
    assert isinstance(state, TrainingState)
    assert (state.epoch, state.images_seen, state.train_seconds, state.eval_seconds, state.wall_seconds,
            state.restarts, state.schedule["last_epoch"]) == (1, 128, 3.0, 0.5, 4.0, 1, 8)
    assert tuple(state.cpu_steal_ticks) == (1, 40) and state.history == old["history"]
    assert torch.equal(state.model["w"], old["model"]["w"]) and state.last_metrics == old["last_metrics"]
    saved = state.to_dict()
    assert list(saved) == list(old)  # the same keys, in the same order, on storage
    assert all(saved[k] is getattr(state, k) for k in saved)  # the values themselves, no copies

    older = {k: v for k, v in old.items() if k not in ("eval_seconds", "wall_seconds", "cpu_steal_ticks", "restarts")}
    state = TrainingState.from_dict(older)
    assert (state.eval_seconds, state.wall_seconds, state.cpu_steal_ticks, state.restarts) == (0.0, 0.0, None, 0)
    assert state.train_seconds == 3.0 and list(state.to_dict()) == list(old)
    with pytest.raises(KeyError, match="model"):  # what a resume needs is never made up
        TrainingState.from_dict({k: v for k, v in old.items() if k != "model"})


def test_an_epoch_report_and_a_failure_report_say_exactly_these_keys():
    """The keys the store callback reads (tune_callbacks.py) are the reports' field names, in the
    order they were always reported; the epoch's row leaves the trial's totals and the invariance
    samples out; a field that is None is not reported."""
    report = EpochReport(
        step_means={"loss": 1.0, "loss_nce": 0.5}, epoch=2, lr=0.1, images_seen=64, epoch_s=1.5, epoch_cpu_steal=0.0,
        restarts=0, timing={"steady_images_per_s": 10.0, "steady_window_start": 1.0, "steady_window_end": 2.0},
        evaluation={"knn_top1": 0.3, "probe_res5_top1": 0.4, "invariance_l2_mean": 0.2, "invariance_samples": [0.1]},
        provenance={"cpu": "x"}, train_s=3.0, eval_s=1.0, device_s=6.0, wall_s=5.0, cpu_steal=0.0,
    )
    row = ["loss", "loss_nce", "epoch", "lr", "images_seen", "epoch_s", "epoch_cpu_steal", "restarts",
           "steady_images_per_s", "steady_window_start", "steady_window_end", "knn_top1", "probe_res5_top1",
           "invariance_l2_mean"]
    assert list(report.row()) == row
    report.history = [report.row()]
    result = report.to_result()
    assert list(result) == [*row, "invariance_samples", "provenance", "train_s", "eval_s", "device_s", "wall_s",
                            "cpu_steal", "history"]
    assert result["history"] == report.history and result["history"] is not report.history
    report.checkpoints_skipped = "x does not load"
    assert list(report.to_result())[-2:] == ["checkpoints_skipped", "history"]

    again = EpochReport.again(result, wall_s=9.0, restarts=2)
    assert list(again) == list(result) and (again["wall_s"], again["restarts"]) == (9.0, 2)
    assert EpochReport.again(result, wall_s=9.0, restarts=2, checkpoints_skipped="y")["checkpoints_skipped"] == "y"

    from sslab.engine.errors import FAILURE

    failure = FailureReport(failure="loss became NaN", failed_epoch=1, epoch=0, images_seen=64, train_s=1.0,
                            eval_s=0.5, restarts=0, wall_s=2.0, device_s=2.0, history=[]).to_result()
    label_free = [*names.LABEL_FREE, *map(names.embedding, names.LABEL_FREE)]  # whichever a search chooses by
    assert list(failure) == [FAILURE, "failed_epoch", "epoch", "knn_top1", "loss", *label_free, "images_seen",
                             "train_s", "eval_s", "restarts", "wall_s", "device_s", "history"]
    assert math.isnan(failure["knn_top1"]) and math.isnan(failure["loss"]) and failure[FAILURE] == "loss became NaN"
    assert all(math.isnan(failure[name]) for name in label_free)


def test_a_trial_resumes_from_a_checkpoint_written_before_the_state_kept_its_times_and_steal(ray_local, tmp_path):
    """A checkpoint without eval_seconds, wall_seconds, cpu_steal_ticks and restarts (written
    before the loop kept them) resumes: the next epoch is the uninterrupted run's, the steal
    unknown."""
    uninterrupted = _in_process(tmp_path / "a", TINY)
    _in_process(tmp_path / "b", TINY, crash_after_epoch=0)
    checkpoints = EpochCheckpoints(str(tmp_path / "b" / "ckpt"))
    state = checkpoints.latest()
    for key in ("eval_seconds", "wall_seconds", "cpu_steal_ticks", "restarts"):
        del state[key]
    checkpoints.save(state, state["epoch"])
    after = _in_process(tmp_path / "b", TINY)
    assert [m["epoch"] for m in after] == [1] and after[-1]["restarts"] == 1
    assert [h["loss"] for h in after[-1]["history"]] == [m["loss"] for m in uninterrupted]
    assert math.isnan(after[-1]["cpu_steal"])


def _fake_proc_stat(monkeypatch) -> dict:
    """/proc/stat as a clock: 10 ticks pass at every reading, ``rate`` of them stolen (set it)."""
    from sslab.results import cpu_steal

    clock = {"stolen": 0, "total": 0, "rate": 0.0}

    def fake_cpu_times(path=None):
        clock["total"] += 10
        clock["stolen"] += int(10 * clock["rate"])
        return clock["stolen"], clock["total"]

    monkeypatch.setattr(cpu_steal, "cpu_times", fake_cpu_times)
    return clock


def test_the_loop_reports_the_cpu_steal_of_each_epoch_and_of_the_attempt(ray_local, tmp_path, monkeypatch):
    """A fake /proc/stat: 10 ticks pass at every reading, none stolen until epoch 0 is reported,
    then half of them. Epoch 0 had no steal and epoch 1 half; the attempt as a whole a quarter."""
    clock = _fake_proc_stat(monkeypatch)
    reported = _in_process(tmp_path, TINY, on_report=lambda metrics: clock.update(rate=0.5))
    assert [h["epoch_cpu_steal"] for h in reported[-1]["history"]] == [0.0, 0.5]
    assert reported[0]["cpu_steal"] == 0.0 and reported[-1]["cpu_steal"] == pytest.approx(0.25)


def test_a_resumed_trial_reports_the_cpu_steal_of_every_attempt(ray_local, tmp_path, monkeypatch):
    """No steal before the crash, all of it after: the trial's share counts the first attempt's
    ticks too (kept in the checkpoint), so it is below the second attempt's own 100 %."""
    clock = _fake_proc_stat(monkeypatch)
    profile = TINY.with_overrides(epochs=3)
    _in_process(tmp_path, profile, crash_after_epoch=1)
    first = EpochCheckpoints(str(tmp_path / "ckpt")).latest()["cpu_steal_ticks"]
    assert first[0] == 0 and first[1] > 0
    clock["rate"] = 1.0
    after = _in_process(tmp_path, profile)
    stolen, total = EpochCheckpoints(str(tmp_path / "ckpt")).latest()["cpu_steal_ticks"]
    assert total - stolen == first[1]  # every unstolen tick is the first attempt's
    assert after[-1]["cpu_steal"] == pytest.approx(stolen / total) and 0.0 < after[-1]["cpu_steal"] < 1.0
    assert after[-1]["history"][-1]["epoch_cpu_steal"] == 1.0  # the epochs themselves: as they ran


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])  # the local profile's is NHWC
def test_the_same_trial_twice_gives_the_same_views_losses_and_knn(ray_local, tmp_path, channels_last):
    profile = TINY.with_overrides(channels_last=channels_last)
    first = _in_process(tmp_path / "a", profile)
    second = _in_process(tmp_path / "b", profile)
    assert [m["loss"] for m in first] == [m["loss"] for m in second]
    assert first[-1]["knn_top1"] == second[-1]["knn_top1"] and first[-1]["probe_res3_top1"] == second[-1]["probe_res3_top1"]
    assert first[0]["loss"] != first[1]["loss"]  # (and the epochs differ: fresh views each epoch)


def test_reading_the_next_epoch_ahead_changes_nothing_a_trial_computes(ray_local, tmp_path):
    from dataclasses import replace

    ahead = _in_process(tmp_path / "a", replace(TINY, epochs=3, prefetch_batches=2))  # EpochBatches
    direct = _in_process(tmp_path / "b", replace(TINY, epochs=3, prefetch_batches=0))  # epoch by epoch
    assert [m["loss"] for m in ahead] == [m["loss"] for m in direct]
    assert ahead[-1]["knn_top1"] == direct[-1]["knn_top1"] and ahead[-1]["probe_res5_top1"] == direct[-1]["probe_res5_top1"]


def test_seeded_views_depend_on_the_seed_and_the_epoch_only(ray_local):
    from sslab.methods.views import ImageView

    ds, _ = _data()
    views = [ImageView(size=32)]

    def drawn(seed):
        rows = with_views(ds, views, stats=CIFAR10, seed=seed).take_all()
        return {int(r["idx"]): r["image"] for r in rows}, [int(r["idx"]) for r in rows]

    (a, order_a), (b, order_b), (c, _) = drawn((0, 1)), drawn((0, 1)), drawn((0, 2))
    assert order_a == order_b and all(np.array_equal(a[i], b[i]) for i in a)  # same seed: same rows, same order
    assert sum(np.array_equal(a[i], c[i]) for i in a) == 0  # another epoch: other views of every image


def test_two_data_parallel_workers_train_and_report(ray_local, tmp_path):
    profile = TINY.with_overrides(num_workers=2, epochs=1, batch_size=8)
    result, _ = _fit(tmp_path, profile, name="ddp")
    assert result.metrics["epoch"] == 0
    assert result.metrics["images_seen"] == (64 // (8 * 2)) * 8 * 2
    assert math.isfinite(result.metrics["loss"]) and "knn_top1" in result.metrics


def test_channels_last_trains_the_model_in_nhwc(ray_local, tmp_path):
    result, _ = _fit(tmp_path, TINY.with_overrides(channels_last=True, epochs=1), name="nhwc")
    assert math.isfinite(result.metrics["loss"])
    weights = {k: v for k, v in _load_checkpoint(result.checkpoint)["model"].items() if v.dim() == 4}
    assert weights and all(v.is_contiguous(memory_format=torch.channels_last) for v in weights.values())
    with pytest.raises(ValueError, match="channels_last"):
        TINY.with_overrides(channels_last="yes")


def test_the_loop_hands_every_step_its_context_and_resumes_counting(ray_local, tmp_path, monkeypatch):
    """ctx.step is the global optimiser step across epochs and across a resume, so a method's
    own schedules (BYOL's momentum, MoCo's m) continue where they were."""
    from sslab.methods.contrastive.pirl import PIRL

    seen = []
    original = PIRL.after_step

    def recording(self, batch, out, ctx):
        seen.append((ctx.step, ctx.epoch, ctx.total_steps, ctx.world_size))
        return original(self, batch, out, ctx)

    monkeypatch.setattr(PIRL, "after_step", recording)
    profile = TINY.with_overrides(epochs=3)
    _in_process(tmp_path, profile, crash_after_epoch=0)  # the process dies after epoch 0 ...
    _in_process(tmp_path, profile)  # ... and the trial resumes
    assert [s for s, *_ in seen] == list(range(12))
    assert [e for _, e, *_ in seen] == [0] * 4 + [1] * 4 + [2] * 4
    assert {(total, world) for *_, total, world in seen} == {(12, 1)}


def test_train_worker_checkpoints_leave_nothing_in_the_temporary_folder(ray_local, tmp_path):
    import glob
    import tempfile

    pattern = f"{tempfile.gettempdir()}/sslab-ckpt-*"
    before = set(glob.glob(pattern))
    result, _ = _fit(tmp_path, TINY.with_overrides(num_workers=1, epochs=3), name="tmp")
    assert result.checkpoint is not None and _load_checkpoint(result.checkpoint)["epoch"] == 2
    assert set(glob.glob(pattern)) - before == set()  # 3 epochs, 3 checkpoints, no folder left behind


def test_an_only_checkpoint_that_does_not_load_ends_the_trial_failed_at_once(ray_local, tmp_path):
    """Ray Train offers only its newest checkpoint: if it does not load, every retry would fail
    alike, so the loop reports the cause (naming the checkpoint) as its last result and trains nothing."""
    from sslab.engine.errors import FAILURE, UnreadableCheckpointError

    class Unreadable(InProcessSession):
        def restore(self):
            raise UnreadableCheckpointError("the checkpoint s3://b/t/checkpoint_000003 does not load (EOFError)")

    ds, eval_data = _data()
    spec = TrialRun("pirl", {"num_negatives": 16, **TINY.method_defaults}, TINY, seed=0, data=DATA, eval_data=eval_data)
    reported = []
    run_loop(spec, Unreadable(TINY, ds, EpochCheckpoints(str(tmp_path / "ckpt")), report=reported.append))
    assert len(reported) == 1 and "checkpoint_000003 does not load" in reported[0][FAILURE]
    assert reported[0]["epoch"] == -1 and reported[0]["images_seen"] == 0 and reported[0]["history"] == []


def test_ddp_leaves_the_buffers_that_after_step_keeps_in_sync_alone(tmp_path):
    """The memory bank is all-gathered by after_step on every worker: DDP must not broadcast it
    from rank 0 before each forward (a rank's own update would be overwritten, at the bank's size
    in traffic every step); BatchNorm's running estimates are still broadcast."""
    import torch.distributed as dist

    from sslab.engine.sessions import exclude_kept_in_sync

    spec = TrialRun("pirl", {"num_negatives": 16, **TINY.method_defaults}, TINY, seed=0, data=DATA)
    _, method = spec.build()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert exclude_kept_in_sync(method) == ["memory_bank.bank"]
        model = torch.nn.parallel.DistributedDataParallel(method, find_unused_parameters=True)
        assert "memory_bank.bank" in model.parameters_to_ignore
        model._assign_modules_buffers()  # what DDP broadcasts before a forward (torch's name for the list)
        broadcast = {id(buffer) for buffer in model.modules_buffers}
        assert id(method.memory_bank.bank) not in broadcast and id(method.backbone.bn1.running_mean) in broadcast
    finally:
        dist.destroy_process_group()


def test_a_training_step_waits_for_the_device_at_most_once_and_metrics_are_read_per_epoch(ray_local, tmp_path,
                                                                                           monkeypatch):
    """Between one step's training_step and the next (forward, the finiteness check, backward,
    optimiser, after_step, metric sums, the next batch) the host waits for the device at most
    once: the loop's check that the loss is finite. The metrics stay on the device, and the
    epoch's reported mean equals the mean of what every step returned."""
    from host_syncs import count_host_syncs

    from sslab.methods.contrastive.pirl import PIRL

    steps, original = [], PIRL.training_step

    def recording(self, batch, ctx):
        out = original(self, batch, ctx)
        steps.append((ctx.epoch, sum(syncs.values()), dict(syncs), out.metrics["loss"].clone()))
        return out

    monkeypatch.setattr(PIRL, "training_step", recording)
    with count_host_syncs() as syncs:
        reported = _in_process(tmp_path, TINY.with_overrides(epochs=2))
    assert [e for e, *_ in steps] == [0] * 4 + [1] * 4
    waits = [after - before for (epoch, before, _, _), (next_epoch, after, _, _) in zip(steps, steps[1:])
             if epoch == next_epoch]  # (between epochs: the per-epoch read, the monitor kNN, the checkpoint)
    assert waits == [1] * 6, f"waits per step {waits}; the last kinds counted: {steps[-1][2]}"
    for epoch, metrics in enumerate(reported):
        losses = [loss.item() for e, *_, loss in steps if e == epoch]
        assert metrics["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)


_BUCKETS_SCRIPT = """
import sys, tempfile, warnings
import torch, torch.distributed as dist
from sslab.methods.base import DataInfo, StepContext
from sslab.plan.profiles import Profile
from sslab.engine.device import place_on_device
from sslab.engine.train import TrialRun
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
profile = Profile(name="t", arch="resnet10", width=8, channels_last=True)
_, method = TrialRun("simclr", {}, profile, seed=0, data=DataInfo(64, 4, 16)).build()
if sys.argv[1] == "loop":
    place_on_device(method, profile, torch.device("cpu"))
model = torch.nn.parallel.DistributedDataParallel(method)
if sys.argv[1] == "after":  # the order the loop used to have
    method.to(memory_format=torch.channels_last)
batch = {k: torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last) for k in ("view_0", "view_1")}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model(batch, StepContext(0, 1, 0)).loss.backward()
print("|".join(str(w.message) for w in caught))
"""


def test_ddp_gradient_buckets_match_channels_last():
    """The loop puts the model in channels_last before DDP builds its gradient buckets, so no conv
    gradient is copied across layouts each step (torch warns "Grad strides do not match bucket
    view strides" when it is; once per process, hence one process per order)."""
    import subprocess
    import sys

    def warnings_of(order):
        run = subprocess.run([sys.executable, "-c", _BUCKETS_SCRIPT, order], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout

    assert "bucket view strides" not in warnings_of("loop")
    assert "bucket view strides" in warnings_of("after")  # not vacuous: the other order is caught


def test_uint8_views_reach_the_method_normalised_as_the_float_views_do(ray_local, tmp_path, monkeypatch):
    """Profile.view_transfer='uint8': the views travel as pixels and the loop normalises them on
    the training device, so the method reads the float32 views of the float path (the same seed:
    the same crops and patches) up to the rounding to 1/255."""
    from sslab.methods.contrastive.pirl import PIRL

    first_batches, original = [], PIRL.training_step

    def recording(self, batch, ctx):
        if ctx.step == 0:
            first_batches.append({k: v.clone() for k, v in batch.items()})
        return original(self, batch, ctx)

    monkeypatch.setattr(PIRL, "training_step", recording)
    ds, eval_data = _data()
    for transfer in ("float32", "uint8"):
        profile = TINY.with_overrides(epochs=1, view_transfer=transfer)
        spec = TrialRun("pirl", {"num_negatives": 16, **profile.method_defaults}, profile, seed=0, data=DATA)
        views = EpochViews(ds, spec.method_class.views(spec.config(), 32), CIFAR10, spec.seed, transfer=transfer)
        run_loop(spec, InProcessSession(profile, views, EpochCheckpoints(str(tmp_path / transfer)),
                                        report=lambda metrics: None))
    floats, pixels = first_batches
    assert torch.equal(floats["idx"], pixels["idx"])
    for key in ("image", "jigsaw"):
        assert pixels[key].dtype == torch.float32
        error = (pixels[key] - floats[key]).abs().max().item()
        assert 0 < error <= 0.5 / 255 / min(CIFAR10.std) + 1e-5, f"{key}: {error}"


def test_a_trials_initial_weights_depend_on_its_seed_and_repeat_bitwise():
    """Guards against every trial's model being initialised from seed 0 whatever its configured
    seed: ``TrialRun.build`` with seeds 3 and 7 (neither 0) gives different backbone weights,
    and the same seed twice gives bitwise-identical ones."""

    def initial_weights(seed, draws_before):
        spec = TrialRun("pirl", {"num_negatives": 16, **TINY.method_defaults}, TINY, seed=seed, data=DATA)
        with torch.random.fork_rng():  # build seeds the global generator; leave it as it was
            torch.rand(draws_before)  # whatever state the generator is in, build starts from the seed
            backbone, _ = spec.build()
        return backbone.state_dict()

    first, again, other = initial_weights(3, 1), initial_weights(3, 5), initial_weights(7, 1)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    differing = [k for k in first if first[k].is_floating_point() and not torch.equal(first[k], other[k])]
    # every randomly initialised tensor (the convolutions; BatchNorm starts at constants) differs
    convs = [k for k in first if k.endswith("weight") and first[k].dim() == 4]
    assert convs and set(convs) <= set(differing)
