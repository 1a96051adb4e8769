"""The classical baseline: ground, obstacle clusters with oriented boxes, BEV occupancy.

No learning and no per-point Python loops: ground by RANSAC and local planes, obstacles by
connected components on a BEV grid of non-ground points, boxes by per-cluster PCA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict

import numpy as np
from scipy import ndimage

from airside_perception.baseline.ground import GroundParams, fit_ground
from airside_perception.classes import UNLABELLED
from airside_perception.errors import ConfigError

BASELINE_CLASSES = ("ground", "obstacle")
GROUND, OBSTACLE = 0, 1


@dataclass(frozen=True)
class BaselineParams:
    ground: GroundParams = field(default_factory=GroundParams)
    cluster_cell_m: float = 0.4
    cluster_half_extent_m: float = 60.0
    min_height_m: float = 0.18  # above the apron: lower returns are not obstacles
    max_height_m: float = 4.0  # wings and tails above this are not obstacles to a tug
    min_cluster_points: int = 3
    grid_resolution_m: float = 0.4
    grid_half_extent_m: float = 40.0
    occupancy_band_m: tuple = (0.1, 2.5)

    def __post_init__(self):
        if self.max_height_m <= self.min_height_m:
            raise ConfigError(f"max_height_m {self.max_height_m} must exceed min_height_m {self.min_height_m}")
        if self.cluster_cell_m <= 0 or self.grid_resolution_m <= 0:
            raise ConfigError("cluster_cell_m and grid_resolution_m must be positive")


@dataclass(frozen=True)
class BaselineResult:
    """labels (N,) uint8 0 ground / 1 obstacle / 255 not classified, input order;
    boxes (M, 7) x, y, z, l, w, h, yaw; grid (H, W) int8 0/100; timings in ms."""

    labels: np.ndarray
    boxes: np.ndarray
    box_points: np.ndarray
    grid: np.ndarray
    grid_resolution_m: float
    grid_origin_m: float
    timings_ms: Dict[str, float]


def run_baseline(points: np.ndarray, params: BaselineParams) -> BaselineResult:
    """points (N, 4) float32 x, y, z, intensity, base_link; NaN rows allowed."""
    t0 = time.perf_counter()
    n = len(points)
    labels = np.full(n, UNLABELLED, np.uint8)
    half = params.ground.half_extent_m
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(points[:, 0] + points[:, 1] + points[:, 2]) & (np.abs(points[:, 0]) < half) \
            & (np.abs(points[:, 1]) < half)
    idx = np.flatnonzero(valid)
    p = points[idx]
    if len(p) < 10:
        size = int(round(2 * params.grid_half_extent_m / params.grid_resolution_m))
        return BaselineResult(labels, np.zeros((0, 7), np.float32), np.zeros(0, np.int64),
                              np.zeros((size, size), np.int8), params.grid_resolution_m,
                              -params.grid_half_extent_m, {"ground": 0.0, "clusters": 0.0, "total": 0.0})
    model = fit_ground(p, params.ground)
    height = p[:, 2] - model.height(p[:, 0], p[:, 1])
    is_ground = height < params.ground.ground_tolerance_m
    labels[idx] = np.where(is_ground, GROUND, OBSTACLE)
    t1 = time.perf_counter()
    obstacle = ~is_ground & (height >= params.min_height_m) & (height <= params.max_height_m)
    boxes, box_points = cluster_boxes(p[obstacle], height[obstacle], params)
    grid = occupancy_grid(p, height, params)
    t2 = time.perf_counter()
    return BaselineResult(labels, boxes, box_points, grid, params.grid_resolution_m, -params.grid_half_extent_m,
                          {"ground": (t1 - t0) * 1e3, "clusters": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3})


def cluster_boxes(pts: np.ndarray, height: np.ndarray, params: BaselineParams):
    """Connected components of obstacle points on a BEV grid -> oriented boxes (M, 7)."""
    half, cell = params.cluster_half_extent_m, params.cluster_cell_m
    inside = (np.abs(pts[:, 0]) < half) & (np.abs(pts[:, 1]) < half)
    pts, height = pts[inside], height[inside]
    size = int(np.ceil(2 * half / cell))
    ix = ((pts[:, 0] + half) / cell).astype(np.int64)
    iy = ((pts[:, 1] + half) / cell).astype(np.int64)
    occupied = np.zeros((size, size), bool)
    occupied[iy, ix] = True
    comp, n_comp = ndimage.label(occupied, structure=np.ones((3, 3), bool))
    if n_comp == 0:
        return np.zeros((0, 7), np.float32), np.zeros(0, np.int64)
    lab = (comp[iy, ix] - 1).astype(np.intp)  # (K,) cluster of each point
    count = np.bincount(lab, minlength=n_comp).astype(float)
    x, y = pts[:, 0].astype(float), pts[:, 1].astype(float)
    mx = np.bincount(lab, x, n_comp) / count
    my = np.bincount(lab, y, n_comp) / count
    dx, dy = x - mx[lab], y - my[lab]
    cxx = np.bincount(lab, dx * dx, n_comp) / count
    cyy = np.bincount(lab, dy * dy, n_comp) / count
    cxy = np.bincount(lab, dx * dy, n_comp) / count
    yaw = 0.5 * np.arctan2(2 * cxy, cxx - cyy)  # principal axis of each cluster
    c, s = np.cos(yaw)[lab], np.sin(yaw)[lab]
    u, v = c * dx + s * dy, -s * dx + c * dy
    umin, umax = _minmax(u, lab, n_comp)
    vmin, vmax = _minmax(v, lab, n_comp)
    ground_z = pts[:, 2] - height
    zmin, _ = _minmax(ground_z, lab, n_comp)
    _, zmax = _minmax(pts[:, 2].astype(float), lab, n_comp)
    cu, cv = (umin + umax) / 2, (vmin + vmax) / 2
    cy_, sy_ = np.cos(yaw), np.sin(yaw)
    centre_x = mx + cy_ * cu - sy_ * cv
    centre_y = my + sy_ * cu + cy_ * cv
    length = np.maximum(umax - umin, cell)
    width = np.maximum(vmax - vmin, cell)
    boxes = np.column_stack([centre_x, centre_y, (zmin + zmax) / 2, length, width, np.maximum(zmax - zmin, 0.1),
                             yaw]).astype(np.float32)
    keep = count >= params.min_cluster_points
    return boxes[keep], count[keep].astype(np.int64)


def _minmax(values: np.ndarray, lab: np.ndarray, n: int):
    lo = np.full(n, np.inf, dtype=values.dtype)  # same dtype: ufunc.at's fast path
    hi = np.full(n, -np.inf, dtype=values.dtype)
    np.minimum.at(lo, lab, values)
    np.maximum.at(hi, lab, values)
    return lo, hi


def occupancy_grid(pts: np.ndarray, height: np.ndarray, params: BaselineParams) -> np.ndarray:
    """(H, W) int8: 100 where a return lies in the collision band above the apron, else 0."""
    half, res = params.grid_half_extent_m, params.grid_resolution_m
    size = int(round(2 * half / res))
    lo, hi = params.occupancy_band_m
    band = (height >= max(lo, params.min_height_m)) & (height <= hi) & \
        (np.abs(pts[:, 0]) < half) & (np.abs(pts[:, 1]) < half)
    ix = ((pts[band, 0] + half) / res).astype(np.int64)
    iy = ((pts[band, 1] + half) / res).astype(np.int64)
    grid = np.zeros((size, size), np.int8)
    grid[iy, ix] = 100
    return grid
