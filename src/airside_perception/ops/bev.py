"""Crop and pillar encoding: one BEV raster per cloud, shared by every task.

Each pillar (BEV cell) is summarised by fixed statistics of its points instead of a learned
PointNet: on the vehicle's CPU fallback the learned encoder did not fit the budget, and the
statistics carry what the 2D networks need (occupancy, heights, reflectivity).

The array functions of :mod:`airside_perception.ops` take an array module ``xp``: NumPy by
default, CuPy for device arrays (:mod:`airside_perception.ops.gpu`). One implementation serves
both; ``scripts/check_gpu_ops.py`` proves on a CUDA GPU that CuPy gives NumPy's results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from airside_perception.errors import ConfigError

N_BEV_FEATURES = 8
N_POINT_FEATURES = 5


@dataclass(frozen=True)
class BevSpec:
    """The pillar grid, in base_link: square, centred on the vehicle."""

    half_extent_m: float = 51.2
    resolution_m: float = 0.4
    z_min_m: float = -3.0
    z_max_m: float = 13.0
    max_pillars: int = 40000
    intensity_max: float = 255.0  # the engines' intensity range is 0..intensity_max

    def __post_init__(self):
        size = 2 * self.half_extent_m / self.resolution_m
        if abs(size - round(size)) > 1e-6 or round(size) % 8:
            raise ConfigError(f"2 * half_extent_m / resolution_m = {size:g} must be a whole multiple of 8 "
                              "(the networks downsample three times)")
        if self.z_max_m <= self.z_min_m:
            raise ConfigError(f"z_max_m {self.z_max_m} must exceed z_min_m {self.z_min_m}")
        if self.max_pillars <= 0:
            raise ConfigError(f"max_pillars {self.max_pillars} must be positive")
        if not self.intensity_max > 0:
            raise ConfigError(f"intensity_max {self.intensity_max} must be positive")

    @property
    def size(self) -> int:
        return int(round(2 * self.half_extent_m / self.resolution_m))


@dataclass(frozen=True)
class BevInput:
    """Everything the networks read about one cloud.

    bev (1, 8, S, S) float32 raster, row = y, column = x;
    kept (K,) int64 indices of the input points that were encoded (finite, in range, within
    the pillar capacity), in input order; point_cells (K,) int64 flat cell of each kept point;
    point_features (K, 5) float32; overflow_points: points dropped by the pillar capacity.
    """

    bev: np.ndarray
    kept: np.ndarray
    point_cells: np.ndarray
    point_features: np.ndarray
    n_input: int
    overflow_points: int
    overflow_pillars: int


def scatter_max(xp, target, index, values) -> None:
    """``target[index] = max(target[index], values)``, repeated indices included."""
    if xp is np:
        np.maximum.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_max(target, index, values)


def scatter_min(xp, target, index, values) -> None:
    if xp is np:
        np.minimum.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_min(target, index, values)


def crop(points, spec: BevSpec, xp=np):
    """Indices of the finite points of ``(N, 4)`` inside the grid and height range."""
    h = spec.half_extent_m
    with np.errstate(invalid="ignore"):  # NaN compares False: NaN rows fall out here
        inside = ((xp.abs(points[:, 0]) < h) & (xp.abs(points[:, 1]) < h)
                  & (points[:, 2] >= spec.z_min_m) & (points[:, 2] < spec.z_max_m))
    return xp.flatnonzero(inside & xp.isfinite(points[:, 3]))


def encode(points, spec: BevSpec, xp=np) -> BevInput:
    """Encodes ``(N, 4)`` float32 x, y, z, intensity (base_link) into the shared BEV input.

    bev channels: occupied, log(1 + count) / 4, max z / 4, min z / 4, mean z / 4,
    max intensity / I, mean intensity / I, share of points 0.2 m above the pillar floor.
    point features: z - pillar min z, z - pillar mean z, intensity / I, z / 4, range / 50;
    I is ``spec.intensity_max`` (255 for the shipped engines).
    """
    s = spec.size
    kept = crop(points, spec, xp)
    p = xp.take(points, kept, axis=0)  # 10x faster than points[kept] for (N, 4) rows
    ix = ((p[:, 0] + spec.half_extent_m) / spec.resolution_m).astype(xp.int64)
    iy = ((p[:, 1] + spec.half_extent_m) / spec.resolution_m).astype(xp.int64)
    xp.clip(ix, 0, s - 1, out=ix)
    xp.clip(iy, 0, s - 1, out=iy)
    cells = iy * s + ix
    count = xp.bincount(cells, minlength=s * s)
    overflow_pillars = 0
    overflow_points = 0
    n_pillars = int(xp.count_nonzero(count))
    if n_pillars > spec.max_pillars:
        cells, kept, p, count, overflow_pillars, overflow_points = _cap_pillars(cells, kept, p, count, spec, xp)
    z, inten = p[:, 2], p[:, 3]
    zmax = xp.full(s * s, -xp.inf, xp.float32)
    zmin = xp.full(s * s, xp.inf, xp.float32)
    imax = xp.zeros(s * s, xp.float32)
    scatter_max(xp, zmax, cells, z)
    scatter_min(xp, zmin, cells, z)
    scatter_max(xp, imax, cells, inten)
    occ = xp.flatnonzero(count)  # only occupied pillars are summarised
    n = count[occ].astype(xp.float32)
    zsum = xp.bincount(cells, weights=z.astype(xp.float64), minlength=s * s)
    isum = xp.bincount(cells, weights=inten.astype(xp.float64), minlength=s * s)
    zmin_pt = xp.take(zmin, cells)
    above = xp.bincount(cells[(z - zmin_pt) > 0.2], minlength=s * s)  # counts: the same sums as 0/1 weights
    bev = xp.zeros((N_BEV_FEATURES, s * s), xp.float32)
    zmean_occ = zsum[occ] / n
    bev[0, occ] = 1.0
    bev[1, occ] = np.log1p(n) / 4.0
    bev[2, occ] = zmax[occ] / 4.0
    bev[3, occ] = zmin[occ] / 4.0
    bev[4, occ] = zmean_occ / 4.0
    bev[5, occ] = imax[occ] / spec.intensity_max
    bev[6, occ] = isum[occ] / n / spec.intensity_max
    bev[7, occ] = above[occ] / n
    zmean = xp.zeros(s * s, xp.float32)
    zmean[occ] = zmean_occ
    feats = xp.empty((len(p), N_POINT_FEATURES), xp.float32)
    feats[:, 0] = z - zmin_pt
    feats[:, 1] = z - xp.take(zmean, cells)
    feats[:, 2] = inten / spec.intensity_max
    feats[:, 3] = z / 4.0
    feats[:, 4] = xp.sqrt(p[:, 0] * p[:, 0] + p[:, 1] * p[:, 1]) / 50.0
    return BevInput(bev.reshape(1, N_BEV_FEATURES, s, s), kept, cells, feats, len(points),
                    overflow_points, overflow_pillars)


def _cap_pillars(cells, kept, p, count, spec: BevSpec, xp=np) -> Tuple:
    """Keeps the ``max_pillars`` pillars nearest the vehicle; the rest are counted as overflow."""
    s = spec.size
    occupied = xp.flatnonzero(count)
    cy, cx = xp.divmod(occupied, s)
    dist = (cx - s / 2 + 0.5) ** 2 + (cy - s / 2 + 0.5) ** 2
    keep_cells = occupied[xp.argsort(dist, kind="stable")[: spec.max_pillars]]
    allowed = xp.zeros(s * s, bool)
    allowed[keep_cells] = True
    mask = allowed[cells]
    dropped_points = int((~mask).sum())
    new_count = xp.where(allowed, count, 0)
    return (cells[mask], kept[mask], p[mask], new_count, len(occupied) - spec.max_pillars, dropped_points)
