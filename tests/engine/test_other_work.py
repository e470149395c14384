"""What else uses the CPUs when a local study starts: found, measured, and named."""

import os
import subprocess
import sys
import time

import pytest

from sslab.engine import other_work as module
from sslab.engine.other_work import Busy, other_work, other_work_note


def _write_proc(root, processes):
    """A fake /proc: {pid: (name, parent, utime, stime, cmdline)}."""
    for pid, (name, parent, utime, stime, cmdline) in processes.items():
        folder = root / str(pid)
        folder.mkdir(exist_ok=True)
        fields = ["S", str(parent)] + ["0"] * 9 + [str(utime), str(stime)] + ["0"] * 10
        (folder / "stat").write_text(f"{pid} ({name}) " + " ".join(fields) + "\n")
        (folder / "cmdline").write_bytes(cmdline.encode().replace(b" ", b"\0") + b"\0")


def test_the_cpus_each_other_process_used_are_its_ticks_over_the_sample(tmp_path, monkeypatch):
    hz = os.sysconf("SC_CLK_TCK")
    before = {10: ("python", 1, 0, 0, "python studies/pretext/pretext_zoo.py"),
              # a name with spaces and a parenthesis does not shift the fields after it
              11: ("evil) name", 1, 5, 5, "evil"),
              20: ("python", 1, 0, 0, "python studies/pirl_lambda.py"),  # this study
              21: ("raylet", 20, 0, 0, "raylet"),  # its Ray, below it
              30: ("idle", 1, 7, 0, "sleep 100")}
    _write_proc(tmp_path, before)
    after = {**before, 10: ("python", 1, int(1.5 * hz), int(0.5 * hz), "python studies/pretext/pretext_zoo.py"),
             11: ("evil) name", 1, 5 + hz // 2, 5, "evil"), 20: ("python", 1, 9 * hz, 0, "x"),
             21: ("raylet", 20, 9 * hz, 0, "raylet")}
    monkeypatch.setattr(module.time, "sleep", lambda s: _write_proc(tmp_path, after))
    busy = other_work(1.0, proc=str(tmp_path), mine=20)
    assert [(b.pid, b.command) for b in busy] == [(10, "python studies/pretext/pretext_zoo.py"), (11, "evil")]
    assert [b.cpus for b in busy] == [pytest.approx(2.0), pytest.approx((hz // 2) / hz)]  # the idle one is left out


def test_a_busy_process_elsewhere_is_found_and_one_this_process_started_is_not():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # past its start-up
        seen_from_outside = {b.pid: b for b in other_work(0.5, mine=-1)}  # as another study's driver sees it
        assert spinner.pid in seen_from_outside and seen_from_outside[spinner.pid].cpus > 0.3
        assert "while True" in seen_from_outside[spinner.pid].command
        assert spinner.pid not in {b.pid for b in other_work(0.5)}  # its own child is this study's work
    finally:
        spinner.kill()
        spinner.wait()


def test_the_note_names_the_busiest_when_they_use_a_quarter_of_the_cpus_or_more():
    busy = [Busy(4242, "python studies/pretext/pretext_zoo.py", 1.5), Busy(7, "make -j", 0.3), Busy(8, "top", 0.1)]
    note = other_work_note(busy, cpus=2)
    assert note is not None and note.startswith("other work is using 1.9 of this machine's 2 CPUs")
    assert "python studies/pretext/pretext_zoo.py (pid 4242, 1.5 CPUs), make -j (pid 7, 0.3 CPUs)" in note
    assert "top" not in note and "will not compare" in note
    assert other_work_note([Busy(8, "top", 0.49)], cpus=2) is None
    assert other_work_note([], cpus=2) is None
