import numpy as np
import pytest

from airside_perception.errors import ConfigError
from airside_perception.simplex.decision import Evidence, SimplexParams, SimplexState, decide
from airside_perception.simplex.fusion import missed_near_obstacles

GOOD = Evidence(True, True, 50.0, 0.95, None, True, 10.0)
P = SimplexParams(recovery_cycles=3)


def run(evidences):
    state = SimplexState()
    out = []
    for e in evidences:
        state, reason = decide(state, e, P)
        out.append((state.active, reason))
    return state, out


def test_hysteresis_then_advanced():
    state, out = run([GOOD] * 4)
    assert out == [("baseline", "recovering 1/3"), ("baseline", "recovering 2/3"), ("advanced", "ok"),
                   ("advanced", "ok")]
    assert state.switches == 1


@pytest.mark.parametrize("fault, reason", [
    (dict(has_output=False), "deadline_miss"), (dict(on_time=False), "deadline_miss"),
    (dict(confidence=0.2), "low_confidence"), (dict(engine_error="boom"), "engine_error"),
    (dict(is_finite=False), "non_finite_output"), (dict(host_silence_ms=900.0), "stale")])
def test_any_fault_falls_back_in_the_same_cycle(fault, reason):
    state, _ = run([GOOD] * 3)
    bad = Evidence(**{**GOOD.__dict__, **fault})
    state, r = decide(state, bad, P)
    assert (state.active, r, state.switches) == ("baseline", reason, 2)
    state, r = decide(state, GOOD, P)
    assert r == "recovering 1/3", "one good cycle is not enough to return"


def test_bad_params():
    with pytest.raises(ConfigError, match="recovery_cycles"):
        SimplexParams(recovery_cycles=0)


def test_near_field_safety_net():
    advanced = np.array([[5, 0, 0, 1, 1, 1.7, 0]], float)
    baseline = np.array([[5.2, 0.1, 0, 0.8, 0.8, 1.7, 0], [8, 3, 0, 0.6, 0.6, 1.7, 0], [40, 0, 0, 4, 2, 2, 0]], float)
    assert missed_near_obstacles(advanced, baseline, 20.0).tolist() == [1]
    assert missed_near_obstacles(np.zeros((0, 7)), baseline, 20.0).tolist() == [0, 1]


def test_output_follows_the_controller_when_its_path_has_a_result():
    from airside_perception.simplex.decision import Output, choose_output
    trusted = SimplexState(active="advanced")
    untrusted = SimplexState(active="baseline")
    assert choose_output(trusted, "ok", None, None) == Output("advanced", "ok")
    assert choose_output(trusted, "ok", None, "dead") == Output("advanced", "ok")
    assert choose_output(untrusted, "out_of_distribution", None, None) == Output("baseline", "out_of_distribution")
    assert choose_output(untrusted, "deadline_miss", "late", None) == Output("baseline", "deadline_miss")


def test_a_missing_baseline_publishes_the_advanced_result_degraded_and_neither_claims_nothing():
    from airside_perception.simplex.decision import Output, choose_output
    untrusted = SimplexState(active="baseline")
    degraded = choose_output(untrusted, "out_of_distribution", None, "dead (silent 2.3 s)")
    assert degraded == Output("advanced", "baseline_missing") and degraded.is_degraded
    assert choose_output(untrusted, "stale", "dead", "refused: no_transform") == Output("none", "no_evidence")
    assert choose_output(SimplexState(active="advanced"), "ok", "late", "late") == Output("none", "no_evidence")


def test_output_never_comes_from_a_path_without_a_result():
    from hypothesis import given
    from hypothesis import strategies as st

    from airside_perception.simplex.decision import choose_output
    missing = st.one_of(st.none(), st.sampled_from(["dead", "late", "refused: stale", "no result"]))

    @given(st.sampled_from(["advanced", "baseline"]), missing, missing)
    def check(active, advanced_missing, baseline_missing):
        out = choose_output(SimplexState(active=active), "ok", advanced_missing, baseline_missing)
        has = {"advanced": advanced_missing is None, "baseline": baseline_missing is None}
        if out.source == "none":
            assert not any(has.values()) and out.reason == "no_evidence"
        else:
            assert has[out.source]
    check()


def test_a_missing_path_is_named_with_its_cause():
    from airside_perception.simplex.decision import why_missing
    assert why_missing(True, 10.0, 500.0, None) is None
    assert why_missing(False, 2300.0, 500.0, None) == "dead (silent 2.3 s)"
    assert why_missing(False, float("nan"), 500.0, None).startswith("dead")
    assert why_missing(False, 20.0, 500.0, "no_transform: no transform from 'velodyne'") == \
        "refused: no_transform: no transform from 'velodyne'"
    assert why_missing(False, 2300.0, 500.0, "stale") == "refused: stale", "a refusal proves the node is alive"
    assert why_missing(False, 20.0, 500.0, None) == "no result by the deadline"


@pytest.mark.parametrize("field, value", [("trust", float("inf")), ("trust", 1.5), ("trust", -0.1),
                                          ("confidence", float("inf")), ("confidence", 2.0),
                                          ("latency_ms", -1.0), ("latency_ms", float("inf"))])
def test_an_out_of_range_number_in_good_evidence_is_an_invalid_report(field, value):
    from dataclasses import replace

    from airside_perception.simplex.decision import fault_of
    good = Evidence(has_output=True, on_time=True, latency_ms=10.0, confidence=0.99, engine_error=None,
                    is_finite=True, host_silence_ms=5.0)
    assert fault_of(good, P) is None
    assert fault_of(replace(good, **{field: value}), P) == "invalid_report"


def _evidences():
    from hypothesis import strategies as st
    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 1.0))
    return st.builds(Evidence, has_output=st.booleans(), on_time=st.booleans(),
                     latency_ms=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 200)),
                     confidence=number, engine_error=st.one_of(st.none(), st.just("CUDA error")),
                     is_finite=st.booleans(),
                     host_silence_ms=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 2000)),
                     trust=number,
                     invalid=st.lists(st.sampled_from(["detection: nan_confidence", "occupancy: missing"]),
                                      max_size=2).map(tuple))


def test_a_fault_never_yields_advanced_ok_and_nan_anywhere_is_a_fault():
    import math

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from airside_perception.simplex.decision import fault_of

    @settings(max_examples=400, deadline=None)
    @given(st.lists(_evidences(), min_size=1, max_size=30))
    def check(evidences):
        state = SimplexState(active="advanced")
        for e in evidences:
            fault = fault_of(e, P)
            state, reason = decide(state, e, P)
            if fault is not None:
                assert not (state.active == "advanced" and reason == "ok"), (e, reason)
            numbers = (e.latency_ms, e.confidence, e.host_silence_ms, e.trust)
            if any(math.isnan(v) or math.isinf(v) for v in numbers):
                assert fault is not None and state.active == "baseline", e
    check()


def test_every_report_of_a_cloud_counts_and_a_missing_task_is_named():
    from airside_perception.simplex.decision import TaskReport, merge_reports
    tasks = ("segmentation", "detection", "occupancy")
    good = [TaskReport("segmentation", 0.97, 0.9), TaskReport("detection", 0.95, 0.8), TaskReport("occupancy", 0.9)]
    assert merge_reports(good, tasks) == (0.9, 0.8, None, ())
    second = good + [TaskReport("detection", 0.1, 0.05, "CUDA error: illegal address")]
    confidence, trust, error, invalid = merge_reports(second, tasks)
    assert (confidence, trust) == (0.1, 0.05) and "CUDA error" in error
    confidence, trust, error, invalid = merge_reports([TaskReport("detection", float("nan"), -0.5)], tasks)
    assert set(invalid) == {"detection: nan_confidence", "detection: negative_trust", "segmentation: missing",
                            "occupancy: missing"}
    state, reason = decide(SimplexState(active="advanced"),
                           Evidence(True, True, 50.0, confidence, error, True, 10.0, trust, invalid), P)
    assert state.active == "baseline" and reason == "deadline_miss"  # a task missing at the deadline
