"""CPU time the hypervisor gave to other guests while this machine wanted it (Linux's "steal").

On a shared cloud VM a busy neighbour slows every step without the method or the code changing:
on the 2-core development machine the same training step took 49 ms at one hour and 81 ms at another,
with 10-33 % steal. A trial's timings therefore carry the share of the machine's CPU time stolen
while it ran, so that a slow day is not read as a slow method.
"""

from __future__ import annotations

import math

PROC_STAT = "/proc/stat"
#: steal at or above this share makes a timing worth a warning next to it
NOTABLE = 0.05


def cpu_times(path: str = PROC_STAT) -> tuple[int, int] | None:
    """(stolen, total) clock ticks of all CPUs since boot, from the ``cpu`` line of /proc/stat;
    None where the kernel does not say (not Linux, or a kernel before 2.6.11 without the field)."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    try:
        # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
        # counted in user and nice, so the total is the first eight
        ticks = [int(value) for value in fields[1:9]]
    except ValueError:
        return None
    return ticks[7], sum(ticks)


class StealMeter:
    """The share of CPU time stolen from this machine since the meter was made, plus the ticks of
    earlier attempts of the same run (``before``, as ``ticks()`` returned them then), so that a
    resumed trial reports its steal over every attempt, not only the last."""

    def __init__(self, path: str = PROC_STAT, before: tuple[int, int] | None = (0, 0)) -> None:
        self.path = path
        self.start = cpu_times(path)
        self.before = before  # None: an earlier attempt could not measure it

    def ticks(self) -> tuple[int, int] | None:
        """(stolen, total) ticks since the start plus ``before``; None when unknown."""
        now = cpu_times(self.path)
        if self.start is None or now is None or self.before is None:
            return None
        return (self.before[0] + now[0] - self.start[0], self.before[1] + now[1] - self.start[1])

    def fraction(self) -> float:
        """Stolen ticks / all ticks, in [0, 1]; NaN when unknown or no tick passed."""
        return share(self.ticks())


def share(ticks: tuple[int, int] | None) -> float:
    """Stolen / all of (stolen, total) ticks; NaN when unknown or no tick passed."""
    return ticks[0] / ticks[1] if ticks is not None and ticks[1] > 0 else math.nan


def steal_note(fraction: float) -> str:
    """`` (23% CPU steal)`` for a notable share, else the empty string (also when unknown)."""
    return f" ({fraction:.0%} CPU steal)" if fraction >= NOTABLE else ""  # False for NaN
