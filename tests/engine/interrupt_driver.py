"""A study's command line for ``test_interrupts.py``: ``python tests/engine/interrupt_driver.py
--results ROOT --profile small`` runs a two-trial study through ``cli.run``, as a study script
would. With ``SSLAB_TEST_INTERRUPT_AT`` set to one of ``POINTS`` the process sends itself a real
SIGINT (Ctrl-C) inside that step of the study's life; without it, it is the same command, which
must then finish the study.

The point is chosen by the environment, not a flag, so that the command ``run`` prints to resume
is exactly the command that was interrupted.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared helpers (small.py)

from small import SMALL  # noqa: E402
from sslab import cli  # noqa: E402
from sslab.plan import profiles  # noqa: E402
from sslab.engine import runner  # noqa: E402
from sslab.plan.study import Study  # noqa: E402

STUDY = Study(name="interrupted", method="pirl", grid={"loss_weight": [0.0, 1.0]}, base={"num_negatives": 64})

#: where the process interrupts itself: "ray_init", "data", "baselines", "trial", "summary"
POINTS = ("ray_init", "data", "baselines", "trial", "summary")
AT = os.environ.get("SSLAB_TEST_INTERRUPT_AT")

#: after the step itself, how long the patched step waits for the interrupt (it never waits this long)
NEVER = 120


def _said(message: str) -> None:
    """A marker on stdout that the test reads: the interrupt was sent from inside the step."""
    print(f"[interrupt_driver] {message}", flush=True)


def interrupting(original, *, delay: float = 0.0):
    """``original``, wrapped so that a real SIGINT arrives while it runs (after ``delay`` seconds,
    from a timer, so that it lands inside ``original`` itself if that takes longer) or, at the
    latest, in the wait right after it: either way inside this step of the study, never later."""

    def step(*args, **kwargs):
        _said(f"SIGINT during {AT}")
        threading.Timer(delay, os.kill, (os.getpid(), signal.SIGINT)).start()
        result = original(*args, **kwargs)
        _said(f"{AT}: its step returned before the interrupt arrived; waiting for it in the step")
        time.sleep(NEVER)
        raise AssertionError(f"no KeyboardInterrupt within {NEVER} s of SIGINT during {AT}")  # pragma: no cover
        return result

    return step


def _patch(point: str) -> None:
    if point == "ray_init":  # Ray's start takes seconds: 0.5 s in, it is part-way
        runner._init_ray = interrupting(runner._init_ray, delay=0.5)
    elif point == "data":
        runner._read_data = interrupting(runner._read_data, delay=0.2)
    elif point == "baselines":
        runner._record_baselines = interrupting(runner._record_baselines, delay=0.5)
    elif point == "trial":
        from sslab.engine.tune_callbacks import StoreCallback

        original = StoreCallback.on_trial_result

        def on_trial_result(self, iteration, trials, trial, result, **info):
            original(self, iteration, trials, trial, result, **info)
            if result.get("history") and not getattr(StoreCallback, "_interrupted", False):
                StoreCallback._interrupted = True  # the first epoch report of the first trial
                _said(f"SIGINT during trial {self.specs.of_tune_config(trial.config).trial_id} after epoch {int(result.get('epoch', -1))}")
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(NEVER)
                raise AssertionError(f"no KeyboardInterrupt within {NEVER} s of SIGINT")  # pragma: no cover

        StoreCallback.on_trial_result = on_trial_result
    elif point == "summary":
        from sslab.results.progress import Progress

        Progress.summary = interrupting(Progress.summary)
    else:
        raise SystemExit(f"SSLAB_TEST_INTERRUPT_AT={point!r}: choose one of {', '.join(POINTS)}")


if __name__ == "__main__":
    profiles.PROFILES.setdefault("small", SMALL)  # so that ``--profile small`` names the tests' profile
    if AT:
        _patch(AT)
    cli.run(STUDY)
