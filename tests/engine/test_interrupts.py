"""Ctrl-C at five points of a study's life (during ``ray.init``, data loading, the random-init
baselines, a trial, the summary): exit 130 with one line saying what is finished and the command
that resumes, no traceback and no hint at Ray's ``Tuner.restore``; then that same command finishes
the study with nothing lost and nothing run twice.

Each study runs as a real command (``tests/engine/interrupt_driver.py``, through ``cli.run``)
in its own process, which sends itself a real SIGINT inside the step named by
``SSLAB_TEST_INTERRUPT_AT``; the rerun is the command the interrupted run printed, without it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from small import by_name, needs_cifar, trial_name
from sslab.results.store import ResultsStore

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DRIVER = HERE / "interrupt_driver.py"
STUDY = "interrupted"
PLANNED = sorted(trial_name("pirl", {"loss_weight": w}, 0) for w in (0.0, 1.0))
POINTS = ("ray_init", "data", "baselines", "trial", "summary")

#: "<study>: interrupted; <what is finished>; the same command resumes: <command>"
ONE_LINE = re.compile(rf"^{STUDY}: interrupted; (?P<finished>[^;]+); the same command resumes: (?P<command>.+)$")


def _env(point: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SSLAB_TEST_INTERRUPT_AT", "RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_DATA_DISABLE_PROGRESS_BARS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])))
    if point:
        env["SSLAB_TEST_INTERRUPT_AT"] = point
    return env


def _run(argv: list[str], point: str | None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, env=_env(point), capture_output=True, text=True, timeout=300)


def _shown(run: subprocess.CompletedProcess) -> str:
    return f"exit {run.returncode}\n--- stdout ---\n{run.stdout[-4000:]}\n--- stderr ---\n{run.stderr[-6000:]}"


def _table(root: Path, name: str) -> pd.DataFrame:
    """A table of the study's store as the store reads it (whatever its files' layout)."""
    table = ResultsStore(root, STUDY).read(name)
    return pd.DataFrame(columns=["trial_id"]) if table.empty else table


@pytest.mark.slow
@needs_cifar
@pytest.mark.parametrize("point", POINTS)
def test_ctrl_c_says_one_line_and_the_same_command_finishes_the_study(point, tmp_path):
    command = [sys.executable, str(DRIVER.relative_to(REPO)), "--results", str(tmp_path), "--profile", "small"]

    interrupted = _run(command, point)
    assert f"[interrupt_driver] SIGINT during {point}" in interrupted.stdout, _shown(interrupted)
    assert interrupted.returncode == 130, _shown(interrupted)
    lines = [line for line in interrupted.stderr.splitlines() if line.strip()]
    assert lines, _shown(interrupted)
    print(f"{point}: {lines[-1]}")  # (shown with -rP)
    said = ONE_LINE.match(lines[-1])
    assert said, _shown(interrupted)
    assert "Traceback" not in interrupted.stderr and "Traceback" not in interrupted.stdout, _shown(interrupted)
    assert "Tuner.restore" not in interrupted.stderr + interrupted.stdout, _shown(interrupted)
    assert sum("interrupted;" in line for line in lines) == 1, _shown(interrupted)
    # the command it names is the one that was interrupted, as the user would type it again
    resume = shlex.split(said["command"])
    assert resume[0] == "python" and resume[1:] == command[1:], said["command"]

    before = _table(tmp_path, "trials")
    before_epochs = _table(tmp_path, "epochs")
    if point in ("ray_init", "data", "baselines", "trial"):
        assert before.empty, before  # nothing had finished: the line must not claim otherwise
        # (interrupted before the store knew the study: nothing was finished)
        assert said["finished"] in ("nothing was finished yet",
                                    "0 of 2 trial(s) of this setting are finished and recorded"), lines[-1]
    if point == "trial":  # its first epoch was reported (and written) before the Ctrl-C
        assert not before_epochs.empty and sorted(before_epochs.epoch) == [0], before_epochs
    if point == "summary":  # every trial had finished: the line says so, and the rerun has nothing to run
        assert said["finished"] == "2 of 2 trial(s) of this setting are finished and recorded", lines[-1]
        assert sorted(by_name(before).index) == PLANNED and (before.status == "ok").all(), before

    # the same command, in a fresh process, without the interrupt: it takes over the dead run's lock
    rerun = _run([sys.executable, *resume[1:]], None)
    assert rerun.returncode == 0, _shown(rerun)
    assert "Traceback" not in rerun.stderr, _shown(rerun)

    trials = _table(tmp_path, "trials")
    assert sorted(by_name(trials).index) == PLANNED, trials  # no gap, no duplicate
    assert trials.trial_id.is_unique, trials.trial_id.tolist()
    assert (trials.status == "ok").all(), trials.error.tolist()
    epochs = _table(tmp_path, "epochs")
    per_trial = epochs.groupby(epochs.trial_id).epoch.apply(sorted)
    assert sorted(per_trial.index) == sorted(trials.trial_id) and all(e == [0, 1] for e in per_trial), per_trial
    baselines = _table(tmp_path, "baselines")
    assert len(baselines) == 1 and baselines.seed.tolist() == [0], baselines  # one random-init baseline, once

    if not before.empty:  # finished before the Ctrl-C: kept, not run again
        kept = by_name(trials).loc[by_name(before).index]
        assert list(kept.finished_at) == list(by_name(before).finished_at), (before, trials)
    if point == "trial":  # the trial interrupted after its first epoch resumed from its checkpoint
        resumed = trials.set_index("trial_id").loc[before_epochs.trial_id.iloc[0]]
        assert resumed.restarts >= 1, trials
        first = epochs[(epochs.trial_id == resumed.name) & (epochs.epoch == 0)]
        assert first.loss.tolist() == before_epochs.loss.tolist()  # restored, not trained again
        assert f"resuming {resumed.name} from its checkpoint after epoch 1" in rerun.stdout, _shown(rerun)
    if point == "summary":
        assert "0 to run" in rerun.stdout or "2 already in the results store" in rerun.stdout, _shown(rerun)
