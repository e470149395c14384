"""What the study tests share: the real CIFAR-10 archive, and a profile small enough for a test.

CI sets ``SSLAB_REQUIRE_DATA=1`` (``.ci/run``): there a missing archive or test dependency fails
the tests that need it, with the data loader's or the import's message, instead of skipping them
and passing with nothing tested.
"""

import os
from pathlib import Path

import pytest

from sslab.plan.profiles import Profile

ARCHIVE = Path(os.environ.get("SSLAB_DATA", "~/.cache/sslab/data")).expanduser() / "cifar10-jpg.tar.gz"
REQUIRED = os.environ.get("SSLAB_REQUIRE_DATA") == "1"
needs_cifar = pytest.mark.skipif(not ARCHIVE.exists() and not REQUIRED,
                                 reason=f"CIFAR-10 archive not found at {ARCHIVE} (set SSLAB_DATA)")



def importorskip_unless_required(module: str):
    """``pytest.importorskip``, except in CI, where a missing test dependency is a failure."""
    if REQUIRED:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


#: trials train in their own process (num_workers=0), as the local profile's do
SMALL = Profile(
    name="small", train_subset=200, test_subset=100, width=8, epochs=2, batch_size=50,
    method_defaults={"base_lr": 0.05, "lr_scaling": "none", "warmup_epochs": 0},
    num_workers=0, knn_k=10, probe_epochs=5, invariance_samples=20, monitor_images=100,
)


def trial_name(method: str, point: dict, seed: int) -> str:
    """The readable part of the id of the trial of ``method`` at ``point`` (floats as the config
    holds them) with ``seed``: its id without the specification's hash (``spec.name_of``)."""
    parts = [f"{k}={v!r}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(point.items())]
    return "-".join([method, *parts, f"seed={seed}"])


def by_name(frame):
    """A trials (or epochs) table indexed by the readable part of its trial ids."""
    from sslab.plan.spec import name_of

    return frame.set_index(frame["trial_id"].map(name_of).rename("name"))


def run_in_local_ray(study, profile, root):
    """``study`` run to the end once (quietly) in a local Ray of 2 CPUs, started for it and shut down
    after unless one is already up (what reads the store afterwards needs no Ray): its trials."""
    import ray

    from sslab.engine.placement import TRIAL_RESOURCE
    from sslab.engine.runner import run_study

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, resources={TRIAL_RESOURCE: 10}, include_dashboard=True, log_to_driver=False)
    try:
        return run_study(study, profile=profile, root=root, quiet=True)
    finally:
        if started:
            ray.shutdown()
