"""A study on Ray's real autoscaler, with the node types of cluster.yaml (``autoscaling_cluster``).

The cluster starts with the head alone (CPU 0, ``sslab_trial``); the trial's views ask for an
augmentation node and its Train worker for a trainer node, and the autoscaler (v2, the one that
schedules label selectors) launches them from cluster.yaml's worker types. A trainer node is killed
mid-trial (every process of it at once, as when a spot machine is reclaimed): the autoscaler
launches a replacement, and the trial resumes there from its checkpoint. After the study the idle
worker nodes are terminated. GPUs are stood in by ``fake_gpu`` (training runs on CPU). The autoscaler
launched only what the study needs: augmentation nodes for Ray Data's work (every demand for CPUs carries
a label selector) and single-GPU nodes for the Train workers, never a GPU node that no Train worker uses.

It must be the first Ray session of its pytest process (its module sorts first among the Ray
tests): after an earlier ``ray.init()`` / ``ray.shutdown()`` in the same process, Ray 2.60's driver
re-connected to this cluster gives objects a stale owner address, and the first ``ray.put`` of
the study's data fails with OwnerDiedError (reproduced with any earlier module that starts a
local Ray, e.g. ``pytest tests/engine/test_views_stage.py tests/engine/test_autoscaling.py``).

cluster.yaml is read, not copied: ``test_cluster_yaml_keeps_what_the_autoscaling_test_relies_on``
fails when it changes in a way this test depends on.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter

import pandas as pd
import pytest
import ray
import yaml
from ray.core.generated.common_pb2 import LabelSelectorOperator

import faults
from small import by_name, needs_cifar, trial_name
from autoscaling_cluster import FAKE_GPU, FakeAutoscalingCluster, read_cluster_yaml
from sslab.engine import placement
from sslab.engine.placement import AUGMENT_ROLE, ROLE_LABEL, TRIAL_RESOURCE
from sslab.plan.profiles import Profile
from sslab.engine.runner import run_study
from sslab.plan.study import Study


#: overrides cluster.yaml's idle_timeout_minutes (10): idle workers go within seconds here
IDLE_TIMEOUT_S = 8
#: at most this many nodes of each worker type (cluster.yaml allows 8, 8 and 2): a 2-core machine
MAX_WORKERS_CAP = 2
#: one Train worker per trial: one trainer node holds a trial (cluster.yaml's gpu_1x, cifar profile)
PROFILE = Profile(
    name="autoscaled", train_subset=400, test_subset=200, width=8, epochs=4, batch_size=50,
    num_workers=1, use_gpu=False, knn_k=20, probe_epochs=5, invariance_samples=50, monitor_images=100,
    max_failures=2,
    method_defaults={"loss_form": "infonce", "base_lr": 0.05, "lr_scaling": "none", "warmup_epochs": 0},
)
STUDY = Study(name="autoscaled", method="pirl", grid={"loss_weight": [0.0]}, base={"num_negatives": 128})
KEY = trial_name("pirl", {"loss_weight": 0.0}, 0)


def exported_environment(cluster: dict) -> dict[str, str]:
    """The variables cluster.yaml's setup_commands export to every node (``printf 'export %s\\n' ...``)."""
    exported = {}
    for command in cluster.get("setup_commands", []):
        words = shlex.split(command)
        if words[:2] == ["printf", "export %s\\n"]:
            for word in words[2:]:
                if word == ">":
                    break
                name, _, value = word.partition("=")
                exported[name] = value
    return exported


def test_cluster_yaml_keeps_what_the_autoscaling_test_relies_on():
    """What the fake cluster mirrors from cluster.yaml, and what the study below needs of it."""
    cluster = read_cluster_yaml()
    types = cluster["available_node_types"]
    head = types[cluster["head_node_type"]]
    # the head runs trial drivers only: no CPU for Ray tasks, the platform's trial resource
    assert head["resources"].get("CPU") == 0 and head["resources"].get(TRIAL_RESOURCE, 0) >= 1
    assert head["labels"] == {ROLE_LABEL: "head"}
    workers = {name: spec for name, spec in types.items() if name != cluster["head_node_type"]}
    roles = {name: spec["labels"][ROLE_LABEL] for name, spec in workers.items()}
    assert sorted(set(roles.values())) == sorted([AUGMENT_ROLE, "train"])
    for name, spec in workers.items():
        assert spec["min_workers"] == 0, f"{name}: the study starts with zero workers"
        assert spec["max_workers"] >= 1, name
        assert set(spec["resources"]) <= {"CPU", "GPU"}, f"{name}: a resource the fake cluster does not map"
        # trainer types have GPUs, the augmentation type has none: Train workers follow the GPUs
        assert bool(spec["resources"].get("GPU")) == (roles[name] == "train"), name
    assert cluster["max_workers"] >= sum(min(s["max_workers"], MAX_WORKERS_CAP) for s in workers.values())
    assert cluster["idle_timeout_minutes"] > 0  # overridden by IDLE_TIMEOUT_S in the test
    # augmentation is required on augmentation nodes, so the autoscaler starts them from zero
    assert exported_environment(cluster).get("SSLAB_AUGMENT_NODES") == "require"
    # Train workers keep off augmentation nodes (and so land on the trainer types)
    assert placement.TRAIN_LABEL_SELECTOR == {ROLE_LABEL: f"!{AUGMENT_ROLE}"}


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    """cluster.yaml's node types on the fake multi-node provider; this process is its driver."""
    if ray.is_initialized():
        ray.shutdown()
    cluster = FakeAutoscalingCluster(read_cluster_yaml(), idle_timeout_s=IDLE_TIMEOUT_S, max_workers_cap=MAX_WORKERS_CAP)
    address = cluster.start()
    try:
        # The head's home as `ray up` leaves it: the launcher's config at ~/ray_bootstrap_config.yaml,
        # which tells the platform that an autoscaler may add nodes (placement.launcher_config)
        home = tmp_path_factory.mktemp("head-home")
        with open(home / "ray_bootstrap_config.yaml", "w") as handle:
            yaml.safe_dump(cluster.autoscaling_config(address), handle)
        ray.init(address=address, log_to_driver=False)
        yield cluster, address, home
    finally:
        ray.shutdown()
        cluster.shutdown()
        assert not cluster.processes(), "a process of the fake cluster outlived it"


@pytest.fixture
def on_the_head(fake_cluster, monkeypatch):
    """The environment of the study script on the head: cluster.yaml's exports, the head's home,
    and a local results root that every fake node shares (they are processes of this machine)."""
    cluster, _, home = fake_cluster
    monkeypatch.setenv("SSLAB_AUGMENT_NODES", exported_environment(cluster.cluster)["SSLAB_AUGMENT_NODES"])
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(placement.SHARED_ENV, "1")


class NodeWatch:
    """Every node the cluster had, polled in the background: Ray's view (labels, resources, alive)
    and the autoscaler's (the node type it launched the node as)."""

    def __init__(self, address: str, every: float = 1.0):
        self.address, self.every = address, every
        self.nodes: dict[str, dict] = {}
        #: every resource demand the autoscaler was shown: (source, bundle, label selectors) -> times seen
        self.demands: Counter = Counter()
        self._gcs = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        from ray.autoscaler.v2.sdk import get_cluster_status

        now = time.monotonic()
        for info in ray.nodes():
            node = self.nodes.setdefault(info["NodeID"], {"first_seen": now, "type": None, "labels": {}, "resources": {}})
            node["alive"] = bool(info.get("Alive"))
            if node["alive"]:  # a dead node's entry has no resources left: keep what it had
                node.update(labels=dict(info.get("Labels") or {}), resources=dict(info.get("Resources") or {}),
                            last_alive=now)
        status = get_cluster_status(self.address)
        for info in status.active_nodes + status.idle_nodes:
            if info.node_id in self.nodes:
                self.nodes[info.node_id]["type"] = info.ray_node_type_name
        self._poll_demands()

    def _poll_demands(self) -> None:
        """What the autoscaler is asked for now: pending tasks and actors, placement groups, and
        ``request_resources`` constraints (Ray Data's and Ray Train's autoscaling requests)."""
        from ray._raylet import GcsClient
        from ray.autoscaler.v2.sdk import get_cluster_resource_state

        if self._gcs is None:
            self._gcs = GcsClient(address=self.address)
        state = get_cluster_resource_state(self._gcs)
        requests = [("task or actor", by_count.request) for by_count in state.pending_resource_requests]
        for gang in state.pending_gang_resource_requests:  # bundles with their selectors, as the autoscaler reads them
            bundles = gang.bundle_selectors[0].resource_requests if gang.bundle_selectors else gang.requests
            requests += [("placement group", request) for request in bundles]
        requests += [("request_resources", by_count.request) for constraint in state.cluster_resource_constraints
                     for by_count in constraint.resource_requests]
        for source, request in requests:
            selectors = tuple(
                " & ".join(f"{c.label_key} {LabelSelectorOperator.Name(c.operator)} {sorted(c.label_values)}"
                           for c in selector.label_constraints)
                for selector in request.label_selectors)
            self.demands[(source, tuple(sorted(request.resources_bundle.items())), selectors)] += 1

    def unlabelled_cpu_demands(self) -> list[tuple]:
        """Demands for CPUs that any node type could satisfy: no label selector says where."""
        return [demand for demand in self.demands if dict(demand[1]).get("CPU", 0) > 0 and not any(demand[2])]

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.poll()
            except Exception:  # the head is busy: next round
                continue

    def __enter__(self) -> "NodeWatch":
        self.poll()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.poll()

    def workers(self, *, alive: bool | None = None) -> dict[str, dict]:
        return {key: node for key, node in self.nodes.items()
                if node["labels"].get(ROLE_LABEL) != "head" and (alive is None or node["alive"] == alive)}

    def role(self, node_id: str) -> str:
        return self.nodes[node_id]["labels"].get(ROLE_LABEL, "?")


def alive_workers() -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"] and (n.get("Labels") or {}).get(ROLE_LABEL) != "head"]


@pytest.mark.slow
def test_the_platform_plans_a_study_on_an_autoscaled_cluster_at_zero_workers(fake_cluster, on_the_head):
    """Nothing but the head is up: the launcher's node types (~/ray_bootstrap_config.yaml) say what the
    autoscaler may start, so the study is planned by them rather than refused for 0 CPUs."""
    cluster, _, _ = fake_cluster
    faults.wait_for(lambda: not alive_workers(), timeout=IDLE_TIMEOUT_S + 60)
    shape = placement.cluster_shape()
    assert shape.max_nodes > 1 and shape.has_augment_nodes
    assert placement.augment_remote_args(placement.augment_policy(PROFILE), shape) == {
        "label_selector": {ROLE_LABEL: AUGMENT_ROLE}}
    trainer_nodes = sum(spec["max_workers"] for spec in cluster.node_types.values()
                        if spec["labels"].get(ROLE_LABEL) != AUGMENT_ROLE)
    assert placement.max_concurrent_trials(PROFILE, shape) == trainer_nodes  # one 1-CPU trial per trainer node


@pytest.mark.slow
@needs_cifar
def test_the_autoscaler_starts_the_nodes_a_study_needs_replaces_a_lost_one_and_stops_them(
    fake_cluster, on_the_head, tmp_path
):
    cluster, address, _ = fake_cluster

    # (a) the study starts with the head alone: CPU 0, the trial resource, no worker node
    faults.wait_for(lambda: not alive_workers(), timeout=IDLE_TIMEOUT_S + 60)  # e.g. left by a test before
    (head,) = [n for n in ray.nodes() if n["Alive"]]
    assert head["Labels"][ROLE_LABEL] == "head"
    assert head["Resources"].get("CPU", 0) == 0 and head["Resources"][TRIAL_RESOURCE] == cluster.head["resources"][TRIAL_RESOURCE]

    outcome: dict = {}

    def run() -> None:
        try:
            outcome["trials"] = run_study(STUDY, profile=PROFILE, root=tmp_path, quiet=True)
        except BaseException as err:  # surfaced below
            outcome["error"] = err

    with NodeWatch(address) as watch:
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        # (c) once an epoch is checkpointed, the trainer nodes disappear: the trial's, and any other one
        # (there should be none: (e) checks that every trainer node ran a Train worker), so that the
        # trial needs a node launched after the loss.
        def an_epoch_checkpointed():
            if not runner.is_alive():
                return "finished"
            before = faults.read_epochs(tmp_path, STUDY.name)
            workers = faults.actors("RayTrainWorker", alive=True)
            if not before.empty and len(workers) == 1:
                trainers = {n["NodeID"] for n in alive_workers() if n["Labels"].get(ROLE_LABEL) == "train"}
                if workers[0].node_id in trainers:
                    return before, trainers
            return None

        found = faults.wait_for(an_epoch_checkpointed, timeout=300, every=0.5)
        assert found != "finished", f"the study ended before a trainer node could be lost: {outcome}"
        before, lost = found
        watch.poll()
        assert {watch.role(node) for node in lost} == {"train"}
        killed_at = time.monotonic()
        for node in lost:
            cluster.kill_node(node)
        runner.join(timeout=400)
        assert not runner.is_alive(), "the study did not finish after its trainer node was lost"
        assert "error" not in outcome, outcome.get("error")
        finished_at = time.monotonic()

        # (d) after the study, the idle worker nodes go away (idle_timeout_minutes, overridden)
        faults.wait_for(lambda: not alive_workers(), timeout=IDLE_TIMEOUT_S + 90, every=1)
        watch.poll()

    # the trial finished on the replacement, from the checkpoint of the lost node's last epoch
    trials = outcome["trials"]
    assert by_name(trials).index.tolist() == [KEY]
    row = by_name(trials).loc[KEY]
    assert row.status == "ok", row.error
    assert row.restarts >= 1
    epochs = faults.read_epochs(tmp_path, STUDY.name).sort_values("epoch")
    assert epochs.epoch.tolist() == list(range(PROFILE.epochs))  # every epoch once: no gap, no rerun
    done = before.sort_values("epoch").set_index("epoch")
    pd.testing.assert_series_equal(epochs.set_index("epoch").loss.loc[done.index], done.loss)  # not trained again
    assert (epochs.set_index("epoch").restarts.loc[done.index.max() + 1:] >= 1).all()
    assert row.images_seen == PROFILE.epochs * 400

    # (b) the autoscaler launched an augmentation node and trainer nodes, of cluster.yaml's types
    workers = watch.workers()
    types = cluster.node_types
    for node_id, node in workers.items():
        assert node["type"] in types, f"node {node_id} of no cluster.yaml type: {node}"
        assert node["labels"][ROLE_LABEL] == types[node["type"]]["labels"][ROLE_LABEL]
        expected = {key: value for key, value in types[node["type"]]["resources"].items() if key != "object_store_memory"}
        assert {key: node["resources"].get(key) for key in expected} == expected
    roles = [node["labels"][ROLE_LABEL] for node in workers.values()]
    assert AUGMENT_ROLE in roles
    trainers = {key: node for key, node in workers.items() if node["labels"][ROLE_LABEL] == "train"}
    assert all(FAKE_GPU in node["resources"] for node in trainers.values())
    # the lost node was replaced by a node the autoscaler started after the loss
    replacements = [key for key, node in trainers.items() if key not in lost and node["first_seen"] > killed_at]
    assert replacements, f"no trainer node launched after {lost} were lost: {trainers}"

    # Train workers ran on trainer nodes only (the lost one, then its replacement), views on augmentation nodes
    from ray.util.state import list_tasks

    train_workers = faults.actors("RayTrainWorker")
    assert {w.node_id for w in train_workers} <= set(trainers) and len(train_workers) >= 2
    assert {w.node_id for w in train_workers} - lost <= set(replacements)
    views = list_tasks(address=address, filters=[("name", "=", "MapBatches(make_views)")], limit=10_000, detail=True)
    assert views and {watch.role(t.node_id) for t in views if t.node_id} == {AUGMENT_ROLE}

    # (e) what the autoscaler launched, from its own log (every launch, also of nodes that came and went
    # between two polls): augmentation nodes for Ray Data's work, and a GPU node type only where a Train
    # worker needed it. The trial uses one (fake) GPU at a time, so every trainer node launched ran a Train
    # worker (the lost one, then its replacement), of the single-GPU type; the 4-GPU type is never started.
    # Every demand for CPUs the study made carried a label selector: one without (e.g. the 1-CPU tasks in
    # which ray.data.from_arrow reads each block's metadata, waiting on the CPU-less head) lets the autoscaler
    # start any node type with a CPU, GPU machines included; the issue saw a study's start launch gpu_4x
    # (and a spare gpu_1x) next to cpu_augment that way.
    launched = Counter(cluster.launched_node_types())
    unlabelled = watch.unlabelled_cpu_demands()
    assert Counter(node["type"] for node in workers.values()) == launched, f"launched {launched}, seen {workers}"
    augment_types = {name for name, spec in types.items() if spec["labels"][ROLE_LABEL] == AUGMENT_ROLE}
    one_gpu_types = {name for name, spec in types.items() if spec["resources"].get(FAKE_GPU) == 1}
    assert launched.keys() & augment_types, launched
    assert launched.keys() <= augment_types | one_gpu_types, (
        f"a GPU node type no trial needs was launched: {launched}; CPU demands without a label selector: {unlabelled}")
    used = {w.node_id for w in train_workers}
    assert set(trainers) == used, (
        f"trainer nodes launched that no Train worker used: {set(trainers) - used} ({launched}); "
        f"CPU demands without a label selector: {unlabelled}")
    assert not unlabelled, f"demands for CPUs without a label selector: {unlabelled}"

    # (d) every worker node is gone, its processes too, and the autoscaler keeps none
    assert not watch.workers(alive=True)
    assert all(node["last_alive"] <= finished_at + IDLE_TIMEOUT_S + 90 for node in workers.values())
    for node_id in workers:
        assert not cluster.node_processes(node_id), f"processes of terminated node {node_id} still run"
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(address)
    assert [n.node_id for n in status.active_nodes + status.idle_nodes] == [head["NodeID"]]
    assert not status.pending_nodes and not status.pending_launches
