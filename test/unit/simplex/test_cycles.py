"""The simplex's cycle book without ROS: when a cloud's cycle is due, what supersedes it, and
what time going back does."""

from types import SimpleNamespace as NS

import numpy as np

from airside_perception.simplex.cycles import CycleBook, boxes_of
from airside_perception.simplex.decision import ADVANCED, BASELINE, SimplexParams, SimplexState

P = SimplexParams(deadline_ms=75.0, recovery_cycles=1)
TASKS = ("segmentation", "detection", "occupancy")
S = 1_700_000_000 * 10**9  # a stamp, ns
MS = 10**6


def _det(*boxes):
    return NS(detections=[NS(center=NS(x=b[0], y=b[1], z=0.5), size=NS(x=1, y=1, z=1), yaw=0.0) for b in boxes],
              model_version="v")


def _report(confidence=0.99, trust=0.9, tasks=TASKS):
    n = len(tasks)
    return NS(tasks=list(tasks), confidences=[confidence] * n, trust=[trust] * n, errors=[""] * n, latency_ms=40.0,
              ood_worst=["range"] * n, ood_scores=[0.2] * n)


def _book():
    return CycleBook(P, TASKS, grace_s=0.005, max_future_ms=100.0)


def _all_parts(book, stamp, now, report=None):
    for part, msg in (("advanced", _det((5, 0))), ("advanced_grid", NS()), ("report", report or _report()),
                      ("baseline", _det((5, 0))), ("baseline_grid", NS())):
        book.on_part(part, msg, stamp, "base_link", 0.01, now)


def test_a_cycle_is_due_once_everything_is_in_and_decides_advanced():
    book = _book()
    book.last_report = book.last_baseline = 10.0  # both paths alive
    book.on_cloud(S, "base_link", 0.0, 10.0)
    assert book.next_due(10.0)[0] is None, "nothing arrived yet"
    _all_parts(book, S, 10.02)
    cycle, _ = book.next_due(10.02)
    assert cycle is not None and cycle.stamp_ns == S
    _, d = book.decide(SimplexState(active="advanced"), cycle, 10.02)
    assert d.output.source == ADVANCED and d.output.reason == "ok" and d.faults == []
    assert book.next_due(10.03)[0] is None, "a cycle is decided once"


def test_without_the_advanced_path_the_baseline_goes_out_at_the_deadline_naming_the_missing_path():
    book = _book()
    book.last_report = 10.0  # the host is alive, but has no result for this cloud
    book.on_cloud(S, "base_link", 0.0, 10.0)
    for part, msg in (("baseline", _det((5, 0))), ("baseline_grid", NS())):
        book.on_part(part, msg, S, "base_link", 0.01, 10.01)
    assert book.next_due(10.05)[0] is None, "before the deadline the advanced result may still come"
    cycle, _ = book.next_due(10.08)
    _, d = book.decide(SimplexState(active="advanced"), cycle, 10.08)
    assert d.output.source == BASELINE and d.missing[ADVANCED] == "no result by the deadline"


def test_with_no_path_the_answer_is_no_evidence_not_an_empty_all_clear():
    book = _book()  # neither path has been heard from: the cycle is decided at once
    book.on_cloud(S, "base_link", 0.0, 10.0)
    cycle, _ = book.next_due(10.0 + 0.075 + 0.006)
    _, d = book.decide(SimplexState(), cycle, 10.09)
    assert d.output.source == "none" and d.output.reason == "no_evidence"
    assert d.missing[ADVANCED] and d.missing[BASELINE]


def test_a_cloud_the_baseline_skipped_is_superseded_by_the_newer_one_it_processed():
    book = _book()
    book.last_report = book.last_baseline = 10.0
    book.on_cloud(S, "base_link", 0.0, 10.0)
    book.on_cloud(S + 100 * MS, "base_link", 0.0, 10.1)
    _all_parts(book, S + 100 * MS, 10.12)
    cycle, _ = book.next_due(10.12)
    assert cycle.stamp_ns == S + 100 * MS
    assert book.next_due(10.5)[0] is None, "the older cycle is not decided after the newer one"


def test_a_refusal_by_both_nodes_decides_at_once_and_names_why():
    book = _book()
    book.last_report = book.last_baseline = 10.0
    book.on_cloud(S, "base_link", 0.0, 10.0)
    book.on_refused(ADVANCED, S, "no_transform", 10.001)
    book.on_refused(BASELINE, S, "no_transform", 10.001)
    cycle, _ = book.next_due(10.002)
    _, d = book.decide(SimplexState(), cycle, 10.002)
    assert d.output.reason == "no_evidence" and "refused: no_transform" in d.missing[ADVANCED]


def test_a_cloud_past_its_deadline_on_arrival_is_refused_for_both_paths_as_stale():
    book = _book()
    book.on_cloud(S, "base_link", 0.2, 10.0)
    cycle = book.cycles[S]
    assert cycle.refused[ADVANCED].startswith("stale") and cycle.refused[BASELINE].startswith("stale")


def test_time_going_back_restarts_the_book_and_late_results_of_the_old_timeline_open_nothing():
    book = _book()
    book.on_cloud(S + 5_000 * MS, "base_link", 0.0, 10.0)
    _all_parts(book, S + 5_000 * MS, 10.01)
    assert book.next_due(10.01)[0] is not None
    assert book.on_cloud(S, "base_link", 0.0, 10.02) is not None, "a cloud 5 s behind, after decisions: a jump"
    assert book.clock_jumps == 1 and list(book.cycles) == [S]
    book.on_cloud(S + 100 * MS, "base_link", 0.0, 10.1)
    book.on_part("advanced", _det(), S - 3_000 * MS, "base_link", 3.0, 10.1)
    assert S - 3_000 * MS not in book.cycles
    book.on_part("advanced", _det(), S + 9_000 * MS, "base_link", -8.9, 10.1)  # far ahead of the clock
    assert S + 9_000 * MS not in book.cycles


def test_a_report_short_of_a_task_is_no_advanced_result_and_low_trust_names_the_statistic():
    book = _book()
    book.on_cloud(S, "base_link", 0.0, 10.0)
    _all_parts(book, S, 10.01, report=_report(tasks=("segmentation", "detection")))
    assert not book.cycles[S].advanced_complete()
    book2 = _book()
    book2.on_cloud(S, "base_link", 0.0, 10.0)
    _all_parts(book2, S, 10.01, report=_report(trust=0.1))
    cycle, _ = book2.next_due(10.01)
    _, d = book2.decide(SimplexState(active="advanced"), cycle, 10.01)
    assert d.shift.startswith("segmentation: range")


def test_boxes_of_reads_detections_and_none():
    assert boxes_of(None).shape == (0, 7)
    b = boxes_of(_det((1, 2), (3, 4)))
    assert b.shape == (2, 7) and np.allclose(b[:, :2], [[1, 2], [3, 4]])


def test_a_late_report_of_a_decided_cloud_counts_in_the_next_decision():
    book = _book()
    book.last_report = book.last_baseline = 10.0
    book.on_cloud(S, "base_link", 0.0, 10.0)
    _all_parts(book, S, 10.02)
    cycle, _ = book.next_due(10.02)
    state, d = book.decide(SimplexState(active="advanced"), cycle, 10.02)
    assert d.output.reason == "ok"
    late = _report(tasks=("detection",))
    late.errors = ["CUDA error: an illegal memory access"]
    book.on_part("report", late, S, "base_link", 0.03, 10.03)  # a second process, after the decision
    book.on_cloud(S + 100 * MS, "base_link", 0.0, 10.1)
    _all_parts(book, S + 100 * MS, 10.12)
    cycle, _ = book.next_due(10.12)
    _, d = book.decide(state, cycle, 10.12)
    assert d.output.source == BASELINE and d.output.reason == "engine_error", d.output


def test_property_no_answer_carries_a_result_of_another_cloud():
    """Whatever the order and timing of clouds, results, reports and refusals over a few stamps,
    every decided cycle holds only results stamped with its own cloud's stamp."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    parts = ("cloud", "advanced", "advanced_grid", "report", "baseline", "baseline_grid", "refused", "tick")
    events = st.lists(st.tuples(st.sampled_from(parts), st.integers(0, 5), st.integers(1, 60)), max_size=60)

    @settings(max_examples=300, deadline=None)
    @given(events)
    def check(seq):
        book, now, state = _book(), 10.0, SimplexState(active="advanced")
        book.last_report = book.last_baseline = now
        for part, k, dt_ms in seq:
            now += dt_ms / 1e3
            stamp = S + k * 100 * MS
            age = max(0.0, now - 10.0 - k * 0.1)
            if part == "cloud":
                book.on_cloud(stamp, "base_link", age, now)
            elif part == "refused":
                book.on_refused(BASELINE if k % 2 else ADVANCED, stamp, "stale", now)
            elif part != "tick":
                msg = _report() if part == "report" else (_det((k, 0)) if not part.endswith("grid") else NS())
                msg.stamp_ns = stamp
                book.on_part(part, msg, stamp, "base_link", age, now)
            cycle, _ = book.next_due(now)
            while cycle is not None:
                for name in ("advanced", "advanced_grid", "baseline", "baseline_grid"):
                    msg = getattr(cycle, name)
                    assert msg is None or msg.stamp_ns == cycle.stamp_ns, (name, msg.stamp_ns, cycle.stamp_ns)
                own = [r for r in cycle.reports if r.stamp_ns == cycle.stamp_ns]
                state, d = book.decide(state, cycle, now)
                others = [r for r in cycle.reports if r.stamp_ns != cycle.stamp_ns]
                assert all(r.stamp_ns < cycle.stamp_ns for r in others), "only late reports of decided clouds"
                assert len(own) + len(others) == len(cycle.reports)
                if d.output.source == ADVANCED:
                    assert cycle.advanced is not None and cycle.advanced.stamp_ns == cycle.stamp_ns
                if d.output.source == BASELINE:
                    assert cycle.baseline is not None and cycle.baseline.stamp_ns == cycle.stamp_ns
                cycle, _ = book.next_due(now)
    check()
