"""Windowed counters of the diagnostics (core, no ROS)."""

from __future__ import annotations

from airside_perception.stats import StageTimes, WindowedCounts


def test_a_problem_that_has_passed_is_no_longer_reported_but_stays_in_the_totals():
    counts = WindowedCounts(window_s=10.0)
    counts.add("future", "cloud stamped 5000 ms ahead", now=100.0)
    counts.add("future", "cloud stamped 500 ms ahead", now=101.0)
    counts.add("stale", "cloud stamped 2000 ms before arrival", now=105.0)
    assert counts.recent(now=106.0) == {"future": 2, "stale": 1}
    assert counts.recent_messages(now=106.0)["future"] == "cloud stamped 500 ms ahead"
    assert counts.recent(now=111.5) == {"stale": 1}
    assert "future" not in counts.recent_messages(now=111.5)
    assert counts.recent(now=200.0) == {} and counts.recent_messages(now=200.0) == {}
    assert counts.totals == {"future": 2, "stale": 1}


def test_stage_windows_restart_after_a_clock_jump():
    times = StageTimes(window=10)
    times.add("end_to_end", -1900.0)  # a latency across a jump back compares two timelines
    times.clear()
    assert times.percentiles("end_to_end") is None
    times.add("end_to_end", 40.0)
    assert times.percentiles("end_to_end").p50 == 40.0
