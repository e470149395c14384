"""Where a study's work runs on a Ray cluster, decided once before any trial starts.

Three kinds of work share a cluster (see ``cluster.yaml``):

- trial drivers (one Tune trial = one small process that launches a
  TorchTrainer) hold the custom resource ``sslab_trial`` instead of a CPU;
  the head node declares it and has no CPU of its own, so it runs drivers and
  nothing else;
- Ray Data's augmentation tasks go to nodes labelled ``sslab.io/role=augment``
  (autoscaled CPU nodes) when the cluster has them, otherwise to any free CPU;
- Train workers never go to augmentation nodes; on GPU profiles they follow
  the GPUs.

The same rules hold on a laptop, where one node carries no label: everything
runs there, and the driver resource is declared by ``ray.init``.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

from sslab.plan.profiles import Profile

#: custom resource a Tune trial's driver holds, so it never takes a CPU that
#: Ray Data's augmentation or the Train workers need (see docs/architecture.md)
TRIAL_RESOURCE = "sslab_trial"


class CannotPlace(ValueError):
    """What a profile asks of the cluster (GPUs, CPUs, nodes, shared storage) it cannot have; the
    message names the fix. Raised before any data is loaded or trial started."""


#: node label naming a node's role in the cluster (cluster.yaml sets it per node type)
ROLE_LABEL = "sslab.io/role"
AUGMENT_ROLE = "augment"
#: where augmentation runs: "prefer" labelled nodes when any is up, "require" them
#: (an autoscaled cluster then starts CPU nodes from zero), or "any" node
AUGMENT_POLICIES = ("prefer", "require", "any")
#: set to 1 when a local results path is a mount every node shares (NFS, EFS, ...)
SHARED_ENV = "SSLAB_RESULTS_SHARED"


@dataclass(frozen=True)
class Node:
    """What placement needs to know of one alive Ray node."""

    node_id: str
    address: str
    resources: dict[str, float]
    labels: dict[str, str]

    @property
    def role(self) -> str:
        return self.labels.get(ROLE_LABEL, "")

    @classmethod
    def from_ray(cls, info: dict[str, Any]) -> "Node":
        return cls(
            node_id=info["NodeID"],
            address=info.get("NodeManagerAddress", ""),
            resources=dict(info.get("Resources", {})),
            labels=dict(info.get("Labels") or {}),
        )


@dataclass(frozen=True)
class NodeType:
    """A worker node type the autoscaler may start (cluster.yaml's ``available_node_types``)."""

    name: str
    #: the resources the type declares; CPUs and memory an instance type brings are detected at
    #: launch and absent here
    resources: dict[str, float]
    labels: dict[str, str]
    max_workers: int

    @property
    def role(self) -> str:
        return self.labels.get(ROLE_LABEL, "")


@dataclass(frozen=True)
class ClusterShape:
    """The nodes up now, and what the autoscaler may still add (from the cluster's launch config)."""

    nodes: list[Node]
    #: largest amount of each resource the autoscaler's node types allow (empty without an autoscaler)
    max_resources: dict[str, float] = field(default_factory=dict)
    #: largest number of nodes the autoscaler's node types allow (0 without an autoscaler)
    max_nodes: int = 0
    #: the worker node types the autoscaler may start (none without an autoscaler)
    node_types: list[NodeType] = field(default_factory=list)

    def total(self, resource: str) -> float:
        return sum(n.resources.get(resource, 0) for n in self.nodes)

    @property
    def has_augment_nodes(self) -> bool:
        """Augmentation has nodes of its own: up now, or a type the autoscaler may start."""
        return any(n.role == AUGMENT_ROLE for n in self.nodes) or any(
            t.role == AUGMENT_ROLE and t.max_workers > 0 for t in self.node_types)


#: where ``ray up`` leaves the launcher's config on the head
LAUNCHER_CONFIG = "~/ray_bootstrap_config.yaml"


def cluster_shape() -> ClusterShape:
    """The connected Ray cluster's shape; an autoscaled cluster that starts at zero workers
    is planned by its node types' maximum (the way Ray Train sizes worker groups).

    Ray reports its autoscaler's config only on some deployments (KubeRay); on the head of a
    ``ray up`` cluster the launcher's own config (``~/ray_bootstrap_config.yaml``) says the same."""
    import ray

    nodes = [Node.from_ray(info) for info in ray.nodes() if info.get("Alive")]
    max_resources, max_nodes = {}, 0
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
        if config is not None:
            max_nodes = sum(max(0, group.max_count) for group in config.node_group_configs)
            max_resources = dict(state.get_max_resources_from_cluster_config() or {})
    except Exception:  # no autoscaler (a laptop, ray.cluster_utils): plan by the nodes that are up
        pass
    launcher = launcher_config()
    node_types = worker_node_types(launcher)
    if not max_nodes:
        max_nodes = launcher_max_nodes(launcher)
    if not max_resources:  # what the worker types may bring at most (the declared resources only)
        for node_type in node_types:
            for resource, amount in node_type.resources.items():
                max_resources[resource] = max_resources.get(resource, 0) + amount * node_type.max_workers
    return ClusterShape(nodes=nodes, max_resources=max_resources, max_nodes=max_nodes, node_types=node_types)


def launcher_config(path: str = LAUNCHER_CONFIG) -> dict[str, Any]:
    """The cluster launcher's config on the head of a ``ray up`` cluster; {} elsewhere."""
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        return {}
    import yaml

    with open(path) as handle:
        return yaml.safe_load(handle) or {}


def worker_node_types(config: dict[str, Any]) -> list[NodeType]:
    """The worker node types of a launcher config (the head's type is not one: it never scales)."""
    head = config.get("head_node_type")
    return [
        NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()}, dict(spec.get("labels") or {}),
                 int(spec.get("max_workers", 0)))
        for name, spec in (config.get("available_node_types") or {}).items()
        if name != head
    ]


def launcher_max_nodes(config: dict[str, Any]) -> int:
    """How many nodes a launcher config allows: its max_workers + the head (0 without a config)."""
    return int(config.get("max_workers", 0)) + 1 if config else 0


def augment_policy(profile: Profile) -> str:
    """The profile's augmentation placement, overridden by ``$SSLAB_AUGMENT_NODES`` (cluster.yaml sets it)."""
    policy = os.environ.get("SSLAB_AUGMENT_NODES") or profile.augment_nodes
    if policy not in AUGMENT_POLICIES:
        raise ValueError(
            f"augmentation placement {policy!r} (SSLAB_AUGMENT_NODES or the profile's augment_nodes) "
            f"is not one of {AUGMENT_POLICIES}"
        )
    return policy


def augment_remote_args(policy: str, cluster: ClusterShape) -> dict[str, Any]:
    """Ray remote arguments for the augmentation tasks (``map_batches``).

    ``require`` on a cluster with no augmentation node and no autoscaler to start one
    would leave every trial waiting forever: it is refused with the fix instead.
    """
    selector = {ROLE_LABEL: AUGMENT_ROLE}
    if policy == "require" and not cluster.has_augment_nodes and cluster.max_nodes <= 1:
        raise CannotPlace(
            f"augmentation must run on nodes labelled {ROLE_LABEL}={AUGMENT_ROLE} (SSLAB_AUGMENT_NODES=require), "
            "but no such node is up and this cluster has no autoscaler to start one; "
            f"start one (ray start --labels {ROLE_LABEL}={AUGMENT_ROLE}) or set SSLAB_AUGMENT_NODES=prefer"
        )
    if policy == "require" or (policy == "prefer" and cluster.has_augment_nodes):
        return {"label_selector": selector}
    return {}


def label_selector(remote_args: dict[str, Any] | None) -> dict[str, str]:
    """The node-label selector in Ray remote args (``augment_remote_args``'s), empty without one."""
    return dict((remote_args or {}).get("label_selector") or {})


@contextmanager
def augment_data_context(remote_args: dict[str, Any] | None) -> Iterator[None]:
    """Ray Data work this process starts inside the block carries the augmentation tasks' label selector
    (``augment_remote_args``), and so does every dataset it creates there (each keeps a copy of the context).

    The study script makes the trials' dataset (``ray.data.from_arrow``), and Ray Data runs a task per
    block to read its metadata: a task of 1 CPU and, without this, no label selector. The head has no
    CPU, so on an autoscaled cluster those tasks wait for nodes, and the autoscaler may start any node
    type that has a CPU for them, GPU machines included (with cluster.yaml's types on the fake cluster of
    tests/engine/test_autoscaling.py, 4 blocks started 2 cpu_augment, 1 gpu_1x and 1 gpu_4x).
    Inside this block they wait for augmentation nodes only. Nothing changes without a label selector
    (policy ``any``, or ``prefer`` with no augmentation node), and the process's DataContext is
    restored on the way out: later Ray Data work of the process (another study, a test) is not pinned.
    """
    selector = label_selector(remote_args)
    if not selector:
        yield
        return
    from ray.data import DataContext

    options = DataContext.get_current().execution_options
    before = options.label_selector
    options.label_selector = {**(before or {}), **selector}
    try:
        yield
    finally:
        options.label_selector = before


#: Train workers run anywhere but on augmentation nodes (a node without the label matches)
TRAIN_LABEL_SELECTOR = {ROLE_LABEL: f"!{AUGMENT_ROLE}"}


def max_concurrent_trials(profile: Profile, cluster: ClusterShape) -> int:
    """How many trials fit at once.

    GPU profiles: the cluster's GPUs (up now, or the most its autoscaler may
    start) divided by the GPUs one trial uses. CPU profiles: the CPUs of nodes
    Train workers may use, divided by the CPUs one trial's workers use, keeping
    one CPU per trial for augmentation unless augmentation nodes do that work.
    """
    workers = max(1, profile.num_workers)
    nodes = cluster.nodes
    if profile.use_gpu:
        gpus = max(cluster.total("GPU"), cluster.max_resources.get("GPU", 0))
        if gpus < workers:
            raise CannotPlace(
                f"profile {profile.name!r} needs {workers} GPU(s) per trial but the cluster has {gpus:g} "
                "(nor may its autoscaler start more); start GPU nodes (ray up cluster.yaml) or use --profile local"
            )
        return int(gpus // workers)
    augment_nodes = cluster.has_augment_nodes
    per_trial = workers * profile.cpus_per_worker + (0 if augment_nodes else 1)
    cpus = sum(n.resources.get("CPU", 0) for n in nodes if n.role != AUGMENT_ROLE)
    # trainer node types the autoscaler may start: their declared CPUs, or (CPUs detected from the
    # instance at launch, unknown here) one trial's worth per node
    cpus += sum(t.max_workers * t.resources.get("CPU", per_trial) for t in cluster.node_types if t.role != AUGMENT_ROLE)
    if cpus < per_trial:
        where = "on nodes that are not augmentation nodes " if augment_nodes else ""
        raise CannotPlace(
            f"profile {profile.name!r} needs {per_trial:g} CPUs per trial "
            f"({workers} Train worker(s) × {profile.cpus_per_worker:g} CPU"
            f"{'' if augment_nodes else ' + 1 for augmentation'}) but the cluster has {cpus:g} {where}; "
            "lower num_workers or add CPUs"
        )
    if profile.worker_placement == "STRICT_SPREAD":
        hosts = sum(1 for n in nodes if n.role != AUGMENT_ROLE and n.resources.get("CPU", 0) >= profile.cpus_per_worker)
        if hosts < workers:
            raise CannotPlace(
                f"profile {profile.name!r} places its {workers} Train workers on different nodes (STRICT_SPREAD) "
                f"but only {hosts} node(s) can host one; add nodes or use worker_placement='SPREAD'"
            )
    return max(1, int(cpus // per_trial))


def is_uri(path: str | os.PathLike) -> bool:
    """``s3://bucket/x``, ``gs://...``, ``file:///...``: storage named by a URI rather than a local path."""
    return "://" in str(path)


def check_shared_storage(root: str | os.PathLike, cluster: ClusterShape) -> None:
    """Refuse a local results path when the study's trials can run on other machines.

    Checkpoints and the results store must be reachable from every node: on a
    multi-machine cluster a local path would leave them scattered over disks
    that vanish with their nodes. A URI (``s3://``...) is fine, and so is a local
    path that ``$SSLAB_RESULTS_SHARED=1`` declares to be a shared mount.
    """
    if is_uri(root) and not str(root).startswith("file://"):
        return
    machines = sorted({n.address for n in cluster.nodes})
    if (len(machines) <= 1 and cluster.max_nodes <= 1) or os.environ.get(SHARED_ENV) == "1":
        return
    spans = (
        f"spans {len(machines)} machines ({', '.join(machines[:4])}{', ...' if len(machines) > 4 else ''})"
        if len(machines) > 1
        else f"may grow to {cluster.max_nodes} machines (autoscaler)"
    )
    raise CannotPlace(
        f"the results root {str(root)!r} is a local path, but this Ray cluster {spans}: checkpoints and results written there "
        "would not reach the other nodes. Set SSLAB_RESULTS (or --results) to shared storage such as "
        f"s3://BUCKET/sslab, or set {SHARED_ENV}=1 if the path is a mount every node shares (NFS, EFS)"
    )


class OrphanedWorkerGroupJanitor:
    """Frees the placement groups of Train runs whose controller was killed.

    When Tune stops a trial early (ASHA, a time budget) it kills the trial's
    process, and with it the Ray Train controller that owns the Train workers'
    placement group. Ray Train's own cleaner does not always remove that group
    (observed with Ray 2.60: one in four ASHA stops left its CPU reserved), and
    on a small cluster the next trial's augmentation then waits forever for
    that CPU. Every ``interval_s`` this removes sslab Train placement groups
    (bundles carrying ``TRAIN_LABEL_SELECTOR``) that have had no live actor
    for ``grace_s``; groups of other users and of running trials are never touched.
    """

    def __init__(self, *, interval_s: float = 10.0, grace_s: float = 30.0):
        self.interval_s, self.grace_s = interval_s, grace_s
        self._unused_since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.removed: list[str] = []
        #: sweeps done, and why any failed (a failed sweep is tried again next round)
        self.sweeps, self.failures = 0, []

    def sweep(self) -> list[str]:
        """One pass; returns the ids of the groups removed."""
        import ray
        from ray._raylet import PlacementGroupID
        from ray.util.placement_group import PlacementGroup, remove_placement_group
        from ray.util.state import list_actors, list_placement_groups

        now = time.monotonic()
        # this driver's cluster, by address: another Ray instance on the machine must not be asked
        address = ray.get_runtime_context().gcs_address
        alive = list_actors(address=address, filters=[("state", "=", "ALIVE")], detail=True, limit=10_000,
                            raise_on_missing_output=False)
        in_use = {actor.placement_group_id for actor in alive if actor.placement_group_id}
        groups = list_placement_groups(address=address, filters=[("state", "=", "CREATED")], detail=True, limit=10_000,
                                       raise_on_missing_output=False)
        removed = []
        for group in groups:
            ours = any((bundle.get("label_selector") or {}) == TRAIN_LABEL_SELECTOR for bundle in group.bundles or [])
            if not ours or group.placement_group_id in in_use:
                self._unused_since.pop(group.placement_group_id, None)
                continue
            if now - self._unused_since.setdefault(group.placement_group_id, now) >= self.grace_s:
                remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group.placement_group_id))))
                self._unused_since.pop(group.placement_group_id)
                removed.append(group.placement_group_id)
        self.removed += removed
        return removed

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep()
                self.sweeps += 1
            except Exception as err:  # the state API may be briefly unavailable (a restarting head): try next round
                self.failures.append(f"{type(err).__name__}: {err}")

    def __enter__(self) -> "OrphanedWorkerGroupJanitor":
        self._thread = threading.Thread(target=self._loop, name="sslab-placement-janitor", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
