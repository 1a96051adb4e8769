"""The simplex leaves the advanced path when the monitor's trust stays low, and comes back."""

from __future__ import annotations

import pytest

from airside_perception.errors import ConfigError
from airside_perception.simplex.decision import ADVANCED, BASELINE, Evidence, SimplexParams, SimplexState, decide


def _evidence(trust: float) -> Evidence:
    return Evidence(has_output=True, on_time=True, latency_ms=60.0, confidence=0.99, engine_error=None,
                    is_finite=True, host_silence_ms=10.0, trust=trust)


def test_low_trust_for_ood_cycles_switches_to_baseline_with_its_reason():
    params = SimplexParams(recovery_cycles=2, ood_cycles=3)
    state = SimplexState(ADVANCED)
    reasons = []
    for _ in range(4):
        state, reason = decide(state, _evidence(0.1), params)
        reasons.append(reason)
    assert reasons[:2] == ["ok", "ok"]  # one or two odd frames are not a new world
    assert reasons[2:] == ["out_of_distribution", "out_of_distribution"]
    assert state.active == BASELINE and state.switches == 1


def test_an_isolated_low_trust_frame_does_not_switch():
    params = SimplexParams(ood_cycles=3)
    state = SimplexState(ADVANCED)
    for trust in (0.1, 0.9, 0.1, 0.9, 0.1, 0.1, 0.9):
        state, reason = decide(state, _evidence(trust), params)
        assert reason == "ok"
    assert state.active == ADVANCED


def test_returns_after_trust_is_back_for_recovery_cycles():
    params = SimplexParams(recovery_cycles=3, ood_cycles=2)
    state = SimplexState(ADVANCED)
    for _ in range(3):
        state, _ = decide(state, _evidence(0.05), params)
    assert state.active == BASELINE
    state, reason = decide(state, _evidence(0.2), params)  # still outside: no recovery starts
    assert reason == "out_of_distribution"
    reasons = []
    for _ in range(3):
        state, reason = decide(state, _evidence(0.9), params)
        reasons.append(reason)
    assert reasons == ["recovering 1/3", "recovering 2/3", "ok"] and state.active == ADVANCED


def test_bad_monitor_parameters_fail_loudly():
    with pytest.raises(ConfigError, match="min_trust"):
        SimplexParams(min_trust=1.5)
    with pytest.raises(ConfigError, match="ood_cycles"):
        SimplexParams(ood_cycles=0)
