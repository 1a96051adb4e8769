"""Active and standby simplex instances (no ROS)."""

import pytest

from airside_perception.errors import ConfigError
from airside_perception.simplex.roles import ACTIVE, STANDBY, RoleParams, Roles

P = RoleParams(takeover_timeout_s=0.05, startup_listen_s=1.0)


def _run(roles, start, end, step=0.01, beats=None):
    """Ticks every ``step`` from start to end; ``beats(t)`` delivers other instances' heartbeats."""
    events, t = [], start
    while t <= end + 1e-9:
        if beats:
            for b in beats(t):
                e = roles.on_heartbeat(*b, t)
                if e:
                    events.append((round(t, 3), e))
        e = roles.tick(t)
        if e:
            events.append((round(t, 3), e))
        t += step
    return events


def test_two_fresh_instances_settle_on_the_configured_active_one():
    a, s = Roles("simplex", ACTIVE, P, 0.0), Roles("simplex_standby", STANDBY, P, 0.0)
    _run(a, 0.0, 1.2)
    assert a.role == ACTIVE and a.term == 1 and a.takeovers == 0
    _run(s, 0.0, 1.2, beats=lambda t: [("simplex", ACTIVE, 1)])
    assert s.role == STANDBY and s.active_instance == "simplex"


def test_the_standby_takes_over_within_the_timeout_and_a_respawned_active_comes_back_standing_by():
    s = Roles("simplex_standby", STANDBY, P, 0.0)
    _run(s, 0.0, 3.0, beats=lambda t: [("simplex", ACTIVE, 1)] if t < 2.0 else [])
    assert s.role == ACTIVE and s.term == 2 and s.takeovers == 1
    respawned = Roles("simplex", ACTIVE, P, 3.0)
    _run(respawned, 3.0, 6.0, beats=lambda t: [("simplex_standby", ACTIVE, 2)])
    assert respawned.role == STANDBY, "roles never flap back to the configured active"


def test_the_takeover_happens_after_the_timeout_not_before():
    s = Roles("simplex_standby", STANDBY, P, 0.0)
    events = _run(s, 0.0, 2.2, beats=lambda t: [("simplex", ACTIVE, 1)] if t < 2.0 else [])
    [(when, what)] = events
    assert 2.04 <= when <= 2.07 and "took over from simplex" in what


def test_a_stopped_active_process_stands_by_when_it_resumes_and_does_not_publish_first():
    a = Roles("simplex", ACTIVE, P, 0.0)
    _run(a, 0.0, 1.5)
    assert a.role == ACTIVE and a.may_publish(1.505) is None
    why = a.may_publish(3.5)  # resumed after a 2 s stop: the check itself notices
    assert why and "stalled" in why and a.role == STANDBY
    _run(a, 3.51, 4.0, beats=lambda t: [("simplex_standby", ACTIVE, 2)])
    assert a.role == STANDBY and a.may_publish(4.0) == "standing by"


def test_a_stall_as_long_as_the_takeover_timeout_already_stands_the_active_by():
    a = Roles("simplex", ACTIVE, P, 0.0)
    _run(a, 0.0, 1.5)
    assert a.may_publish(1.56) and a.role == STANDBY, "60 ms without a tick: a standby may have taken over"


def test_a_paused_standby_hears_the_others_before_it_takes_over():
    s = Roles("simplex_standby", STANDBY, P, 0.0)
    _run(s, 0.0, 1.0, beats=lambda t: [("simplex", ACTIVE, 1)])
    assert s.tick(3.0) is None and s.role == STANDBY, "resumed after 2 s: no takeover on what it missed"
    _run(s, 3.01, 3.2, beats=lambda t: [("simplex", ACTIVE, 1)])
    assert s.role == STANDBY


def test_a_lower_term_heartbeat_does_not_rename_the_active_instance():
    s = Roles("simplex_standby", STANDBY, P, 0.0)
    _run(s, 0.0, 1.0, beats=lambda t: [("simplex", ACTIVE, 3)])
    s.on_heartbeat("old", ACTIVE, 1, 1.01)
    assert s.active_instance == "simplex"


def test_two_actives_resolve_to_the_higher_term_then_the_smaller_name():
    a = Roles("simplex", ACTIVE, P, 0.0)
    _run(a, 0.0, 1.2)
    assert "standing by" in a.on_heartbeat("simplex_standby", ACTIVE, 5, 1.3) and a.role == STANDBY
    b = Roles("simplex_b", ACTIVE, P, 0.0)
    _run(b, 0.0, 1.2)
    assert b.on_heartbeat("simplex_a", ACTIVE, 1, 1.3) and b.role == STANDBY
    c = Roles("simplex_a", ACTIVE, P, 0.0)
    _run(c, 0.0, 1.2)
    assert c.on_heartbeat("simplex_b", ACTIVE, 1, 1.3) is None and c.role == ACTIVE


def test_a_lone_standby_becomes_active_after_twice_the_listening_time():
    s = Roles("simplex_standby", STANDBY, P, 0.0)
    _run(s, 0.0, 1.9)
    assert s.role == STANDBY
    _run(s, 1.9, 2.1)
    assert s.role == ACTIVE and s.takeovers == 0


def test_bad_parameters_are_refused():
    with pytest.raises(ConfigError, match="takeover_timeout_ms"):
        RoleParams(takeover_timeout_s=5.0)
    with pytest.raises(ConfigError, match="three heartbeats"):
        RoleParams(takeover_timeout_s=0.02, heartbeat_period_s=0.01)
    with pytest.raises(ConfigError, match="role"):
        Roles("x", "leader", P, 0.0)
