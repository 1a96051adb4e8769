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
    half = params.ground.half_extent_m
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(points[:, 0] + points[:, 1] + points[:, 2]) & (np.abs(points[:, 0]) < half) \
            & (np.abs(points[:, 1]) < half)
    everything = bool(valid.all())  # the common case: no copy of the cloud
    idx = None if everything else np.flatnonzero(valid)
    p = points if everything else points[idx]
    if len(p) < 10:
        size = int(round(2 * params.grid_half_extent_m / params.grid_resolution_m))
        return BaselineResult(np.full(n, UNLABELLED, np.uint8), np.zeros((0, 7), np.float32),
                              np.zeros(0, np.int64), np.zeros((size, size), np.int8), params.grid_resolution_m,
                              -params.grid_half_extent_m, {"ground": 0.0, "clusters": 0.0, "total": 0.0})
    model = fit_ground(p, params.ground)
    height = p[:, 2] - model.height(p[:, 0], p[:, 1])
    is_ground = height < params.ground.ground_tolerance_m
    classified = np.full(len(p), OBSTACLE, np.uint8)
    classified[is_ground] = GROUND
    if everything:
        labels = classified
    else:
        labels = np.full(n, UNLABELLED, np.uint8)
        labels[idx] = classified
    t1 = time.perf_counter()
    c_half = params.cluster_half_extent_m
    obstacle = ~is_ground & (height >= params.min_height_m) & (height <= params.max_height_m) \
        & (np.abs(p[:, 0]) < c_half) & (np.abs(p[:, 1]) < c_half)
    boxes, box_points = cluster_boxes(p[obstacle], height[obstacle], params)
    grid = occupancy_grid(p, height, params)
    t2 = time.perf_counter()
    return BaselineResult(labels, boxes, box_points, grid, params.grid_resolution_m, -params.grid_half_extent_m,
                          {"ground": (t1 - t0) * 1e3, "clusters": (t2 - t1) * 1e3, "total": (t2 - t0) * 1e3})


def cluster_boxes(pts: np.ndarray, height: np.ndarray, params: BaselineParams):
    """Connected components of obstacle points ``(K, >=3)`` (``height`` (K,) above the apron) on a
    BEV grid -> oriented boxes (M, 7) x, y, z, l, w, h, yaw and the points of each (M,).

    The points are ordered by cluster once (a radix sort of the 16-bit cluster ids), so that
    every per-cluster sum, minimum and maximum is one ``reduceat`` over contiguous runs."""
    half, cell = params.cluster_half_extent_m, params.cluster_cell_m
    inside = (np.abs(pts[:, 0]) < half) & (np.abs(pts[:, 1]) < half)
    if not inside.all():
        pts, height = pts[inside], height[inside]
    size = int(np.ceil(2 * half / cell))
    scale = np.float32(1.0 / cell)
    ix = np.clip(((pts[:, 0] + np.float32(half)) * scale).astype(np.intp), 0, size - 1)
    iy = np.clip(((pts[:, 1] + np.float32(half)) * scale).astype(np.intp), 0, size - 1)
    occupied = np.zeros((size, size), bool)
    occupied[iy, ix] = True
    comp, n_comp = ndimage.label(occupied, structure=np.ones((3, 3), bool))
    if n_comp == 0:
        return np.zeros((0, 7), np.float32), np.zeros(0, np.int64)
    lab = comp[iy, ix] - 1  # (K,) cluster of each point; every cluster holds at least one point
    order = np.argsort(lab.astype(np.uint16) if n_comp <= 65535 else lab, kind="stable")
    lab = lab[order]
    starts = np.flatnonzero(np.diff(lab, prepend=-1))  # (n_comp,) first point of each cluster
    count = np.diff(np.append(starts, len(lab))).astype(float)
    x, y = pts[order, 0].astype(float), pts[order, 1].astype(float)
    mx = np.add.reduceat(x, starts) / count
    my = np.add.reduceat(y, starts) / count
    dx, dy = x - mx[lab], y - my[lab]
    cxx = np.add.reduceat(dx * dx, starts) / count
    cyy = np.add.reduceat(dy * dy, starts) / count
    cxy = np.add.reduceat(dx * dy, starts) / count
    yaw = 0.5 * np.arctan2(2 * cxy, cxx - cyy)  # principal axis of each cluster
    cy_, sy_ = np.cos(yaw), np.sin(yaw)
    c, s = cy_[lab], sy_[lab]
    u, v = c * dx + s * dy, c * dy - s * dx
    umin, umax = np.minimum.reduceat(u, starts), np.maximum.reduceat(u, starts)
    vmin, vmax = np.minimum.reduceat(v, starts), np.maximum.reduceat(v, starts)
    z = pts[order, 2]
    zmin = np.minimum.reduceat(z - height[order], starts).astype(float)  # the apron under the cluster
    zmax = np.maximum.reduceat(z, starts).astype(float)
    cu, cv = (umin + umax) / 2, (vmin + vmax) / 2
    centre_x = mx + cy_ * cu - sy_ * cv
    centre_y = my + sy_ * cu + cy_ * cv
    length = np.maximum(umax - umin, cell)
    width = np.maximum(vmax - vmin, cell)
    boxes = np.column_stack([centre_x, centre_y, (zmin + zmax) / 2, length, width, np.maximum(zmax - zmin, 0.1),
                             yaw]).astype(np.float32)
    keep = count >= params.min_cluster_points
    return boxes[keep], count[keep].astype(np.int64)


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
