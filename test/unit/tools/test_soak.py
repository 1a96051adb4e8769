"""The soak verdict on hand-made minutes (no ROS)."""

from airside_perception.tools import soak


def _minutes(n, rss_end=100.0, dropped_at=None, restart_at=None):
    out = []
    for k in range(n):
        rss = 100.0 + (rss_end - 100.0) * k / (n - 1)
        m = soak.Minute(k + 1, rss_mb={"inference_host": rss}, cpu_percent={"inference_host": 90.0},
                        p50_ms={"/perception/obstacles": 60.0}, p99_ms={"/perception/obstacles": 80.0},
                        dropped={"/perception/obstacles": int(k == dropped_at)}, clouds=600,
                        restarts={"inference_host": int(k == restart_at)})
        out.append(m)
    return out


def _latencies(n, last_p99=80.0):
    return {"/perception/obstacles": [[60.0] * 98 + [80.0, 80.0] if k < n - 5 else [60.0] * 98 + [last_p99] * 2
                                      for k in range(n)]}


def test_a_steady_run_passes():
    checks = soak.verdict(_minutes(30), _latencies(30))
    assert all(c.passed for c in checks), [c for c in checks if not c.passed]


def test_memory_growth_a_drop_a_restart_and_drift_each_fail_by_name():
    failed = {c.name for c in soak.verdict(_minutes(30, rss_end=120.0, dropped_at=12, restart_at=20),
                                           _latencies(30, last_p99=120.0)) if not c.passed}
    assert failed == {"rss inference_host", "dropped clouds", "node restarts", "p99 drift /perception/obstacles"}


def test_too_short_a_run_gives_no_verdict_but_a_failure_that_says_why():
    checks = soak.verdict(_minutes(4), _latencies(4))
    assert len(checks) == 1 and not checks[0].passed and "SOAK_S" in checks[0].detail


def test_report_and_plot(tmp_path):
    minutes = _minutes(12)
    minutes[3].events.append("swap ok")
    text = soak.report(minutes, soak.verdict(minutes, _latencies(12)), "soak test")
    assert text.splitlines()[2] == "verdict: PASS" and "swap ok" in text
    soak.plot(minutes, str(tmp_path / "soak.png"))
    assert (tmp_path / "soak.png").stat().st_size > 10_000


def test_refused_swaps_fail_the_soak_and_a_rollback_the_watch_made_first_does_not():
    minutes = _minutes(30)
    minutes[3].events = ["swap ok"]
    minutes[4].events = ["rollback refused: segmentation has no fallback engine (none since start or the last "
                         "rollback): 2.2.0 keeps serving"]
    minutes[7].events = ["swap ok"]
    minutes[8].events = ["rollback ok"]
    check = next(c for c in soak.verdict(minutes, _latencies(30)) if c.name == "swaps and rollbacks")
    assert check.passed and "1 rolled back by the watch first" in check.detail
    minutes[11].events = ["swap refused: 2.0.0 failed validation: too slow for this graph"]
    check = next(c for c in soak.verdict(minutes, _latencies(30)) if c.name == "swaps and rollbacks")
    assert not check.passed and "too slow" in check.detail
