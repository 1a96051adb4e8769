"""Solid primitives of the synthetic world and ray intersection with them.

Every primitive is yawed about z only. Three shapes cover the apron:

- ``BOX``: half sizes ``(hx, hy, hz)`` along the primitive's own axes;
- ``ZCYL``: a vertical cylinder, radius ``hx`` (= ``hy``), half height ``hz``;
- ``XCYL``: a horizontal cylinder along the primitive's x axis, half length ``hx``,
  radius ``hy`` (= ``hz``): fuselages, engines, tanks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

BOX = 0
ZCYL = 1
XCYL = 2

_EPS = 1e-9


@dataclass(frozen=True)
class Primitive:
    """One solid. ``center`` in metres (world frame), ``half`` half extents, ``yaw`` radians."""

    shape: int
    center: Tuple[float, float, float]
    half: Tuple[float, float, float]
    yaw: float
    reflectivity: float


def box(center: Tuple[float, float, float], size: Tuple[float, float, float], yaw: float,
        reflectivity: float) -> Primitive:
    """A box of full ``size`` (length x, width y, height z) metres."""
    return Primitive(BOX, tuple(center), (size[0] / 2, size[1] / 2, size[2] / 2), yaw, reflectivity)


def zcyl(center: Tuple[float, float, float], radius: float, height: float,
         reflectivity: float) -> Primitive:
    """A vertical cylinder of ``radius`` and full ``height`` metres."""
    return Primitive(ZCYL, tuple(center), (radius, radius, height / 2), 0.0, reflectivity)


def xcyl(center: Tuple[float, float, float], length: float, radius: float, yaw: float,
         reflectivity: float) -> Primitive:
    """A horizontal cylinder of full ``length`` along its yawed x axis."""
    return Primitive(XCYL, tuple(center), (length / 2, radius, radius), yaw, reflectivity)


def corners(prims: List[Primitive]) -> np.ndarray:
    """Corners of each primitive's bounding box, ``(P, 8, 3)`` float64, world frame."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)],
                     dtype=np.float64)
    out = np.empty((len(prims), 8, 3))
    for i, p in enumerate(prims):
        local = signs * np.asarray(p.half)
        c, s = np.cos(p.yaw), np.sin(p.yaw)
        out[i, :, 0] = c * local[:, 0] - s * local[:, 1] + p.center[0]
        out[i, :, 1] = s * local[:, 0] + c * local[:, 1] + p.center[1]
        out[i, :, 2] = local[:, 2] + p.center[2]
    return out


def intersect(prim: Primitive, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance along each ray to the first hit on ``prim``; ``inf`` where it misses.

    ``origin`` (3,) metres; ``dirs`` (M, 3) unit vectors, world frame. Returns (M,) float64.
    Rays that start inside the solid report their exit point.
    """
    c, s = np.cos(prim.yaw), np.sin(prim.yaw)
    rel = origin - np.asarray(prim.center)
    o = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
    d = np.empty_like(dirs)
    d[:, 0] = c * dirs[:, 0] + s * dirs[:, 1]
    d[:, 1] = -s * dirs[:, 0] + c * dirs[:, 1]
    d[:, 2] = dirs[:, 2]
    half = np.asarray(prim.half)
    if prim.shape == BOX:
        return _slab(o, d, half)
    if prim.shape == ZCYL:
        return _cylinder(o, d, half[0], half[2])
    # XCYL: rotate axes so that the cylinder axis becomes z.
    return _cylinder(o[[1, 2, 0]], d[:, [1, 2, 0]], half[1], half[0])


def _slab(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(d) < _EPS, _EPS, d)
        t1 = (-half - o) * inv
        t2 = (half - o) * inv
    t_near = np.minimum(t1, t2).max(axis=1)
    t_far = np.maximum(t1, t2).min(axis=1)
    t = np.where(t_near > 0, t_near, t_far)
    hit = (t_far >= t_near) & (t > 0)
    return np.where(hit, t, np.inf)


def _cylinder(o: np.ndarray, d: np.ndarray, radius: float, half_height: float) -> np.ndarray:
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = 2.0 * (o[0] * d[:, 0] + o[1] * d[:, 1])
    cc = o[0] ** 2 + o[1] ** 2 - radius ** 2
    disc = b * b - 4 * a * cc
    best = np.full(len(d), np.inf)
    ok = (disc >= 0) & (a > _EPS)
    sq = np.sqrt(np.where(ok, disc, 0.0))
    a_safe = np.where(a > _EPS, a, 1.0)
    for t in ((-b - sq) / (2 * a_safe), (-b + sq) / (2 * a_safe)):
        z = o[2] + t * d[:, 2]
        good = ok & (t > 0) & (np.abs(z) <= half_height)
        best = np.where(good & (t < best), t, best)
    with np.errstate(divide="ignore", invalid="ignore"):
        for cap in (-half_height, half_height):
            t = (cap - o[2]) / np.where(np.abs(d[:, 2]) < _EPS, _EPS, d[:, 2])
            x = o[0] + t * d[:, 0]
            y = o[1] + t * d[:, 1]
            good = (t > 0) & (x * x + y * y <= radius * radius)
            best = np.where(good & (t < best), t, best)
    return best


def footprint_mask(prim: Primitive, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Which BEV cell centres ``(xs, ys)`` (same shape, metres) lie in ``prim``'s footprint."""
    c, s = np.cos(prim.yaw), np.sin(prim.yaw)
    dx = xs - prim.center[0]
    dy = ys - prim.center[1]
    lx = c * dx + s * dy
    ly = -s * dx + c * dy
    if prim.shape == ZCYL:
        return lx * lx + ly * ly <= prim.half[0] ** 2
    return (np.abs(lx) <= prim.half[0]) & (np.abs(ly) <= prim.half[1])
