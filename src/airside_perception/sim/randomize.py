"""Domain randomisation of training scans: what real sensors and sites vary.

Each training scan may come from a street instead of an apron (buildings, trees, poles,
fences, road cars and vans: :mod:`airside_perception.sim.offsite`), from one roof sensor of
another kind (32, 64 or 128 beams, other vertical fields of view and mount heights) instead of
the vehicle's three, with the mount a little off in height, pitch and roll, another intensity
gain, rays dropped in patches and extra range noise. The ranges stay inside what a correctly
configured vehicle shows, so the distribution-shift monitor, calibrated on the nominal apron,
still flags what lies beyond them (a missing transform, a wrong intensity scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from airside_perception.frames import pose_from_xyz_rpy, transform_points
from airside_perception.sim.scanner import LidarSpec, _rings


@dataclass(frozen=True)
class Randomization:
    street_share: float = 0.15  # scans of streets instead of aprons
    single_sensor_share: float = 0.2  # scans from one roof sensor of another kind
    beams: Tuple[int, ...] = (32, 64, 128)
    mount_height_m: Tuple[float, float] = (1.6, 2.4)  # of that roof sensor
    height_jitter_m: float = 0.15  # whole cloud, +-
    tilt_jitter_deg: float = 1.0  # pitch and roll, +-
    intensity_gain: Tuple[float, float] = (0.7, 1.3)
    ray_drop: Tuple[float, float] = (0.0, 0.3)  # share of points lost, in azimuth patches
    range_noise_m: float = 0.03  # extra, along the ray, standard deviation up to this


def random_rig(rng: np.random.Generator, r: Randomization) -> Tuple[LidarSpec, ...]:
    """One roof LiDAR with a drawn beam count, vertical field of view and mount height."""
    n = int(rng.choice(r.beams))
    lo = float(rng.uniform(-30.0, -15.0))
    hi = float(rng.uniform(2.0, 22.5))
    columns = int(rng.choice([1024, 1800, 2048]))
    height = float(rng.uniform(*r.mount_height_m))
    return (LidarSpec(f"roof{n}", (0.0, 0.0, height), 0.0, _rings(n, lo, hi, 0.0), columns, 360.0, 120.0, 0.8,
                      0.02, 0.02),)


def perturb(points: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, r: Randomization) \
        -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """points (N, 4) base_link, boxes (M, 7) -> the perturbed points, boxes (moved with the
    cloud), and the (N,) bool mask of points kept (labels follow it)."""
    pts = points.copy()
    sensor = np.hypot(pts[:, 0], pts[:, 1])
    direction = pts[:, :3] / np.maximum(np.linalg.norm(pts[:, :3], axis=1, keepdims=True), 1e-3)
    pts[:, :3] += direction * rng.normal(0.0, rng.uniform(0.0, r.range_noise_m), (len(pts), 1)).astype(np.float32)
    pts[:, 3] = np.minimum(pts[:, 3] * np.float32(rng.uniform(*r.intensity_gain)), 255.0)
    tilt = np.radians(r.tilt_jitter_deg)
    mount = pose_from_xyz_rpy(0.0, 0.0, rng.uniform(-r.height_jitter_m, r.height_jitter_m),
                              rng.uniform(-tilt, tilt), rng.uniform(-tilt, tilt), 0.0)
    transform_points(pts, mount)
    moved = boxes.copy()
    if len(moved):
        centres = np.c_[moved[:, :3], np.zeros(len(moved))].astype(np.float32)
        moved[:, :3] = transform_points(centres, mount)[:, :3]
    keep = np.ones(len(pts), bool)
    share = rng.uniform(*r.ray_drop)
    if share > 0 and len(pts):
        azimuth = np.arctan2(pts[:, 1], pts[:, 0])
        n_patches = int(rng.integers(4, 16))
        width = 2 * np.pi * share / n_patches
        for start in rng.uniform(-np.pi, np.pi, n_patches):
            offset = np.mod(azimuth - start, 2 * np.pi)
            keep &= ~((offset < width) & (sensor > 0))
    return pts[keep], moved, keep
