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
