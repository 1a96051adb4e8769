"""The simplex leaves the advanced path at once when trust is low, calls a shift over a window,
and comes back slowly."""

from __future__ import annotations

import pytest

from airside_perception.errors import ConfigError
from airside_perception.simplex.decision import ADVANCED, BASELINE, Evidence, SimplexParams, SimplexState, decide


def _evidence(trust: float, **kw) -> Evidence:
    values = dict(has_output=True, on_time=True, latency_ms=60.0, confidence=0.99, engine_error=None,
                  is_finite=True, host_silence_ms=10.0, trust=trust)
    values.update(kw)
    return Evidence(**values)


def test_a_low_trust_cycle_leaves_the_advanced_path_at_once():
    params = SimplexParams(recovery_cycles=2, ood_window=10, ood_in_window=3)
    state = SimplexState(ADVANCED)
    reasons = []
    for _ in range(4):
        state, reason = decide(state, _evidence(0.1), params)
        reasons.append(reason)
    assert reasons == ["low_trust", "low_trust", "out_of_distribution", "out_of_distribution"]
    assert state.active == BASELINE and state.switches == 1


def test_a_shift_that_comes_and_goes_is_caught_by_the_window():
    """low, low, good repeated: a run counter would restart on each good cycle; the window does not."""
    params = SimplexParams(recovery_cycles=3, ood_cycles=3, ood_window=10, ood_in_window=3)
    state = SimplexState(ADVANCED)
    advanced_ok = 0
    for trust in (0.1, 0.1, 0.9) * 10:
        state, reason = decide(state, _evidence(trust), params)
        advanced_ok += state.active == ADVANCED and reason == "ok"
    assert advanced_ok == 0, "a distrusted model drove between its low-trust cycles"
    assert state.switches == 1


def test_returns_only_after_the_window_has_cleared_and_a_good_record():
    params = SimplexParams(recovery_cycles=3, ood_window=4, ood_in_window=2)
    state = SimplexState(ADVANCED)
    for _ in range(3):
        state, _ = decide(state, _evidence(0.05), params)
    assert state.active == BASELINE
    reasons = []
    for _ in range(8):
        state, reason = decide(state, _evidence(0.9), params)
        reasons.append(reason)
    assert reasons[:2] == ["out_of_distribution", "out_of_distribution"]  # the window still holds two lows
    assert state.active == ADVANCED and reasons[-1] == "ok"
    assert reasons[2:5] == ["recovering 1/3", "recovering 2/3", "ok"]


def test_bad_monitor_parameters_fail_loudly():
    with pytest.raises(ConfigError, match="min_trust"):
        SimplexParams(min_trust=1.5)
    with pytest.raises(ConfigError, match="min_trust"):
        SimplexParams(min_trust=0.0)
    with pytest.raises(ConfigError, match="ood_cycles"):
        SimplexParams(ood_cycles=0)
    with pytest.raises(ConfigError, match="ood_in_window"):
        SimplexParams(ood_window=3, ood_in_window=4)


def test_a_periodic_fault_cannot_make_the_source_alternate():
    """Every sixth cycle late: the way back grows after each fault episode."""
    params = SimplexParams(recovery_cycles=5)
    state = SimplexState(ADVANCED)
    switches_after = {}
    for k in range(60):
        late = k % 6 == 5
        state, _ = decide(state, _evidence(0.9, on_time=not late), params)
        switches_after[k] = state.switches
    # off at the first fault, back once after five good cycles, off at the second: then it stays off
    assert state.switches == 3, f"{state.switches} switches in 60 cycles"
    assert switches_after[59] == switches_after[15]
    assert state.required_good_cycles(params) > 6


def test_faults_long_past_no_longer_lengthen_the_way_back():
    params = SimplexParams(recovery_cycles=3)
    state = SimplexState(ADVANCED)
    for late in (True, False, True, False, True):
        state, _ = decide(state, _evidence(0.9, on_time=not late), params)
    assert state.required_good_cycles(params) == 12
    for _ in range(120):
        state, _ = decide(state, _evidence(0.9), params)
    assert state.active == ADVANCED and state.required_good_cycles(params) == 3
