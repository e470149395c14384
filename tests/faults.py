"""Real faults for study tests: SIGKILL a trial's process or a Train worker mid-study."""

from __future__ import annotations

import os
import signal
import threading
import time

import pandas as pd
import ray

from sslab.engine.runner import run_study


def read_epochs(root, study: str) -> pd.DataFrame:
    """The study's epochs table as it stands (empty while it is not written yet)."""
    from sslab.results.store import ResultsStore, StoreError

    try:
        return ResultsStore(root, study).read("epochs")
    except (StoreError, OSError, ValueError):
        return pd.DataFrame()


def wait_for(condition, *, timeout: float = 240, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise TimeoutError("condition not met in time")


def actors(class_name: str, *, alive: bool = False) -> list:
    """Actors of a class in this driver's cluster (asked by address: another Ray instance on the
    machine must not answer). Classes may come qualified, e.g. Tune's
    ``wrap_function.<locals>.ImplicitFunc``."""
    from ray.util.state import list_actors

    filters = [("state", "=", "ALIVE")] if alive else None
    found = list_actors(address=ray.get_runtime_context().gcs_address, filters=filters, limit=10_000, detail=True)
    return [a for a in found if a.class_name.split(".")[-1] == class_name]


def run_study_killing(study, profile, root, *, victim: str, after_epoch: int):
    """Run ``study``; once ``after_epoch`` is checkpointed and reported, SIGKILL one live process
    of the actor class ``victim``. Returns the trials and what was seen: ``before``, the epochs
    reported before the kill, and ``killed_pid``."""
    seen: dict = {}

    def kill() -> None:
        wait_for(lambda: not (epochs := read_epochs(root, study.name)).empty and epochs.epoch.max() >= after_epoch)
        seen["before"] = read_epochs(root, study.name)
        process = next(a for a in actors(victim, alive=True) if a.pid)
        os.kill(process.pid, signal.SIGKILL)
        seen["killed_pid"] = process.pid

    killer = threading.Thread(target=kill, daemon=True)
    killer.start()
    trials = run_study(study, profile=profile, root=root, quiet=True)
    killer.join(timeout=5)
    assert "killed_pid" in seen, f"no {victim} process was killed"
    return trials, seen
