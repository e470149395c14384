"""Placement decisions from the cluster's nodes: concurrency, augmentation nodes, shared storage."""

import pytest

from sslab.engine.placement import (
    SHARED_ENV,
    CannotPlace,
    TRAIN_LABEL_SELECTOR,
    ClusterShape,
    Node,
    augment_data_context,
    augment_policy,
    augment_remote_args,
    check_shared_storage,
    max_concurrent_trials,
)
from sslab.plan.profiles import Profile

CPU_PROFILE = Profile(name="t", num_workers=1)


def node(address="10.0.0.1", role=None, **resources):
    return Node(node_id=f"{address}-{role}", address=address, resources=resources,
                labels={"sslab.io/role": role} if role else {})


def shape(*nodes, **autoscaler):
    return ClusterShape(nodes=list(nodes), **autoscaler)


def test_cpu_trials_keep_a_cpu_for_augmentation_unless_augmentation_nodes_exist():
    assert max_concurrent_trials(CPU_PROFILE, shape(node(CPU=2))) == 1
    assert max_concurrent_trials(CPU_PROFILE, shape(node(CPU=8))) == 4
    two_workers = CPU_PROFILE.with_overrides(num_workers=2)
    trainers = [node("10.0.0.1", CPU=0, sslab_trial=1000), node("10.0.0.2", CPU=2), node("10.0.0.3", CPU=2)]
    assert max_concurrent_trials(two_workers, shape(*trainers)) == 1  # 4 CPUs / (2 workers + 1 augmentation)
    # augmentation nodes do the views: their CPUs don't count, and no CPU is held back per trial
    assert max_concurrent_trials(two_workers, shape(*trainers, node("10.0.0.4", "augment", CPU=16))) == 2
    with pytest.raises(CannotPlace, match="needs 3 CPUs per trial"):
        max_concurrent_trials(two_workers, shape(node(CPU=2)))


def test_gpu_trials_follow_the_gpus():
    gpu = CPU_PROFILE.with_overrides(use_gpu=True)
    nodes = shape(node("a", CPU=0), node("b", "train", CPU=8, GPU=1), node("c", "train", CPU=48, GPU=4))
    assert max_concurrent_trials(gpu, nodes) == 5
    assert max_concurrent_trials(gpu.with_overrides(num_workers=2), nodes) == 2
    with pytest.raises(CannotPlace, match="needs 1 GPU"):
        max_concurrent_trials(gpu, shape(node(CPU=8)))
    # an autoscaled cluster that starts with no GPU node is planned by what it may start
    assert max_concurrent_trials(gpu, shape(node(CPU=0), max_resources={"GPU": 16, "CPU": 200}, max_nodes=19)) == 16


def test_strict_spread_needs_as_many_hosts_as_workers():
    spread = CPU_PROFILE.with_overrides(num_workers=2, worker_placement="STRICT_SPREAD")
    with pytest.raises(CannotPlace, match="different nodes"):
        max_concurrent_trials(spread, shape(node("a", CPU=8), node("b", "augment", CPU=8)))
    assert max_concurrent_trials(spread, shape(node("a", CPU=4), node("b", CPU=4))) == 2


def test_augmentation_goes_to_labelled_nodes_when_there_are_any():
    plain = shape(node(CPU=2))
    labelled = shape(node(CPU=2), node("b", "augment", CPU=8))
    assert augment_remote_args("prefer", plain) == {}
    assert augment_remote_args("prefer", labelled) == {"label_selector": {"sslab.io/role": "augment"}}
    # "require" asks for them even before the autoscaler has started one...
    autoscaled = shape(node(CPU=0), max_resources={"CPU": 128}, max_nodes=9)
    assert augment_remote_args("require", autoscaled) == {"label_selector": {"sslab.io/role": "augment"}}
    assert augment_remote_args("require", labelled) == {"label_selector": {"sslab.io/role": "augment"}}
    # ...but where nothing could ever start one, trials would wait forever: refused with the fix
    with pytest.raises(CannotPlace, match="no autoscaler.*SSLAB_AUGMENT_NODES=prefer"):
        augment_remote_args("require", plain)
    assert augment_remote_args("any", labelled) == {}
    assert TRAIN_LABEL_SELECTOR == {"sslab.io/role": "!augment"}


def test_ray_data_made_in_the_augment_data_context_asks_for_augmentation_nodes_only():
    """The study's dataset is made inside it: Ray Data's tasks for it (from_arrow reads each block's
    metadata in a 1-CPU task) carry the augmentation label selector, so an autoscaler can only start
    augmentation nodes for them; the process's DataContext is as it was afterwards, error or not."""
    from ray.data import DataContext

    def selector():
        return DataContext.get_current().execution_options.label_selector

    before = selector()
    args = augment_remote_args("require", shape(node(CPU=0, sslab_trial=1000), max_nodes=10))
    with augment_data_context(args):
        assert selector() == {"sslab.io/role": "augment"}
    assert selector() == before
    with pytest.raises(RuntimeError, match="boom"), augment_data_context(args):
        raise RuntimeError("boom")
    assert selector() == before
    with augment_data_context(augment_remote_args("any", shape(node(CPU=4)))):  # no selector: unchanged
        assert selector() == before


def test_augment_policy_comes_from_the_environment_first(monkeypatch):
    monkeypatch.delenv("SSLAB_AUGMENT_NODES", raising=False)
    assert augment_policy(CPU_PROFILE) == "prefer"
    monkeypatch.setenv("SSLAB_AUGMENT_NODES", "require")
    assert augment_policy(CPU_PROFILE) == "require"
    monkeypatch.setenv("SSLAB_AUGMENT_NODES", "cpu-only")
    with pytest.raises(ValueError, match="'cpu-only'.*prefer"):
        augment_policy(CPU_PROFILE)
    with pytest.raises(ValueError, match="augment_nodes"):
        Profile(name="bad", augment_nodes="somewhere")


def test_a_local_results_path_is_refused_on_a_multi_machine_cluster(monkeypatch, tmp_path):
    monkeypatch.delenv(SHARED_ENV, raising=False)
    one_machine = shape(node("10.0.0.1", CPU=2), node("10.0.0.1", "augment", CPU=2))  # e.g. ray.cluster_utils
    many = shape(node("10.0.0.1", CPU=0), node("10.0.0.2", CPU=8))
    # only the head is up yet, but the autoscaler may add machines
    growing = shape(node("10.0.0.1", CPU=0), max_resources={"GPU": 8}, max_nodes=18)
    check_shared_storage(str(tmp_path), one_machine)
    check_shared_storage("s3://bucket/sslab", many)
    for local in (str(tmp_path), f"file://{tmp_path}"):
        with pytest.raises(CannotPlace, match=r"local path.*2 machines.*s3://.*SSLAB_RESULTS_SHARED=1"):
            check_shared_storage(local, many)
    with pytest.raises(CannotPlace, match=r"may grow to 18 machines"):
        check_shared_storage(str(tmp_path), growing)
    monkeypatch.setenv(SHARED_ENV, "1")  # an NFS/EFS mount the user vouches for
    check_shared_storage(str(tmp_path), many)


def test_the_launcher_config_on_a_head_tells_how_far_the_cluster_may_grow(tmp_path):
    from pathlib import Path

    from sslab.engine.placement import launcher_config, launcher_max_nodes

    cluster_yaml = Path(__file__).resolve().parents[2] / "cluster.yaml"
    assert launcher_max_nodes(launcher_config(str(cluster_yaml))) == 18 + 1  # max_workers + the head
    assert launcher_max_nodes(launcher_config(str(tmp_path / "absent.yaml"))) == 0  # a laptop: no launcher


def test_a_fresh_ray_up_cluster_is_planned_by_the_node_types_of_cluster_yaml(tmp_path, monkeypatch):
    """On a `ray up` head with no worker up yet (Ray reports no autoscaler config outside KubeRay),
    the launcher's node types say what may start: GPU and CPU profiles plan by them instead of
    being refused for the 0 GPUs / CPUs up now."""
    from pathlib import Path

    import ray

    from sslab.engine import placement
    from sslab.plan.profiles import get_profile

    cluster_yaml = Path(__file__).resolve().parents[2] / "cluster.yaml"
    types = {t.name: t for t in placement.worker_node_types(placement.launcher_config(str(cluster_yaml)))}
    assert sorted(types) == ["cpu_augment", "gpu_1x", "gpu_4x"]  # the head's type never scales
    assert types["gpu_4x"].resources == {"GPU": 4.0} and types["gpu_4x"].max_workers == 2
    assert types["cpu_augment"].role == "augment"

    home = tmp_path / "head"
    home.mkdir()
    (home / "ray_bootstrap_config.yaml").write_text(cluster_yaml.read_text())
    monkeypatch.setenv("HOME", str(home))
    head_only = [{"NodeID": "h", "Alive": True, "NodeManagerAddress": "10.0.0.1",
                  "Resources": {"sslab_trial": 1000.0}, "Labels": {"sslab.io/role": "head"}}]
    monkeypatch.setattr(ray, "nodes", lambda: head_only)
    shape = placement.cluster_shape()
    assert shape.max_nodes == 19 and shape.max_resources == {"GPU": 8 * 1 + 2 * 4}
    assert shape.has_augment_nodes  # a type the autoscaler may start
    assert max_concurrent_trials(get_profile("cifar"), shape) == 16
    cpu_trials = Profile(name="cpu", num_workers=1, cpus_per_worker=1)
    assert max_concurrent_trials(cpu_trials, shape) == 8 + 2  # one trial per trainer node that may start
    assert augment_remote_args("require", shape) == {"label_selector": {"sslab.io/role": "augment"}}

    monkeypatch.setenv("HOME", str(tmp_path))  # a laptop: no launcher config, nothing may start
    with pytest.raises(CannotPlace, match="needs 1 GPU"):
        max_concurrent_trials(get_profile("cifar"), placement.cluster_shape())
