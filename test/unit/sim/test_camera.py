"""Simulated camera colours per LiDAR point: deterministic, visible where a camera looks, and
telling apart what intensity barely does (vests from cones, paint from concrete)."""

import numpy as np
import pytest

from airside_perception import classes
from airside_perception.sim.camera import FRONT, SURROUND, CameraSpec, point_colours
from airside_perception.sim.world import make_scan, split_seeds


@pytest.fixture(scope="module")
def day_scan():
    for seed in split_seeds("test", 40):
        scan = make_scan(int(seed))
        enough = (scan.labels == classes.PERSON).sum() > 50 and (scan.labels == classes.CONE).sum() > 50
        if not scan.is_night and enough:
            return scan
    pytest.fail("no daylight test scan with persons and cones among the first 40")


def test_colours_are_deterministic_and_leave_the_scan_alone(day_scan):
    before = day_scan.points.copy()
    a, seen_a = point_colours(day_scan)
    b, seen_b = point_colours(day_scan)
    assert np.array_equal(a, b) and np.array_equal(seen_a, seen_b)
    assert np.array_equal(day_scan.points, before)
    assert a.shape == (len(day_scan.points), 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_a_front_camera_sees_ahead_not_behind(day_scan):
    _, seen = point_colours(day_scan, FRONT)
    x, y = day_scan.points[:, 0], day_scan.points[:, 1]
    ahead = (x > 10) & (np.abs(y) < 0.5 * x) & (x < 50)
    behind = x < -5
    assert seen[ahead].mean() > 0.9
    assert not seen[behind].any()
    colours, _ = point_colours(day_scan, FRONT)
    assert not colours[behind].any()  # unseen points carry no colour
    _, around = point_colours(day_scan, SURROUND)
    assert around.mean() > seen.mean()


def test_vests_cones_and_paint_differ_in_colour(day_scan):
    rgb, seen = point_colours(day_scan, SURROUND)
    labels = day_scan.labels
    person = seen & (labels == classes.PERSON)
    cone = seen & (labels == classes.CONE)
    # cones: orange, red well above blue; persons carry vests, trousers and heads: greener on average
    cone_rgb, person_rgb = rgb[cone].mean(0), rgb[person].mean(0)
    assert cone_rgb[0] > cone_rgb[1] > cone_rgb[2]
    assert person_rgb[1] / person_rgb[0] > cone_rgb[1] / cone_rgb[0]
    ground = seen & (labels == classes.GROUND)
    brightness = rgb[ground].sum(1)
    assert brightness.max() - np.median(brightness) > 0.5  # painted markings stand out from concrete


def test_night_is_darker_than_day():
    spec = CameraSpec(hfov_deg=360.0, vfov_deg=180.0, range_m=200.0)
    day = night = None
    for seed in split_seeds("test", 60):
        scan = make_scan(int(seed), "compact")
        if scan.is_night and night is None:
            night = scan
        if not scan.is_night and day is None:
            day = scan
        if day is not None and night is not None:
            break
    assert day is not None and night is not None
    d, _ = point_colours(day, (spec,))
    n, _ = point_colours(night, (spec,))
    ground_d = d[day.labels == classes.GROUND].mean()
    ground_n = n[night.labels == classes.GROUND].mean()
    assert ground_n < 0.6 * ground_d
