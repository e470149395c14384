"""Other work on this machine's CPUs when a local study starts.

Two studies side by side on a 2-core machine (2 × 2 torch threads) slowed each other's trials
3–7×, far more than 2× (the digits' λ trials took 178–298 s beside the pretext zoo, against
31–44 s alone). Nothing in a trial's numbers says so: the hypervisor's steal
(``cpu_steal.py``) is not this. A study that starts its own Ray therefore looks, for a quarter
of a second, at what else is using the CPUs, and names it when it is much.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

#: other processes using at least this share of the machine's CPUs are worth a note
NOTABLE = 0.25


@dataclass(frozen=True)
class Busy:
    pid: int
    command: str
    cpus: float  # CPUs' worth of time it used over the sample


def _processes(proc: str) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user + system clock ticks so far) of every process; {} without /proc."""
    found = {}
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat")) as f:
                # after the command name, in parentheses: state ppid ... utime (14th) stime (15th)
                rest = f.read().rsplit(")", 1)[1].split()
            found[int(entry.name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not readable
            continue
    return found


def _family(pid: int, parents: dict[int, int]) -> set[int]:
    """``pid`` and every process below it (this study's Ray, and its workers)."""
    family, grew = {pid}, True
    while grew:
        below = {p for p, parent in parents.items() if parent in family} - family
        family |= below
        grew = bool(below)
    return family


def _command(pid: int, proc: str) -> str:
    try:
        with open(os.path.join(proc, str(pid), "cmdline"), "rb") as f:
            text = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        text = ""
    return (text[:77] + "...") if len(text) > 80 else text or f"pid {pid}"


def other_work(sample_s: float = 0.25, *, proc: str = "/proc", mine: int | None = None) -> list[Busy]:
    """Processes other than this one and those it started, busiest first, with the CPUs they
    used over ``sample_s``; [] where /proc is not there."""
    first = _processes(proc)
    if not first:
        return []
    time.sleep(sample_s)
    second = _processes(proc)
    ours = _family(os.getpid() if mine is None else mine, {p: parent for p, (parent, _) in second.items()})
    hz = os.sysconf("SC_CLK_TCK")
    busy = [Busy(pid, _command(pid, proc), (ticks - first[pid][1]) / hz / sample_s)
            for pid, (_, ticks) in second.items() if pid in first and pid not in ours]
    return sorted((b for b in busy if b.cpus > 0), key=lambda b: -b.cpus)


def other_work_note(busy: list[Busy], cpus: int | None = None) -> str | None:
    """One line naming what else keeps the CPUs busy, when it is at least ``NOTABLE`` of them."""
    cpus = cpus or os.cpu_count() or 1
    used = sum(b.cpus for b in busy)
    if used < NOTABLE * cpus:
        return None
    top = ", ".join(f"{b.command} (pid {b.pid}, {b.cpus:.1f} CPUs)" for b in busy[:2])
    return (f"other work is using {used:.1f} of this machine's {cpus} CPUs ({top}): the trials will share them "
            "and take longer, so their times will not compare with a quiet machine's (their results will)")
