"""A Ray cluster on this machine whose worker nodes Ray's real autoscaler starts and stops, with the
node types of the repository's ``cluster.yaml``.

It is ``ray.cluster_utils.AutoscalingCluster`` (Ray's fake multi-node provider, autoscaler v2)
without its ``ray stop --force``, which would kill every Ray process on the machine, other
users' clusters included: the head is started with ``ray start --head`` on free ports and a
temporary folder of its own, every process of the cluster carries a marker in its environment
(the head's processes, the fake nodes the autoscaler starts from the head's monitor, and every
worker process), and ``shutdown`` ends exactly the processes that carry it.

How cluster.yaml maps to the fake cluster (``fake_node_types``):

- the head keeps its resources (``CPU: 0``, ``sslab_trial``) and its labels; its type is named
  ``ray.head.default``, the name the fake provider gives the head it did not launch;
- each worker type keeps its name, labels, ``min_workers`` and ``max_workers`` (capped, so that
  this machine stays usable);
- CPU counts detected from the instance become 1 CPU per node; ``GPU: n`` becomes 1 CPU and
  ``fake_gpu: n`` (the fake nodes have no GPU: training runs on CPU, and the stand-in resource
  keeps the GPU node types distinct in the autoscaler's view and in ``ray.nodes()``);
- ``idle_timeout_minutes`` is read and replaced by the caller's (seconds, not minutes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[2] / "cluster.yaml"
#: stands in for the GPUs of cluster.yaml's GPU node types
FAKE_GPU = "fake_gpu"
#: the type name the fake provider gives the head (it is not launched by the autoscaler)
FAKE_HEAD_TYPE = "ray.head.default"
#: marker in the environment of every process of one FakeAutoscalingCluster
MARKER = "SSLAB_FAKE_AUTOSCALING_CLUSTER"
#: how autoscaler v2 logs a launch in its event log (ray.autoscaler.v2.event_logger)
LAUNCH = re.compile(r"Adding (?P<count>\d+) node\(s\) of type (?P<type>\S+)\.")


def read_cluster_yaml(path: str | os.PathLike = CLUSTER_YAML) -> dict[str, Any]:
    with open(path) as handle:
        return yaml.safe_load(handle)


def fake_node_types(cluster: dict[str, Any], *, max_workers_cap: int, object_store_bytes: int) -> dict[str, Any]:
    """cluster.yaml's ``available_node_types`` as the fake provider's, head included (see the module doc)."""
    types: dict[str, Any] = {}
    for name, spec in cluster["available_node_types"].items():
        declared = dict(spec.get("resources") or {})
        labels = dict(spec.get("labels") or {})
        if name == cluster["head_node_type"]:
            types[FAKE_HEAD_TYPE] = {"resources": declared, "labels": labels, "node_config": {}, "max_workers": 0}
            continue
        resources = {key: value for key, value in declared.items() if key not in ("CPU", "GPU")}
        resources["CPU"] = 1  # "detected from the instance": one CPU of this machine per fake node
        if declared.get("GPU"):
            resources[FAKE_GPU] = declared["GPU"]
        resources["object_store_memory"] = object_store_bytes
        types[name] = {
            "resources": resources,
            "labels": labels,
            "node_config": {},
            "min_workers": spec.get("min_workers", 0),
            "max_workers": min(spec["max_workers"], max_workers_cap),
        }
    return types


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


class FakeAutoscalingCluster:
    """cluster.yaml's node types on Ray's fake multi-node provider, started and ended without ``ray stop``."""

    def __init__(self, cluster: dict[str, Any], *, idle_timeout_s: float, max_workers_cap: int = 2,
                 object_store_bytes: int = 150 * 1024**2):
        self.cluster = cluster
        self.node_types = fake_node_types(cluster, max_workers_cap=max_workers_cap, object_store_bytes=object_store_bytes)
        self.head = self.node_types.pop(FAKE_HEAD_TYPE)
        self.idle_timeout_s = idle_timeout_s
        self.object_store_bytes = object_store_bytes
        self.token = uuid.uuid4().hex
        self.address: str | None = None
        self.temp_dir: str | None = None

    def autoscaling_config(self, gcs_address: str) -> dict[str, Any]:
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        head = {**self.head, "resources": dict(self.head["resources"])}
        return {
            "cluster_name": f"{self.cluster['cluster_name']}-fake",
            "max_workers": min(self.cluster["max_workers"], sum(t["max_workers"] for t in self.node_types.values())),
            "upscaling_speed": self.cluster.get("upscaling_speed", 1.0),
            "idle_timeout_minutes": self.idle_timeout_s / 60,  # overrides cluster.yaml's idle_timeout_minutes
            "provider": {
                # "external" with the fake provider's class: the same provider; Ray's wheel lacks the
                # fake_multinode type's default config (fake_multi_node/example.yaml), "external" needs none
                "type": "external",
                "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                "use_node_id_as_ip": True,
                "disable_node_updaters": True,
                "disable_launch_config_check": True,
                "launch_multiple": True,
                "head_node_id": FAKE_HEAD_NODE_ID,
                "gcs_address": gcs_address,
            },
            "auth": {"ssh_user": "ubuntu"},
            "available_node_types": {FAKE_HEAD_TYPE: head, **self.node_types},
            "head_node_type": FAKE_HEAD_TYPE,
            "docker": {},
            "file_mounts": {},
            "cluster_synced_files": [],
            "file_mounts_sync_continuously": False,
            "initialization_commands": [],
            "setup_commands": [],
            "head_setup_commands": [],
            "worker_setup_commands": [],
            "head_start_ray_commands": [],
            "worker_start_ray_commands": [],
        }

    def start(self) -> str:
        """Start the head (and with it the autoscaler); returns the GCS address."""
        import ray
        from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

        ip = ray._private.services.get_node_ip_address()
        port = free_port()
        gcs_address = f"{ip}:{port}"
        # short: Ray's Unix sockets live under it (107 characters at most)
        self.temp_dir = tempfile.mkdtemp(prefix="sslab-as-", dir="/tmp")
        config_path = os.path.join(self.temp_dir, "autoscaling.json")
        with open(config_path, "w") as handle:
            json.dump(self.autoscaling_config(gcs_address), handle)
        resources = dict(self.head["resources"])
        cpus = resources.pop("CPU", 0)
        labels = ",".join(f"{key}={value}" for key, value in self.head["labels"].items())
        command = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--head",
            f"--port={port}",
            f"--node-ip-address={ip}",
            f"--temp-dir={self.temp_dir}",
            f"--autoscaling-config={config_path}",
            f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources)}",
            f"--labels={labels}",
            f"--object-store-memory={self.object_store_bytes * 2}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
            f"--ray-client-server-port={free_port()}",
            "--disable-usage-stats",
        ]
        env = {
            **os.environ,
            MARKER: self.token,
            # what AutoscalingCluster.start sets (autoscaler v2: labels are scheduled by it only)
            "AUTOSCALER_UPDATE_INTERVAL_S": "1",
            "RAY_FAKE_CLUSTER": "1",
            "RAY_enable_autoscaler_v2": "1",
            "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
            "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
            "RAY_USAGE_STATS_ENABLED": "0",
            # `ray start --head` turns token authentication on when ~/.ray/auth_token exists; this
            # cluster is local to the machine and its drivers connect without a token
            "RAY_AUTH_MODE": "disabled",
        }
        env.pop("RAY_ADDRESS", None)
        try:
            subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=120)
        except subprocess.CalledProcessError as err:
            self.shutdown()
            raise RuntimeError(f"ray start failed:\n{err.stdout}\n{err.stderr}") from err
        except BaseException:
            self.shutdown()
            raise
        self.address = gcs_address
        return gcs_address

    def autoscaler_events(self) -> list[str]:
        """The messages of the autoscaler's event log, oldest first: every launch ("Adding 1 node(s) of
        type gpu_1x."), termination and infeasible demand it decided, including those of nodes that
        came and went between two looks at the cluster."""
        if not self.temp_dir:
            return []
        path = Path(self.temp_dir, "session_latest", "logs", "events", "event_AUTOSCALER.log")
        messages = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    messages.append(json.loads(line)["message"])
                except (ValueError, KeyError):  # a line being written
                    continue
        return messages

    def launched_node_types(self) -> list[str]:
        """The type of every worker node the autoscaler launched so far, in launch order."""
        launched = []
        for message in self.autoscaler_events():
            found = LAUNCH.fullmatch(message.strip())
            if found:
                launched += [found["type"]] * int(found["count"])
        return launched

    def processes(self) -> dict[int, dict[str, str]]:
        """Every live process of this cluster (marked in its environment) and its environment."""
        return {pid: env for pid, env in _processes().items() if env.get(MARKER) == self.token and pid != os.getpid()}

    def node_processes(self, node_id: str) -> list[int]:
        """The processes of one fake worker node (its raylet, agents and workers)."""
        return [pid for pid, env in self.processes().items() if env.get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id]

    def kill_node(self, node_id: str) -> list[int]:
        """SIGKILL every process of a worker node at once, as when its machine disappears."""
        victims = self.node_processes(node_id)
        if not victims:
            raise RuntimeError(f"no process of node {node_id} found")
        _signal(victims, signal.SIGKILL)
        _wait_gone(victims, timeout=10)
        return victims

    def shutdown(self, timeout: float = 5) -> None:
        """End this cluster's processes only (SIGTERM, then SIGKILL), and check that none is left."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            left = list(self.processes())
            _signal(left, sig)
            _wait_gone(left, timeout=wait)
        left = list(self.processes())
        if self.temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        if left:
            raise RuntimeError(f"processes of the fake cluster still alive: {left}")


def _processes() -> dict[int, dict[str, str]]:
    """Live (not zombie) processes of this machine and their environments, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                if handle.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            with open(f"/proc/{entry}/environ", "rb") as handle:
                raw = handle.read()
        except OSError:  # gone, or not ours to read
            continue
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        found[int(entry)] = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in env.items()}
    return found


def _signal(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _wait_gone(pids, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        current = _processes()
        alive = {pid for pid in alive if pid in current}
        if alive:
            time.sleep(0.2)
