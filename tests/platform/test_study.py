"""A small study end to end on real CIFAR-10: Tune + Train + Data + evaluation + results store,
then resume after an interruption."""

import os
from pathlib import Path

import pandas as pd
import pytest
import ray

from sslab.platform.profiles import Profile
from sslab.platform.study import Study, run_study, trial_key

ARCHIVE = Path(os.environ.get("SSLAB_DATA", "~/.cache/sslab/data")).expanduser() / "cifar10-jpg.tar.gz"
needs_cifar = pytest.mark.skipif(not ARCHIVE.exists(), reason=f"CIFAR-10 archive not found at {ARCHIVE} (set SSLAB_DATA)")

SMALL = Profile(
    name="small", train_subset=200, test_subset=100, width=8, epochs=2, batch_size=50, lr=0.05,
    num_workers=1, knn_k=10, probe_epochs=5, invariance_samples=20, monitor_images=100,
)
STUDY = Study(name="mini_lambda", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 64})


@pytest.fixture(scope="module")
def ray_local():
    from sslab.platform.placement import TRIAL_RESOURCE

    ray.init(num_cpus=2, resources={TRIAL_RESOURCE: 10}, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_trial_keys_are_stable_and_distinct():
    assert trial_key("pirl", {"loss_weight": 0.25}, 0) == "pirl-loss_weight=0.25-seed=0"
    assert trial_key("pirl", {"b": 1, "a": 2.0}, 3) == trial_key("pirl", {"a": 2.0, "b": 1}, 3)
    assert trial_key("pirl", {"loss_weight": 0.25}, 0) != trial_key("pirl", {"loss_weight": 0.25}, 1)


def test_bad_values_are_refused_before_any_ray_work(tmp_path):
    bad = Study(name="bad", method="pirl", grid={"loss_weight": [0.5, 1.5]})
    with pytest.raises(ValueError, match=r"loss_weight.*1\.5"):
        run_study(bad, profile=SMALL, root=tmp_path, quiet=True)
    unknown = Study(name="bad", method="pirl", grid={"lambda": [0.5]})
    with pytest.raises(ValueError, match="no hyperparameter"):
        run_study(unknown, profile=SMALL, root=tmp_path, quiet=True)
    assert not ray.is_initialized()


def test_method_config_precedence_profile_then_base_then_point():
    profile = SMALL.with_overrides(method_defaults={"loss_form": "infonce", "temperature": 0.2, "not_a_pirl_field": 1})
    study = Study(name="s", method="pirl", grid={"temperature": [0.1]}, base={"loss_form": "nce", "bank_momentum": 0.9})
    config = study.method_config({"temperature": 0.1}, profile)
    assert config == {"loss_form": "nce", "temperature": 0.1, "bank_momentum": 0.9}
    assert Study(name="s", method="pirl", grid={}).method_config({}, profile) == {"loss_form": "infonce", "temperature": 0.2}


def test_a_local_results_path_is_refused_on_a_multi_machine_cluster(ray_local, tmp_path, monkeypatch):
    from sslab.platform import placement

    two_machines = placement.ClusterShape(nodes=[
        placement.Node("a", "10.0.0.1", {"CPU": 0}, {}), placement.Node("b", "10.0.0.2", {"CPU": 8}, {}),
    ])
    monkeypatch.setattr(placement, "cluster_shape", lambda: two_machines)
    monkeypatch.delenv(placement.SHARED_ENV, raising=False)
    with pytest.raises(RuntimeError, match="local path.*2 machines"):
        run_study(STUDY, profile=SMALL, root=tmp_path, data_dir=tmp_path / "no-data-here", quiet=True)
    # refused before any work: no data was looked for (it is not there), no baseline, no trial
    assert not any((tmp_path / "mini_lambda").glob("*.parquet"))


@needs_cifar
def test_study_writes_the_store_and_resumes_without_rerunning(ray_local, tmp_path):
    trials = run_study(STUDY, profile=SMALL, root=tmp_path, quiet=True)
    assert sorted(trials.trial_id) == [trial_key("pirl", {"loss_weight": w}, 0) for w in (0.0, 1.0)]
    assert list(trials.status) == ["ok", "ok"], trials.error.tolist()
    for column in ["method", "seed", "error", "config/loss_weight", "config/temperature", "knn_top1",
                   "probe_conv1_top1", "probe_res5_top1", "invariance_l2_mean", "wall_s", "images_seen"]:
        assert column in trials, column
    assert (trials.images_seen == 2 * 4 * 50).all()
    store = tmp_path / "mini_lambda"
    epochs = pd.read_parquet(store / "epochs.parquet")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).tolist()) == [[0, 1], [0, 1]]
    baselines = pd.read_parquet(store / "baselines.parquet")
    assert list(baselines.seed) == [0] and {"knn_top1", "probe_res5_top1"} <= set(baselines)
    invariance = pd.read_parquet(store / "invariance.parquet")
    assert invariance.groupby("trial_id").size().tolist() == [20, 20]

    # Interrupt: the λ=1 trial never finished (its row is gone); the λ=0 row must survive untouched.
    kept = trials[trials["config/loss_weight"] == 0.0]
    pd.read_parquet(store / "trials.parquet").pipe(lambda t: t[t["config/loss_weight"] == 0.0]).to_parquet(
        store / "trials.parquet", index=False
    )
    resumed = run_study(STUDY, profile=SMALL, root=tmp_path, quiet=True)
    assert sorted(resumed.trial_id) == sorted(trials.trial_id)  # no gap, no duplicate
    again = resumed.set_index("trial_id").loc[kept.trial_id.iloc[0]]
    assert again.finished_at == kept.finished_at.iloc[0]  # the finished trial was not rerun
    assert (resumed.status == "ok").all()

    # Everything done: a third run starts no trial at all, and needs neither Ray nor the data.
    ray.shutdown()
    final = run_study(STUDY, profile=SMALL, root=tmp_path, data_dir=tmp_path / "no-data-here", quiet=True)
    pd.testing.assert_frame_equal(final, resumed)
    assert not ray.is_initialized()
