"""The latency rule of swap validation: the candidate's projected P99 in this graph against the
stage's budget (core, no ROS)."""

from __future__ import annotations

from airside_perception.ota.swap import is_downgrade
from airside_perception.ota.validation import SAME_SPEED, Projection


def test_an_older_slower_version_that_fits_the_budget_is_accepted():
    # 2.2.0 serving at a live P99 of 12 ms; 1.0.0 is 1.77x slower side by side: 21.2 ms of 25
    p = Projection(ratio=1.77, serving_live_p99_ms=12.0, budget_ms=25.0, factor=1.0)
    assert p.problem() == "" and abs(p.p99_ms - 21.24) < 1e-6 and "21.2 ms" in p.describe()


def test_a_candidate_projected_over_budget_is_refused_with_the_numbers():
    p = Projection(ratio=1.77, serving_live_p99_ms=20.0, budget_ms=25.0, factor=1.0)
    why = p.problem()
    assert "35.4 ms" in why and "25.0 ms" in why and "1.77x" in why and "20.0 ms" in why


def test_a_copy_is_never_refused_even_where_the_serving_engine_is_over_budget():
    for ratio in (0.8, 1.0, SAME_SPEED):
        p = Projection(ratio=ratio, serving_live_p99_ms=40.0, budget_ms=25.0, factor=1.0)
        assert p.problem() == "", ratio
        assert "over budget here" in p.describe()


def test_the_factor_scales_the_budget():
    assert Projection(1.5, 20.0, 25.0, 1.0).problem()
    assert not Projection(1.5, 20.0, 25.0, 1.5).problem()


def test_equal_or_lower_versions_are_rollbacks_by_version():
    assert is_downgrade("1.0.0", "2.2.0") and is_downgrade("2.2.0", "2.2.0")
    assert is_downgrade("2.1.0", "2.10.0") and not is_downgrade("2.10.0", "2.9.0")
    assert not is_downgrade("2.2.1", "2.2.0") and is_downgrade("1.0.0-int8", "1.0.0")
