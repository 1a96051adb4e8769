"""Sensor frames and intensity scales, without ROS: what turns a driver's cloud into the
cloud the engines were trained on.

A transform is a ``(4, 4)`` float64 matrix that maps points of the source frame into the
target frame (``p_target = T @ p_source``). It is applied to the whole ``(N, 4)`` array at
once. Intensity is rescaled from the driver's range ``[0, intensity_max]`` to the engines'
range ``[0, engine_intensity_max]`` (255 for the shipped engines; recorded in each
manifest's ``preprocessing``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from airside_perception.errors import ConfigError

#: Intensity range of the shipped engines (0..255), when a manifest does not say.
ENGINE_INTENSITY_MAX = 255.0
#: A cloud whose largest intensity exceeds ``intensity_max`` by this factor is reported.
INTENSITY_OVERRANGE_FACTOR = 1.5
#: A cloud whose largest intensity stays below ``intensity_max`` / this is reported too.
INTENSITY_UNDERRANGE_FACTOR = 50.0
#: Fewer points than this say nothing about the driver's scale.
MIN_POINTS_FOR_SCALE_CHECK = 1000
#: Intensity ranges drivers use; the advice names the smallest that holds what was seen.
COMMON_INTENSITY_MAXIMA = (1.0, 100.0, 255.0, 4095.0, 65535.0)


def pose_matrix(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """``(4, 4)`` float64 from a translation (metres) and a unit quaternion (x, y, z, w)."""
    x, y, z, w = (float(v) for v in quaternion_xyzw)
    norm = math.sqrt(x * x + y * y + z * z + w * w)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ConfigError(f"quaternion {list(quaternion_xyzw)} has no rotation: publish a unit quaternion")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    m = np.eye(4)
    m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    m[:3, 3] = [float(v) for v in translation]
    return m


def pose_from_xyz_rpy(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> np.ndarray:
    """``(4, 4)`` float64 of a sensor mounted at x, y, z (metres) with roll, pitch, yaw (radians,
    applied as R = Rz(yaw) Ry(pitch) Rx(roll), the ROS and tf convention)."""
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    m = np.eye(4)
    m[:3, :3] = [[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                 [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                 [-sp, cp * sr, cp * cr]]
    m[:3, 3] = [x, y, z]
    return m


def parse_sensor_pose(text: str) -> np.ndarray:
    """``"x y z roll pitch yaw"`` (metres, radians) -> ``(4, 4)``; ``ConfigError`` otherwise."""
    parts = text.replace(",", " ").split()
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 6 or not all(np.isfinite(values)):
        raise ConfigError(f"sensor pose '{text}' must be six numbers \"x y z roll pitch yaw\" "
                          "(metres and radians), e.g. \"0 0 1.73 0 0 0\"")
    return pose_from_xyz_rpy(*values)


def transform_points(points: np.ndarray, matrix: Optional[np.ndarray]) -> np.ndarray:
    """Applies ``matrix`` (4, 4) to x, y, z of ``points`` (N, 4) float32 in place and returns it.

    Intensity is untouched; NaN rows stay NaN. ``None`` (cloud already in the target frame)
    costs nothing.
    """
    if matrix is None or len(points) == 0:
        return points
    # Nine multiply-adds per point written out: a (N, 3) x (3, 3) matmul would go to BLAS, whose
    # thread pool then wakes on every cloud and takes the cores from the engines.
    r = np.asarray(matrix, np.float32)
    x, y, z = points[:, 0].copy(), points[:, 1].copy(), points[:, 2].copy()
    for row in range(3):
        out = points[:, row]
        np.multiply(x, r[row, 0], out=out)
        out += y * r[row, 1]
        out += z * r[row, 2]
        out += r[row, 3]
    return points


def is_identity(matrix: np.ndarray, tol: float = 1e-9) -> bool:
    return bool(np.allclose(matrix, np.eye(4), atol=tol, rtol=0.0))


@dataclass(frozen=True)
class IntensityScale:
    """The driver's intensity range and the engines': ``factor`` maps one to the other."""

    intensity_max: float
    engine_intensity_max: float = ENGINE_INTENSITY_MAX

    def __post_init__(self):
        for name in ("intensity_max", "engine_intensity_max"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ConfigError(f"{name} = {value} must be a positive number: the largest intensity "
                                  "the driver reports (e.g. 1.0 for 0..1, 255.0 for 0..255)")

    @property
    def factor(self) -> float:
        return self.engine_intensity_max / self.intensity_max

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Rescales column 3 of ``points`` (N, 4) float32 in place; no work when the ranges agree."""
        if self.factor != 1.0 and len(points):
            points[:, 3] *= np.float32(self.factor)
        return points

    def check(self, raw_intensity: np.ndarray) -> Optional[str]:
        """A message saying which ``intensity_max`` to set when ``raw_intensity`` (driver units)
        clearly does not fit the configured range; ``None`` when it fits or says too little."""
        if len(raw_intensity) < MIN_POINTS_FOR_SCALE_CHECK:
            return None
        top = float(raw_intensity.max())
        if not np.isfinite(top):  # NaN or inf rows: look at the finite ones only
            finite = raw_intensity[np.isfinite(raw_intensity)]
            if len(finite) < MIN_POINTS_FOR_SCALE_CHECK:
                return None
            top = float(finite.max())
        if top > self.intensity_max * INTENSITY_OVERRANGE_FACTOR:
            fits = [m for m in COMMON_INTENSITY_MAXIMA if m >= top]
            advice = f"{fits[0]:g}" if fits else f"{top:g}"
            return (f"intensity reaches {top:g} but intensity_max is {self.intensity_max:g}: "
                    f"set intensity_max:={advice} (the largest intensity the driver reports)")
        if 0 < top * INTENSITY_UNDERRANGE_FACTOR < self.intensity_max:
            fits = [m for m in COMMON_INTENSITY_MAXIMA if m >= top]
            return (f"intensity never exceeds {top:g} but intensity_max is {self.intensity_max:g}: "
                    f"if the driver reports 0..{fits[0]:g}, set intensity_max:={fits[0]:g}")
        return None


@dataclass(frozen=True)
class SensorFrame:
    """The clouds' frame and intensity range: ``pose`` (4, 4) is that frame in base_link."""

    frame_id: str = "base_link"
    pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    intensity_max: float = ENGINE_INTENSITY_MAX

    def cloud(self, points: np.ndarray) -> np.ndarray:
        """base_link points (N, 4), intensity 0..255 -> this frame and intensity range."""
        out = transform_points(points.copy(), np.linalg.inv(self.pose))
        out[:, 3] *= np.float32(self.intensity_max / ENGINE_INTENSITY_MAX)
        return out
