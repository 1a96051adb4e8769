"""Ground segmentation without learning: a global RANSAC plane, refined into local planes.

1. Seeds: in each coarse BEV cell, the points within ``seed_band_m`` of the cell's lowest point.
   Larger clouds than ``fit_max_points`` are searched in an even thinning of the cloud: a 4 m
   cell of a dense scan holds hundreds of returns, and every second one finds the same apron.
2. A RANSAC plane through the seeds (vectorised over all hypotheses, scored on a sample of
   ``ransac_sample`` seeds, refined by least squares on every inlier seed) rejects seeds on
   roofs, wings and vehicles, and gives the apron's overall slope.
3. Every ``local_cell_m`` patch with enough inlier seeds gets its own least-squares plane
   (solved for all patches at once); thin patches keep the global plane. Gentle slopes and
   bumps of the apron follow the local planes.
4. A point is ground when it lies within ``ground_tolerance_m`` of its patch's plane.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airside_perception.errors import ConfigError


@dataclass(frozen=True)
class GroundParams:
    half_extent_m: float = 80.0
    seed_cell_m: float = 4.0
    seed_band_m: float = 0.15
    ransac_iterations: int = 60
    ransac_sample: int = 1000
    fit_max_points: int = 150000
    ransac_tolerance_m: float = 0.25
    local_cell_m: float = 8.0
    min_local_seeds: int = 12
    max_local_seeds: int = 20000
    ground_tolerance_m: float = 0.18
    max_slope: float = 0.15
    seed: int = 0

    def __post_init__(self):
        for name in ("half_extent_m", "seed_cell_m", "local_cell_m", "ground_tolerance_m", "ransac_tolerance_m"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"ground.{name} = {getattr(self, name)} must be positive")
        if self.ransac_iterations < 1 or self.ransac_sample < 3:
            raise ConfigError("ground.ransac_iterations must be >= 1 and ground.ransac_sample >= 3")
        if self.fit_max_points < 1000:
            raise ConfigError(f"ground.fit_max_points = {self.fit_max_points} must be >= 1000: fewer points "
                              "leave seed cells empty")


@dataclass(frozen=True)
class GroundModel:
    """Plane ``z = a x + b y + c`` per local patch, (P, P, 3); and the global plane (3,)."""

    planes: np.ndarray
    global_plane: np.ndarray
    cell_m: float
    half_extent_m: float

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Apron height under each (x, y), metres, base_link."""
        flat, _ = _cell_index(x, y, self.half_extent_m, self.cell_m)
        a, b, c = self.planes.reshape(-1, 3).astype(x.dtype).T.copy()
        out = a[flat] * x
        out += b[flat] * y
        out += c[flat]
        return out


def _cell_index(x, y, half, cell):
    """Flat index of the ``cell`` x ``cell`` BEV cell of each (x, y), and the grid's side."""
    n = int(np.ceil(2 * half / cell))
    scale = x.dtype.type(1.0 / cell)
    ix = ((x + x.dtype.type(half)) * scale).astype(np.intp)
    iy = ((y + y.dtype.type(half)) * scale).astype(np.intp)
    np.clip(ix, 0, n - 1, out=ix)
    np.clip(iy, 0, n - 1, out=iy)
    iy *= n
    iy += ix
    return iy, n


def _ransac_plane(pts: np.ndarray, params: GroundParams) -> np.ndarray:
    """Best plane (a, b, c) of ``z = a x + b y + c`` through ``(M, 3)`` float64 points: every
    hypothesis scored at once on a sample, then a least-squares fit to all of its inliers."""
    rng = np.random.default_rng(params.seed)
    if len(pts) < 3:
        return np.array([0.0, 0.0, float(np.median(pts[:, 2])) if len(pts) else 0.0])
    sample = pts[rng.choice(len(pts), params.ransac_sample, replace=False)] if len(pts) > params.ransac_sample \
        else pts
    tri = sample[rng.integers(0, len(sample), size=(params.ransac_iterations, 3))]  # (H, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    ok = np.abs(normal[:, 2]) > 1e-6
    normal = np.where(ok[:, None], normal, [0.0, 0.0, 1.0])
    a = -normal[:, 0] / normal[:, 2]
    b = -normal[:, 1] / normal[:, 2]
    c = tri[:, 0, 2] - a * tri[:, 0, 0] - b * tri[:, 0, 1]
    steep = ~ok | (np.hypot(a, b) > params.max_slope)
    resid = np.abs(sample[None, :, 2] - (a[:, None] * sample[None, :, 0] + b[:, None] * sample[None, :, 1]
                                         + c[:, None]))
    score = (resid < params.ransac_tolerance_m).sum(axis=1)
    score[steep] = -1
    best = int(np.argmax(score))
    plane = np.array([a[best], b[best], c[best]])
    inliers = pts[np.abs(pts[:, 2] - (plane[0] * pts[:, 0] + plane[1] * pts[:, 1] + plane[2]))
                  < params.ransac_tolerance_m]
    return _lstsq_plane(inliers) if len(inliers) >= 3 else plane


def _lstsq_plane(pts: np.ndarray) -> np.ndarray:
    """Least-squares (a, b, c) through ``(M, 3)`` points, from the 3 x 3 normal equations (no BLAS
    call on an M x 3 design matrix: a 3 x 3 solve needs no thread pool)."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    sx, sy, sxy = x.sum(), y.sum(), (x * y).sum()
    ata = np.array([[(x * x).sum(), sxy, sx], [sxy, (y * y).sum(), sy], [sx, sy, float(len(pts))]])
    atb = np.array([(x * z).sum(), (y * z).sum(), z.sum()])
    try:
        return np.linalg.solve(ata + np.eye(3) * 1e-9, atb)
    except np.linalg.LinAlgError:  # every inlier on one line: a level plane through them
        return np.array([0.0, 0.0, float(np.median(z))])


def fit_ground(points: np.ndarray, params: GroundParams) -> GroundModel:
    """Fits the apron under ``(N, >=3)`` finite points, base_link."""
    if len(points) > params.fit_max_points:  # an even thinning: a view, no copy
        points = points[:: int(np.ceil(len(points) / params.fit_max_points))]
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    cells, n = _cell_index(x, y, params.half_extent_m, params.seed_cell_m)
    zmin = np.full(n * n, np.inf, dtype=z.dtype)  # same dtype: ufunc.at's fast path
    np.minimum.at(zmin, cells, z)
    seed_idx = np.flatnonzero(z - zmin[cells] < params.seed_band_m)
    if len(seed_idx) > params.max_local_seeds:  # an even thinning keeps every patch represented
        seed_idx = seed_idx[:: int(np.ceil(len(seed_idx) / params.max_local_seeds))]
    seeds = points[seed_idx, :3].astype(np.float64)
    plane = _ransac_plane(seeds, params)
    resid = np.abs(seeds[:, 2] - (plane[0] * seeds[:, 0] + plane[1] * seeds[:, 1] + plane[2]))
    inl = seeds[resid < params.ransac_tolerance_m]
    lcells, m = _cell_index(inl[:, 0], inl[:, 1], params.half_extent_m, params.local_cell_m)
    # Normal equations of every patch at once: sums of x, y, 1 products and z products.
    xs, ys, zs = inl[:, 0], inl[:, 1], inl[:, 2]
    def s(w):
        return np.bincount(lcells, weights=w, minlength=m * m)
    cnt = np.bincount(lcells, minlength=m * m).astype(float)
    sxx, sxy, sx, syy, sy = s(xs * xs), s(xs * ys), s(xs), s(ys * ys), s(ys)
    sxz, syz, sz = s(xs * zs), s(ys * zs), s(zs)
    ata = np.stack([np.stack([sxx, sxy, sx], -1), np.stack([sxy, syy, sy], -1), np.stack([sx, sy, cnt], -1)], -2)
    atb = np.stack([sxz, syz, sz], -1)
    planes = np.tile(plane, (m * m, 1))
    enough = cnt >= params.min_local_seeds
    if enough.any():
        reg = np.eye(3) * 1e-6
        local = np.linalg.solve(ata[enough] + reg, atb[enough][..., None])[..., 0]
        sane = np.hypot(local[:, 0], local[:, 1]) <= params.max_slope
        idx = np.flatnonzero(enough)[sane]
        planes[idx] = local[sane]
    return GroundModel(planes.reshape(m, m, 3), plane, params.local_cell_m, params.half_extent_m)


def segment_ground(points: np.ndarray, model: GroundModel, tolerance_m: float) -> np.ndarray:
    """(N,) bool: points within ``tolerance_m`` of the fitted apron (or below it)."""
    h = model.height(points[:, 0], points[:, 1])
    return points[:, 2] - h < tolerance_m
