"""Sensor frames and intensity scales (core, no ROS)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from airside_perception.errors import ConfigError
from airside_perception.frames import (
    IntensityScale,
    is_identity,
    parse_sensor_pose,
    pose_from_xyz_rpy,
    pose_matrix,
    transform_points,
)
from airside_perception.ops.bev import BevSpec, encode


def test_quaternion_and_rpy_agree():
    # yaw 90 degrees about z: quaternion (0, 0, sin 45, cos 45)
    q = pose_matrix((1.0, 2.0, 3.0), (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)))
    r = pose_from_xyz_rpy(1.0, 2.0, 3.0, 0.0, 0.0, math.pi / 2)
    np.testing.assert_allclose(q, r, atol=1e-12)
    np.testing.assert_allclose(q[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_rpy_order_is_z_y_x():
    roll, pitch, yaw = 0.1, -0.2, 0.3
    m = pose_from_xyz_rpy(0, 0, 0, roll, pitch, yaw)
    rz = pose_from_xyz_rpy(0, 0, 0, 0, 0, yaw)[:3, :3]
    ry = pose_from_xyz_rpy(0, 0, 0, 0, pitch, 0)[:3, :3]
    rx = pose_from_xyz_rpy(0, 0, 0, roll, 0, 0)[:3, :3]
    np.testing.assert_allclose(m[:3, :3], rz @ ry @ rx, atol=1e-12)


def test_transform_moves_xyz_keeps_intensity_and_nan_rows():
    pts = np.array([[1, 0, 0, 7], [np.nan, 0, 0, 3], [0, 0, -1.73, 9]], np.float32)
    sensor_to_base = pose_from_xyz_rpy(0.5, 0.0, 1.73, 0.0, 0.0, math.pi)
    out = transform_points(pts.copy(), sensor_to_base)
    np.testing.assert_allclose(out[0], [-0.5, 0, 1.73, 7], atol=1e-6)
    assert np.isnan(out[1, 0]) and out[1, 3] == 3
    np.testing.assert_allclose(out[2], [0.5, 0, 0, 9], atol=1e-6)


def test_transform_none_is_free_and_returns_the_same_array():
    pts = np.ones((5, 4), np.float32)
    assert transform_points(pts, None) is pts
    assert is_identity(np.eye(4)) and not is_identity(pose_from_xyz_rpy(0, 0, 1, 0, 0, 0))


def test_transform_matches_point_by_point_on_a_large_cloud():
    rng = np.random.default_rng(0)
    pts = rng.normal(0, 20, (100_000, 4)).astype(np.float32)
    m = pose_from_xyz_rpy(1.2, -0.3, 1.9, 0.02, -0.05, 1.0)
    out = transform_points(pts.copy(), m)
    ref = (np.c_[pts[:, :3].astype(np.float64), np.ones(len(pts))] @ m.T)[:, :3]
    np.testing.assert_allclose(out[:, :3], ref, atol=1e-3)


@pytest.mark.parametrize("text", ["1 2 3", "a b c d e f", "0 0 1.73 0 0 nan", ""])
def test_bad_sensor_pose_names_the_format(text):
    with pytest.raises(ConfigError, match="x y z roll pitch yaw"):
        parse_sensor_pose(text)


def test_sensor_pose_accepts_commas():
    np.testing.assert_allclose(parse_sensor_pose("0, 0, 1.73, 0, 0, 0")[:3, 3], [0, 0, 1.73])


def test_intensity_rescaled_to_the_engines_range():
    pts = np.array([[0, 0, 0, 0.5], [0, 0, 0, 1.0]], np.float32)
    IntensityScale(1.0, 255.0).apply(pts)
    np.testing.assert_allclose(pts[:, 3], [127.5, 255.0])


def test_same_range_costs_nothing():
    pts = np.array([[0, 0, 0, 77.0]], np.float32)
    assert IntensityScale(255.0).factor == 1.0
    IntensityScale(255.0).apply(pts)
    assert pts[0, 3] == 77.0


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_bad_intensity_max_fails_loudly(value):
    with pytest.raises(ConfigError, match="intensity_max"):
        IntensityScale(value)


def test_intensity_far_above_range_says_which_value_to_set():
    raw = np.linspace(0, 200, 5000).astype(np.float32)
    message = IntensityScale(1.0).check(raw)
    assert message is not None and "intensity_max:=255" in message


def test_intensity_far_below_range_suggests_the_small_scale():
    raw = np.linspace(0, 0.99, 5000).astype(np.float32)
    message = IntensityScale(255.0).check(raw)
    assert message is not None and "intensity_max:=1" in message


def test_fitting_intensity_and_tiny_clouds_say_nothing():
    assert IntensityScale(255.0).check(np.linspace(0, 250, 5000).astype(np.float32)) is None
    assert IntensityScale(1.0).check(np.full(10, 200.0, np.float32)) is None
    with_nan = np.r_[np.linspace(0, 250, 5000), [np.nan]].astype(np.float32)
    assert IntensityScale(255.0).check(with_nan) is None


def test_encoder_reads_intensity_in_the_manifests_range():
    rng = np.random.default_rng(1)
    pts = np.c_[rng.uniform(-20, 20, (2000, 2)), rng.uniform(0, 2, 2000), rng.uniform(0, 255, 2000)]
    pts = pts.astype(np.float32)
    a = encode(pts, BevSpec())
    unit = pts.copy()
    unit[:, 3] /= 255.0
    b = encode(unit, BevSpec(intensity_max=1.0))
    np.testing.assert_allclose(a.bev, b.bev, atol=1e-5)
    np.testing.assert_allclose(a.point_features, b.point_features, atol=1e-5)


def test_transform_matches_a_float64_matmul_and_keeps_nan_rows():
    matrix = pose_from_xyz_rpy(0.3, -0.2, 1.73, 0.05, -0.02, 1.5707963)
    rng = np.random.default_rng(1)
    points = rng.uniform(-80, 80, size=(5000, 4)).astype(np.float32)
    points[7, :3] = np.nan
    expected = points[:, :3].astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
    out = transform_points(points.copy(), matrix)
    np.testing.assert_allclose(out[:, :3], expected, atol=1e-4, equal_nan=True)
    assert np.isnan(out[7, :3]).all()
    np.testing.assert_array_equal(out[:, 3], points[:, 3])
