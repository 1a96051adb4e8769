"""The near-field safety net works on footprints: nothing hides a person (core, no ROS)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airside_perception.errors import ConfigError
from airside_perception.simplex.fusion import (
    corresponds,
    footprint_polygon,
    missed_near_obstacles,
    near_field_mask,
    reaches_near_field,
)

TUG = footprint_polygon([4.0, 2.0])  # 4 m x 2 m around base_link


def box(x, y, length, width, yaw=0.0):
    return [x, y, 0.8, length, width, 1.6, yaw]


def test_footprints_from_a_rectangle_or_corners_and_refused_when_wrong():
    assert TUG.shape == (4, 2) and TUG[:, 0].max() == 2.0
    assert footprint_polygon([[0, -1], [3, -1], [3, 1], [0, 1]]).shape == (4, 2)
    for bad in ([0.0, 2.0], [[0, 0], [1, 1]], ["a", "b"]):
        with pytest.raises(ConfigError, match="vehicle_footprint_m"):
            footprint_polygon(bad)


def test_the_near_field_is_measured_from_the_footprint_edge_not_base_link():
    boxes = np.array([box(2.0 + 19.9, 0, 0.5, 0.5), box(2.0 + 20.6, 0, 0.5, 0.5)])
    assert reaches_near_field(boxes, TUG, 20.0).tolist() == [True, False]
    mask = near_field_mask(200, 0.4, -40.0, 20.0, TUG)
    assert mask.sum() > near_field_mask(200, 0.4, -40.0, 20.0).sum()


def test_a_cart_train_whose_near_end_reaches_the_near_field_is_kept():
    train = np.array([box(24.7 + 2.0, 0.0, 10.0, 1.5)])  # near end 19.7 m from the tug's front
    assert missed_near_obstacles(np.zeros((0, 7)), train, 20.0, TUG).tolist() == [0]


def test_a_person_beside_a_cone_is_not_hidden_by_the_cone():
    cone = np.array(box(8.0, 3.0, 0.4, 0.4))
    person = np.array(box(8.0, 3.6 + 0.3, 0.6, 0.6))
    assert missed_near_obstacles(cone[None], person[None], 20.0, TUG).tolist() == [0]


def test_no_advanced_box_however_large_hides_what_it_does_not_correspond_to():
    huge = np.array([box(0.0, 0.0, 45.0, 45.0)])
    people = np.array([box(x, y, 0.6, 0.6) for x, y in ((5, 5), (-10, 3), (15, -12))])
    assert missed_near_obstacles(huge, people, 20.0, TUG).tolist() == [0, 1, 2]


def test_an_advanced_box_of_the_same_object_accounts_for_the_baseline_cluster():
    car_adv = np.array([box(10.0, -4.0, 4.5, 1.9, 0.1)])
    car_base = np.array([box(10.1, -4.05, 4.2, 1.8, 0.12)])
    assert missed_near_obstacles(car_adv, car_base, 20.0, TUG).tolist() == []


def _perimeter(corners, n=40):
    t = np.linspace(0, 1, n, endpoint=False)[:, None]
    return np.concatenate([a + t * (b - a) for a, b in zip(corners, np.roll(corners, -1, axis=0))])


def _brute_distance(b):
    """Distance between the box's and the tug's footprints, from points on both perimeters."""
    from airside_perception.simplex.fusion import box_corners
    p, q = _perimeter(box_corners(np.array([b]))[0]), _perimeter(TUG)
    return np.linalg.norm(p[:, None] - q[None], axis=-1).min()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-40, 40), st.floats(-40, 40), st.floats(0.2, 12), st.floats(0.2, 6),
                          st.floats(-3.2, 3.2)), min_size=1, max_size=6),
       st.lists(st.tuples(st.floats(-40, 40), st.floats(-40, 40), st.floats(0.2, 50), st.floats(0.2, 50),
                          st.floats(-3.2, 3.2)), max_size=6))
def test_a_box_reaching_into_the_near_field_is_never_dropped_unless_an_advanced_box_corresponds(base, adv):
    baseline = np.array([box(x, y, length, width, yaw) for x, y, length, width, yaw in base])
    advanced = np.array([box(x, y, length, width, yaw) for x, y, length, width, yaw in adv]).reshape(-1, 7)
    kept = set(missed_near_obstacles(advanced, baseline, 20.0, TUG).tolist())
    covered = corresponds(advanced, baseline).any(axis=0)
    for i, b in enumerate(baseline):
        distance = _brute_distance(b)  # an independent measure of "reaches into the near field"
        if distance < 19.9 and not covered[i]:
            assert i in kept, f"box {b.tolist()} {distance:.2f} m from the tug was dropped"
        if distance > 20.1:
            assert i not in kept, f"box {b.tolist()} {distance:.2f} m from the tug was added"
