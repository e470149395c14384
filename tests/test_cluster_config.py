"""cluster.yaml (and kuberay.yaml) pass Ray's own validation and keep sslab's placement rules.

Before ``ray up`` starts a machine, Ray fills the provider's defaults into the
config (``prepare_config``) and validates the result (``validate_config``: the
JSON schema ``ray/autoscaler/ray-schema.json`` plus a few cross-field rules).
These tests run the same two steps offline, with no cloud account and no Ray
cluster, then check what the platform relies on: a head that runs trial drivers
only (``sslab_trial``, no CPU), augmentation nodes and training nodes told apart
by the ``sslab.io/role`` label, workers that scale from zero, the image pinned to
the installed Ray, one results root for every node, token authentication, no
credentials and no open ports. For kuberay.yaml, Ray's own KubeRay translation
(the config the in-cluster autoscaler derives from the RayCluster) is checked the
same way.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray._private.label_utils import validate_node_label_syntax, validate_node_labels
from ray.autoscaler._private.util import prepare_config, validate_config

from sslab.engine.placement import AUGMENT_ROLE, ROLE_LABEL, TRIAL_RESOURCE

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
KUBERAY_YAML = ROOT / "kuberay.yaml"

TRAIN_ROLE = "train"
#: GPUs of the instance types a train node type may use (AWS specifications)
GPUS_PER_INSTANCE = {"g5.xlarge": 1, "g5.2xlarge": 1, "g5.4xlarge": 1, "g5.8xlarge": 1,
                     "g5.12xlarge": 4, "g5.24xlarge": 4, "g5.48xlarge": 8,
                     "g6.xlarge": 1, "g6.2xlarge": 1, "g6.12xlarge": 4, "p4d.24xlarge": 8}
#: EC2 families with accelerators (g*, p*, Inferentia, Trainium, Gaudi)
ACCELERATOR_FAMILY = re.compile(r"^(g\d|p\d|inf\d|trn\d|dl\d)")
#: the Ray image convention: rayproject/ray:<ray version>-py<major><minor>-gpu
RAY_IMAGE = re.compile(r"^rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py3(?P<minor>\d+)-gpu$")
#: credential material that must never be committed
CREDENTIAL_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"aws_secret_access_key", re.IGNORECASE),
    re.compile(r"aws_access_key_id", re.IGNORECASE),
    re.compile(r"aws_session_token", re.IGNORECASE),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"RAY_AUTH_TOKEN\s*[=:]\s*\S"),
]
OPEN_TO_INTERNET = ("0.0.0.0/0", "::/0")


def load_cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def validate_like_ray_up(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` does to a config before touching the cloud (minus the AWS look-ups)."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def strings(obj: Any) -> Iterator[str]:
    """Every key and string value of a parsed YAML document (comments are not in it)."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from strings(item)
    elif isinstance(obj, str):
        yield obj


def node_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["available_node_types"]


def worker_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: t for name, t in node_types(config).items() if name != config["head_node_type"]}


def types_with_role(config: dict[str, Any], role: str) -> set[str]:
    return {name for name, t in node_types(config).items() if t.get("labels", {}).get(ROLE_LABEL) == role}


# --- Ray's own validation ----------------------------------------------------------------


def test_cluster_yaml_passes_ray_validation():
    config = load_cluster()
    validate_config(config)  # the file as written (it carries every field Ray requires)
    prepared = validate_like_ray_up(config)
    assert prepared["head_node_type"] == "head"
    assert prepared["available_node_types"]["head"]["max_workers"] == 0


def _unknown_top_level_key(c):
    c["sslab_results"] = "s3://bucket/sslab"


def _unknown_node_type_key(c):
    c["available_node_types"]["gpu_1x"]["gpus"] = 1


def _fractional_resource(c):
    c["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5


def _negative_resource(c):
    c["available_node_types"]["cpu_augment"]["resources"]["CPU"] = -1


def _non_string_label(c):
    c["available_node_types"]["cpu_augment"]["labels"][ROLE_LABEL] = 1


def _head_type_not_declared(c):
    c["head_node_type"] = "ray.head.default"


def _min_workers_above_global_max(c):
    c["max_workers"] = 2
    c["available_node_types"]["cpu_augment"]["min_workers"] = 2
    c["available_node_types"]["gpu_1x"]["min_workers"] = 1


@pytest.mark.parametrize(
    ("break_config", "error", "fragment"),
    [
        (_unknown_top_level_key, jsonschema.ValidationError, "'sslab_results' was unexpected"),
        (_unknown_node_type_key, jsonschema.ValidationError, "'gpus' was unexpected"),
        (_fractional_resource, jsonschema.ValidationError, "0.5 is not of type 'integer'"),
        (_negative_resource, jsonschema.ValidationError, "-1 is less than the minimum of 0"),
        (_non_string_label, jsonschema.ValidationError, "1 is not of type 'string'"),
        (_head_type_not_declared, ValueError, "`head_node_type` must be one of `available_node_types`"),
        # Ray checks the sum of min_workers against the global max_workers; it does not
        # compare a node type's own min_workers and max_workers.
        (_min_workers_above_global_max, ValueError, "smaller than the sum of `min_workers`"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_ray_rejects_broken_variants(break_config, error, fragment):
    config = load_cluster()
    break_config(config)
    with pytest.raises(error, match=re.escape(fragment)):
        validate_like_ray_up(config)


# --- what sslab relies on ----------------------------------------------------------------


def test_head_runs_trial_drivers_only():
    head = node_types(load_cluster())["head"]
    resources = head["resources"]
    assert resources["CPU"] == 0, "the head must offer no CPU: training and augmentation stay off it"
    assert resources.get("GPU", 0) == 0
    assert isinstance(resources[TRIAL_RESOURCE], int) and resources[TRIAL_RESOURCE] >= 1
    assert ACCELERATOR_FAMILY.match(head["node_config"]["InstanceType"]) is None


def test_roles_are_labelled_per_node_type():
    config = load_cluster()
    for name, node_type in node_types(config).items():
        labels = node_type.get("labels", {})
        validate_node_label_syntax(labels)  # what `ray start --labels` accepts
        validate_node_labels(labels)  # no reserved ray.io/ prefix
        assert ROLE_LABEL in labels, f"node type {name!r} has no {ROLE_LABEL} label"
    assert types_with_role(config, "head") == {"head"}
    assert types_with_role(config, AUGMENT_ROLE) == {"cpu_augment"}
    assert types_with_role(config, TRAIN_ROLE) == {"gpu_1x", "gpu_4x"}


def test_augment_nodes_are_cpu_only_and_train_nodes_have_gpus():
    config = load_cluster()
    for name in types_with_role(config, AUGMENT_ROLE):
        node_type = node_types(config)[name]
        assert node_type["resources"].get("GPU", 0) == 0
        assert ACCELERATOR_FAMILY.match(node_type["node_config"]["InstanceType"]) is None, name
    for name in types_with_role(config, TRAIN_ROLE):
        node_type = node_types(config)[name]
        instance = node_type["node_config"]["InstanceType"]
        assert instance in GPUS_PER_INSTANCE, f"{name}: unknown GPU instance type {instance}"
        assert node_type["resources"]["GPU"] == GPUS_PER_INSTANCE[instance], name


def test_workers_scale_from_zero_on_spot():
    config = load_cluster()
    assert worker_types(config)
    for name, node_type in worker_types(config).items():
        assert node_type["min_workers"] == 0, name
        assert node_type["max_workers"] >= 1, name
        assert node_type["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot", name
        assert "worker_setup_commands" not in node_type, f"{name} would replace the common setup"
    head = node_types(config)["head"]
    assert "InstanceMarketOptions" not in head["node_config"], "the head must not be a spot instance"
    assert config["idle_timeout_minutes"] > 0


def test_docker_image_is_pinned_to_the_installed_ray():
    docker = load_cluster()["docker"]
    match = RAY_IMAGE.match(docker["image"])
    assert match, docker["image"]
    assert match["ray"] == ray.__version__
    assert int(match["minor"]) >= 11  # sslab requires Python >= 3.11
    assert not {"head_image", "worker_image"} & set(docker), "head and workers run the same image"
    for name, node_type in node_types(load_cluster()).items():
        assert "docker" not in node_type, f"{name} overrides the image"


def test_no_credentials_in_the_file():
    text = CLUSTER_YAML.read_text()
    for pattern in CREDENTIAL_PATTERNS:
        assert not pattern.search(text), pattern.pattern
    config = load_cluster()
    assert "aws_credentials" not in config["provider"]
    assert "ssh_private_key" not in config.get("auth", {})
    for node_type in node_types(config).values():
        assert "IamInstanceProfile" in node_type["node_config"], "S3 access goes through an instance profile"


def test_source_is_installed_never_shipped_as_working_dir():
    config = load_cluster()
    assert not any("working_dir" in s for s in strings(config))
    mounts = config["file_mounts"]
    source = [remote for remote, local in mounts.items() if local == "."]
    assert source == ["~/sslab-src"]
    for excluded in ("/.venv", "/results", "**/.git", "*.egg-info", "__pycache__"):
        assert excluded in config["rsync_exclude"]
    assert ".gitignore" in config["rsync_filter"]
    installs = [c for c in config["setup_commands"] if c.startswith("pip install") and "sslab-src" in c]
    assert installs == ["pip install ~/sslab-src"], "a regular (non-editable) install on every node"


def test_every_node_installs_a_torch_built_for_a_pinned_cuda_before_sslab_and_gpu_nodes_check_it():
    """PyPI's default torch targets the newest CUDA, whose driver a GPU image may lack: the nodes
    install torch from PyTorch's index for one CUDA version first (pip then keeps it), and a GPU
    node whose driver cannot run it fails ``ray up`` with the versions named."""
    commands = load_cluster()["setup_commands"]
    torch_at = next(i for i, c in enumerate(commands) if c.startswith("pip install") and "torch" in c)
    sslab_at = commands.index("pip install ~/sslab-src")
    assert torch_at < sslab_at
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu\d+\b", commands[torch_at])
    check = commands[sslab_at + 1]
    assert "nvidia-smi" in check and "torch.cuda.is_available()" in check and "sys.exit" in check
    compile(check[check.index('-c "') + 4:check.rindex('"')], "<gpu check>", "exec")  # valid Python
    assert "download.pytorch.org/whl/cu" in KUBERAY_YAML.read_text()  # the image's build does the same


def test_results_root_is_set_once_for_every_node():
    config = load_cluster()
    assignments = [m for s in strings(config) for m in re.finditer(r"SSLAB_RESULTS=(\S+?)['\"\s]", s + " ")]
    assert len(assignments) == 1, "SSLAB_RESULTS must be set in exactly one place"
    assert "://" in assignments[0].group(1), "the results root must be storage every node reaches (s3://...)"
    common = " ".join(config["setup_commands"])  # run on the head and on every worker
    for setting in ("SSLAB_RESULTS=", "SSLAB_DATA=", "SSLAB_AUGMENT_NODES=require", "RAY_AUTH_MODE=token"):
        assert setting in common, setting
    assert "sslab_env" in common and ".bashrc" in common, "the settings must reach Ray's login shells"


def test_token_authentication_stays_on():
    config = load_cluster()
    text = " ".join(strings(config))
    assert "RAY_AUTH_MODE=token" in text
    assert "RAY_AUTH_MODE=disabled" not in text
    # The token travels as a file from the launching machine (ray get-auth-token --generate)
    # to Ray's default token path on every node; its value is never in the config.
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_no_port_is_opened_to_the_internet():
    config = load_cluster()
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    for rule in rules:
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
        ranges += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        assert not set(ranges) & set(OPEN_TO_INTERNET), rule
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    assert "0.0.0.0" not in start
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in start


# --- kuberay.yaml ---------------------------------------------------------------------------

kuberay = pytest.mark.skipif(not KUBERAY_YAML.exists(), reason="no kuberay.yaml")


def load_kuberay() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(KUBERAY_YAML.read_text()) if doc]


def ray_cluster() -> dict[str, Any]:
    clusters = [doc for doc in load_kuberay() if doc.get("kind") == "RayCluster"]
    assert len(clusters) == 1
    return clusters[0]


def ray_pod_specs(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster["spec"]
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def autoscaler_view(cluster: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling config Ray's KubeRay autoscaler derives from the CR (and validates)."""
    from ray.autoscaler._private.kuberay.autoscaling_config import (
        _derive_autoscaling_config_from_ray_cr,
    )

    cluster = copy.deepcopy(cluster)
    cluster["metadata"].setdefault("namespace", "default")
    return _derive_autoscaling_config_from_ray_cr(cluster)


@kuberay
def test_kuberay_manifest_is_a_ray_cluster_pinned_to_the_installed_ray():
    cluster = ray_cluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    assert cluster["spec"]["rayVersion"] == ray.__version__
    for pod in ray_pod_specs(cluster):
        for container in pod["containers"] + pod.get("initContainers", []):
            tag = container["image"].rsplit(":", 1)[1]
            assert ray.__version__ in tag, container["image"]
    # the sslab image is built on the pinned Ray image (instructions in the file's header)
    bases = re.findall(r"FROM rayproject/ray:(\S+)", KUBERAY_YAML.read_text())
    assert bases and all(b.startswith(f"{ray.__version__}-") for b in bases)


@kuberay
def test_kuberay_head_and_groups_as_the_autoscaler_sees_them():
    cluster = ray_cluster()
    assert cluster["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    view = autoscaler_view(cluster)
    types = view["available_node_types"]
    head = types[view["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    assert head["resources"][TRIAL_RESOURCE] >= 1
    roles = {name: t["labels"].get(ROLE_LABEL) for name, t in types.items()}
    assert roles[view["head_node_type"]] == "head"
    augment = [n for n, r in roles.items() if r == AUGMENT_ROLE]
    train = [n for n, r in roles.items() if r == TRAIN_ROLE]
    assert augment and train
    for name in augment:
        assert types[name]["resources"].get("GPU", 0) == 0
    for name in train:
        assert types[name]["resources"]["GPU"] >= 1
    for name in augment + train:
        assert types[name]["min_workers"] == 0


@kuberay
def test_kuberay_results_root_once_token_auth_and_no_secrets():
    docs = load_kuberay()
    text = KUBERAY_YAML.read_text()
    config_maps = [d for d in docs if d["kind"] == "ConfigMap"]
    defined = [cm for cm in config_maps if "SSLAB_RESULTS" in cm.get("data", {})]
    assert len(defined) == 1
    assert "://" in defined[0]["data"]["SSLAB_RESULTS"]
    assert defined[0]["data"]["SSLAB_AUGMENT_NODES"] == "require"
    assert sum("SSLAB_RESULTS" == s for d in docs for s in strings(d)) == 1
    env_name = defined[0]["metadata"]["name"]
    cluster = ray_cluster()
    for pod in ray_pod_specs(cluster):
        for container in pod["containers"]:
            refs = [e["configMapRef"]["name"] for e in container.get("envFrom", []) if "configMapRef" in e]
            assert env_name in refs, container["name"]
    assert cluster["spec"]["authOptions"]["mode"] == "token"
    assert cluster["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    assert not any("working_dir" in s for d in docs for s in strings(d))
    for pattern in CREDENTIAL_PATTERNS:
        assert not pattern.search(text), pattern.pattern
