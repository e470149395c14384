"""Why a trial failed: the failures no retry can mend (reported as the trial's last result, never
raised into Tune's and Train's retries), and the one line that names a failure's cause."""

from __future__ import annotations

import re


#: the result key of a trial that failed in a way no retry can mend (its value: the one-line cause)
FAILURE = "failure"


class DeterministicTrialError(Exception):
    """A failure that would happen again on a retry (a non-finite loss, an empty epoch): the trial
    reports it as its last result and ends, instead of raising into Tune's and Train's retries."""


class NonFiniteLossError(DeterministicTrialError, FloatingPointError):
    """The loss became NaN or infinite; the trial stops, the study goes on."""


class UnreadableCheckpointError(DeterministicTrialError):
    """The only checkpoint to resume from does not load."""


class EmptyEpochError(DeterministicTrialError, ValueError):
    """An epoch produced no full batch."""


_NAN_MESSAGE = re.compile(r"loss became (?:NaN|infinite) at epoch \d+ step \d+[^\n]*")


def root_cause(error: BaseException | str) -> str:
    """One line naming why a trial failed, dug out of Ray's nested worker tracebacks."""
    text = str(error)
    found = _NAN_MESSAGE.search(text)
    if found:
        return found.group(0)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[\w.]+(Error|Exception)\b", line)]
    return (errors[-1] if errors else (lines[-1] if lines else type(error).__name__))[:500]
