"""The share of CPU time stolen from the machine, read from /proc/stat around a trial."""

import math

import pandas as pd
import pytest

from sslab.results.cpu_steal import StealMeter, cpu_times, steal_note
from sslab.results.summary import compute_line, totals


def _stat(path, user=100, steal=40, guest=7):
    # user nice system idle iowait irq softirq steal guest guest_nice, then the per-CPU lines
    path.write_text(f"cpu  {user} 5 50 1000 20 0 3 {steal} {guest} 0\ncpu0 1 2 3 4 5 6 7 8 9 10\nintr 1 2\n")
    return str(path)


def test_stolen_and_total_ticks_leave_guest_time_out_since_user_time_holds_it(tmp_path):
    assert cpu_times(_stat(tmp_path / "stat")) == (40, 100 + 5 + 50 + 1000 + 20 + 0 + 3 + 40)


@pytest.mark.parametrize("text", ["", "intr 1 2 3\n", "cpu  1 2 3 4 5 6 7\n", "cpu  1 2 3 4 5 6 7 x 9\n"])
def test_a_kernel_that_does_not_say_gives_none(tmp_path, text):
    (tmp_path / "stat").write_text(text)  # empty, no cpu line first, no steal field (before 2.6.11), garbled
    assert cpu_times(str(tmp_path / "stat")) is None
    assert cpu_times(str(tmp_path / "missing")) is None  # not Linux


def test_the_meter_measures_the_share_stolen_since_it_started(tmp_path):
    path = _stat(tmp_path / "stat", user=100, steal=40)
    meter = StealMeter(path)
    assert math.isnan(meter.fraction())  # no tick passed
    _stat(tmp_path / "stat", user=160, steal=60)  # 60 ticks of user time and 20 stolen since
    assert meter.fraction() == pytest.approx(20 / 80)
    assert math.isnan(StealMeter(str(tmp_path / "missing")).fraction())


def test_the_meter_adds_the_ticks_of_earlier_attempts(tmp_path):
    path = _stat(tmp_path / "stat", user=100, steal=40)
    resumed = StealMeter(path, before=(0, 120))  # the attempt before the resume: 120 ticks, none stolen
    _stat(tmp_path / "stat", user=160, steal=60)  # since the resume: 80 ticks, 20 stolen
    assert resumed.ticks() == (20, 200)
    assert resumed.fraction() == pytest.approx(20 / 200)  # not this attempt's 20 / 80
    unknown = StealMeter(path, before=None)  # a checkpoint written before steal was kept
    assert unknown.ticks() is None and math.isnan(unknown.fraction())


def test_only_a_notable_share_is_mentioned():
    assert steal_note(0.23) == " (23% CPU steal)"
    assert steal_note(0.01) == steal_note(math.nan) == ""


def test_the_study_total_weights_each_trial_by_its_wall_time_and_says_when_it_matters():
    trials = pd.DataFrame({"status": ["ok"] * 4, "wall_s": [100.0, 100.0, 50.0, 10.0],
                           "device_s": [1.0] * 4, "images_seen": [1] * 4,
                           "cpu_steal": [0.6, 0.2, math.nan, 0.0]})
    spent = totals(trials)
    assert spent["cpu_steal"] == pytest.approx((60 + 20 + 0) / 210)  # the unmeasured trial is left out
    assert "38% of the machine's CPU time was stolen" in compute_line(spent)
    quiet = totals(trials.assign(cpu_steal=[0.01, 0.0, math.nan, 0.0]))
    assert compute_line(quiet) == "wall 260 s, device 4 s, 4 images"  # nothing said below 5 %
    assert "cpu_steal" not in totals(trials.drop(columns="cpu_steal"))  # stores from before it was measured

