"""Studies on a simulated multi-node cluster (``ray.cluster_utils.Cluster``, every node on this machine).

The topology mirrors cluster.yaml: a head with no CPU that runs trial drivers
(``sslab_trial``), two trainer nodes, and one CPU node labelled
``sslab.io/role=augment``. Placement is read back from Ray's state API, and
faults are real: a Train worker process is SIGKILLed, a node is removed.
"""

import threading
from collections import Counter

import pandas as pd
import pytest
import ray
import torch
from ray.cluster_utils import Cluster

import faults
from small import by_name, needs_cifar, trial_name
from sslab.engine.placement import ROLE_LABEL, TRIAL_RESOURCE
from sslab.plan.profiles import Profile
from sslab.engine.runner import run_study
from sslab.plan.spec import name_of
from sslab.plan.study import Study
from sslab.results.store import ResultsStore
from sslab.checkpoints import RAY_TRAIN_FILE

pytestmark = needs_cifar

#: two Train workers per trial, spread over the two trainer nodes
TWO_WORKERS = Profile(
    name="two-workers", train_subset=400, test_subset=200, width=8, epochs=4, batch_size=50,
    num_workers=2, worker_placement="SPREAD", knn_k=20, probe_epochs=5, invariance_samples=50,
    monitor_images=100, max_failures=2,
    method_defaults={"loss_form": "infonce", "base_lr": 0.05, "lr_scaling": "none", "warmup_epochs": 0},
)
STUDY = Study(name="spread", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 128})
POINT = {"loss_weight": 0.0}
KEY = trial_name("pirl", POINT, 0)


@pytest.fixture(scope="module")
def cluster():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "resources": {TRIAL_RESOURCE: 10}, "include_dashboard": True},
    )
    nodes = {
        "trainer-a": cluster.add_node(num_cpus=1),
        "trainer-b": cluster.add_node(num_cpus=1),
        "augment": cluster.add_node(num_cpus=1, labels={ROLE_LABEL: "augment"}),
    }
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="module")
def spread_study(cluster, tmp_path_factory):
    """The 2-trial study, uninterrupted: also the reference for the fault tests."""
    root = tmp_path_factory.mktemp("results")
    trials = run_study(STUDY, profile=TWO_WORKERS, root=root, quiet=True)
    return root, trials


def _node_names(cluster):
    _, nodes = cluster
    return {node.node_id: name for name, node in nodes.items()}


def test_trials_spread_their_workers_and_augment_on_the_augmentation_node(cluster, spread_study):
    from ray.util.state import list_tasks

    _, trials = spread_study
    assert sorted(trials.trial_id.map(name_of)) == sorted(trial_name("pirl", {"loss_weight": w}, 0) for w in (0.0, 1.0))
    assert (trials.status == "ok").all(), trials.error.tolist()
    assert (trials.images_seen == TWO_WORKERS.epochs * 400).all()  # 2 workers × 4 steps × 50 images per epoch

    names = _node_names(cluster)
    workers = faults.actors("RayTrainWorker")
    by_group = Counter(names.get(w.node_id, "head") for w in workers)
    assert by_group == {"trainer-a": 2, "trainer-b": 2}  # 2 trials × 2 workers, one per trainer node each
    views = list_tasks(filters=[("name", "=", "MapBatches(make_views)")], limit=10000, detail=True)
    assert views and {names.get(t.node_id, "head") for t in views} == {"augment"}


def test_in_process_trials_train_on_trainer_nodes_and_augment_on_the_augmentation_node(cluster, tmp_path):
    """num_workers=0: each trial trains in its own process, which holds a Train worker's CPU and so,
    like a Train worker, runs on a trainer node: never on the head (no CPU) nor the augmentation node."""
    from ray.util.state import list_tasks

    def trial_actors():
        return {a.actor_id: a for a in faults.actors("ImplicitFunc")}

    def view_tasks():
        tasks = list_tasks(filters=[("name", "=", "MapBatches(make_views)")], limit=10_000, detail=True)
        return {t.task_id: t for t in tasks}

    earlier_actors, earlier_tasks = trial_actors(), view_tasks()
    profile = TWO_WORKERS.with_overrides(num_workers=0, epochs=2)
    study = Study(name="in_process", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base=STUDY.base)
    trials = run_study(study, profile=profile, root=tmp_path, quiet=True)
    assert (trials.status == "ok").all(), trials.error.tolist()
    assert (trials.images_seen == 2 * 400).all()

    names = _node_names(cluster)
    ours = [a for key, a in trial_actors().items() if key not in earlier_actors]
    assert ours and {names.get(a.node_id, "head") for a in ours} <= {"trainer-a", "trainer-b"}
    views = [t for key, t in view_tasks().items() if key not in earlier_tasks]
    assert views and {names.get(t.node_id, "head") for t in views} == {"augment"}


def test_a_killed_train_worker_resumes_from_its_checkpoint(cluster, spread_study, tmp_path):
    spread_root, reference = spread_study
    study = Study(name="killed", method="pirl", grid={"loss_weight": [0.0]}, base=STUDY.base)
    trials, seen = faults.run_study_killing(study, TWO_WORKERS, tmp_path, victim="RayTrainWorker", after_epoch=1)

    row = by_name(trials).loc[KEY]
    assert row.status == "ok", row.error
    assert row.restarts == 1  # one worker-group restart, from a checkpoint
    epochs = faults.read_epochs(tmp_path, "killed").sort_values("epoch")
    assert epochs.epoch.tolist() == list(range(TWO_WORKERS.epochs))  # every epoch once: no gap, no rerun
    # epochs finished before the kill were restored from the checkpoint, not trained again
    before = seen["before"].sort_values("epoch").set_index("epoch")
    after = epochs.set_index("epoch").loc[before.index]
    pd.testing.assert_series_equal(after.loss, before.loss)
    assert (after.restarts == 0).all() and (epochs.set_index("epoch").restarts.loc[before.index.max() + 1:] == 1).all()
    assert row.images_seen == TWO_WORKERS.epochs * 400  # the lost epoch is not counted twice

    # Seeded views (augment.EpochViews) and every worker's generators in the checkpoint: the
    # resumed trial is the uninterrupted one, step for step (the same losses, kNN and final state)
    uninterrupted = by_name(reference).loc[KEY]
    reference_epochs = faults.read_epochs(spread_root, "spread")
    reference_epochs = reference_epochs[reference_epochs.trial_id.map(name_of) == KEY].sort_values("epoch")
    assert epochs.loss.tolist() == reference_epochs.loss.tolist()
    assert (row.loss, row.knn_top1, row.probe_res5_top1) == (
        uninterrupted.loss, uninterrupted.knn_top1, uninterrupted.probe_res5_top1)
    resumed, whole = (_final_state(root, study_name) for root, study_name in ((tmp_path, "killed"), (spread_root, "spread")))
    for part in ("model", "optimizer"):
        assert _flat(resumed[part]).keys() == _flat(whole[part]).keys()
        differ = [k for k, a in _flat(resumed[part]).items()
                  if not torch.allclose(a, _flat(whole[part])[k], rtol=0, atol=0, equal_nan=True)]  # NaN: log Z unused
        assert not differ, f"the resumed {part} state differs from the uninterrupted run's in {differ}"


def _final_state(root, study_name: str) -> dict:
    """The last epoch's checkpoint of the trial ``KEY`` in a study's Ray Train storage."""
    files = sorted((root / study_name).glob(f"ray/**/{KEY}*/checkpoint_*/{RAY_TRAIN_FILE}"))
    states = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
    assert states, f"no checkpoint of {KEY} under {root / study_name}"
    return max(states, key=lambda state: state["epoch"])


def _flat(tree, prefix="") -> dict:
    """Every tensor of a nested state (dicts and lists), by its path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    return {k: v for key, sub in items for k, v in _flat(sub, f"{prefix}/{key}").items()}


def test_a_node_lost_mid_study_loses_no_trial(cluster, tmp_path):
    """A trainer node disappears while the second trial trains (a preempted spot node), and a
    replacement joins (the autoscaler's part, played here by the test). The finished trial is kept,
    the interrupted one resumes from its checkpoint, and the study completes."""
    ray_cluster, nodes = cluster
    study = Study(name="lost_node", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base=STUDY.base)
    first, second = (trial_name("pirl", {"loss_weight": w}, 0) for w in (0.0, 1.0))
    outcome: dict = {}

    def run():  # the study runs beside the main thread, which plays the cloud (nodes start in the main thread)
        try:
            outcome["trials"] = run_study(study, profile=TWO_WORKERS, root=tmp_path, quiet=True)
        except BaseException as err:  # surfaced by the assertions below
            outcome["error"] = err

    runner = threading.Thread(target=run, daemon=True)
    runner.start()

    def second_trial_training():
        epochs = faults.read_epochs(tmp_path, "lost_node")
        return any((tmp_path / "lost_node" / "trials").glob("*.parquet")) and not epochs.empty and (epochs.trial_id.map(name_of) == second).any()

    faults.wait_for(second_trial_training)
    finished = ResultsStore(tmp_path, "lost_node").read("trials")
    ray_cluster.remove_node(nodes.pop("trainer-b"))
    nodes["trainer-c"] = ray_cluster.add_node(num_cpus=1)
    runner.join(timeout=600)
    assert not runner.is_alive(), "the study did not finish after the node was lost"
    assert "error" not in outcome, outcome.get("error")
    trials = outcome["trials"]

    assert sorted(trials.trial_id.map(name_of)) == sorted([first, second])  # no trial lost, none duplicated
    assert (trials.status == "ok").all(), trials.error.tolist()
    # the trial that had finished before the node was lost is exactly as it was written
    kept = trials[trials.trial_id.map(name_of) == first].reset_index(drop=True)[finished.columns]
    pd.testing.assert_frame_equal(kept, finished.reset_index(drop=True))
    assert by_name(trials).loc[second, "restarts"] >= 1
    epochs = faults.read_epochs(tmp_path, "lost_node")
    assert sorted(epochs[epochs.trial_id.map(name_of) == second].epoch) == list(range(TWO_WORKERS.epochs))
