"""Multi-LiDAR scanner: casts every beam of every sensor into a scene.

Each sensor is a grid of beams (rings x columns). A solid only tests the beams inside its
angular bounding box, so a 100k-point scan costs a few hundred small vectorised casts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from airside_perception import classes
from airside_perception.sim import geometry as g
from airside_perception.sim.scene import Scene


@dataclass(frozen=True)
class LidarSpec:
    """One LiDAR mounted on the ego vehicle (base_link: x forward, z up, metres)."""

    name: str
    position: Tuple[float, float, float]
    yaw: float
    elevations_deg: Tuple[float, ...]  # ascending
    n_columns: int
    fov_deg: float
    max_range_m: float
    min_range_m: float
    range_noise_m: float
    dropout: float


def _rings(n: int, lo: float, hi: float, focus: float) -> Tuple[float, ...]:
    """``n`` elevations in [lo, hi] degrees, denser near ``focus`` (the horizon)."""
    u = np.linspace(-1.0, 1.0, n)
    warped = np.sign(u) * np.abs(u) ** 1.6
    span_lo, span_hi = focus - lo, hi - focus
    el = np.where(warped < 0, focus + warped * span_lo, focus + warped * span_hi)
    return tuple(float(e) for e in el)


def make_rig(density: str = "default") -> Tuple[LidarSpec, ...]:
    """The vehicle's sensor set: one long-range roof LiDAR and two blind-spot LiDARs.

    ``density`` is ``compact`` (about 35k points), ``default`` (about 100k) or ``dense``
    (about 200k): it scales the horizontal resolution.
    """
    scale = {"compact": 0.36, "default": 1.0, "dense": 2.0}[density]
    roof = LidarSpec("roof", (0.0, 0.0, 2.3), 0.0, _rings(64, -25.0, 15.0, -1.0),
                     int(1800 * scale), 360.0, 150.0, 1.0, 0.02, 0.02)
    corners = tuple(
        LidarSpec(name, pos, yaw, _rings(32, -55.0, 15.0, -10.0), int(960 * scale), 270.0,
                  40.0, 0.3, 0.015, 0.02)
        for name, pos, yaw in (("front_left", (2.1, 0.95, 1.1), np.pi / 4),
                               ("rear_right", (-2.1, -0.95, 1.1), -3 * np.pi / 4)))
    return (roof,) + corners


@functools.lru_cache(maxsize=16)
def _beam_grid(spec: LidarSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit beam directions ``(R, C, 3)`` in base_link, and ring/column angles (radians)."""
    el = np.deg2rad(np.asarray(spec.elevations_deg))
    fov = np.deg2rad(spec.fov_deg)
    az = -fov / 2 + (np.arange(spec.n_columns) + 0.5) * fov / spec.n_columns
    azw = az[None, :] + spec.yaw
    dirs = np.stack([np.cos(el)[:, None] * np.cos(azw),
                     np.cos(el)[:, None] * np.sin(azw),
                     np.repeat(np.sin(el)[:, None], spec.n_columns, axis=1)], axis=-1)
    return dirs, el, az


@dataclass(frozen=True)
class RawScan:
    """What the scanner saw, before ground truth is summarised.

    points (N, 4) float32 x, y, z, intensity (0..255), base_link;
    labels (N,) uint8 class per point; object_ids (N,) int32 (-1: ground or clutter);
    sensor_ids (N,) uint8 index into the rig.
    """

    points: np.ndarray
    labels: np.ndarray
    object_ids: np.ndarray
    sensor_ids: np.ndarray
    prim_hits: np.ndarray  # (P,) returns per solid, in scene order


def _angular_window(spec: LidarSpec, corners: np.ndarray, el: np.ndarray, az: np.ndarray):
    """Ring and column indices whose beams may hit a solid with these ``(8, 3)`` corners."""
    rel = corners - np.asarray(spec.position)
    horiz = np.hypot(rel[:, 0], rel[:, 1])
    if horiz.min() < 0.5 or np.any(np.all(np.abs(rel) < 1e-6, axis=1)):
        return np.arange(len(el)), np.arange(len(az))
    elev = np.arctan2(rel[:, 2], horiz)
    a = np.arctan2(rel[:, 1], rel[:, 0]) - spec.yaw
    a0 = a[0]
    d = np.mod(a - a0 + np.pi, 2 * np.pi) - np.pi
    lo, hi = a0 + d.min(), a0 + d.max()
    if hi - lo > np.pi:
        cols = np.arange(len(az))
    else:
        step = az[1] - az[0]
        c0 = int(np.floor((lo - az[0]) / step)) - 1
        c1 = int(np.ceil((hi - az[0]) / step)) + 1
        cols = np.arange(c0, c1 + 1)
        if spec.fov_deg >= 360.0:
            cols = np.unique(np.mod(cols, len(az)))
        else:
            # The window may sit a full turn away from the sensor's [-fov/2, fov/2] range.
            turn = int(round(2 * np.pi / step))
            wrapped = np.concatenate([cols, cols - turn, cols + turn])
            cols = np.unique(wrapped[(wrapped >= 0) & (wrapped < len(az))])
    margin = np.deg2rad(0.3)
    rings = np.nonzero((el >= elev.min() - margin) & (el <= elev.max() + margin))[0]
    return rings, cols


def _ground_hits(scene: Scene, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance to the apron surface along each ray, ``inf`` for rays that never reach it."""
    dz = dirs[..., 2]
    down = dz < -1e-3
    safe_dz = np.where(down, dz, -1.0)
    t = (0.0 - origin[2]) / safe_dz
    for _ in range(3):  # fixed-point refinement on the sloped, bumpy surface
        x = origin[0] + t * dirs[..., 0]
        y = origin[1] + t * dirs[..., 1]
        t = (scene.ground.height(x, y) - origin[2]) / safe_dz
    return np.where(down & (t > 0), t, np.inf)


def scan(scene: Scene, rig: Tuple[LidarSpec, ...], rng: np.random.Generator) -> RawScan:
    """Casts every beam of ``rig`` into ``scene`` and returns the returns that survive."""
    prims: List[g.Primitive] = []
    prim_obj: List[int] = []
    for oi, obj in enumerate(scene.objects):
        prims.extend(obj.prims)
        prim_obj.extend([oi] * len(obj.prims))
    prim_obj_arr = np.asarray(prim_obj, dtype=np.int32)
    prim_class = np.array([scene.objects[o].class_id for o in prim_obj], dtype=np.uint8)
    prim_refl = np.array([p.reflectivity for p in prims])
    corners = g.corners(prims) if prims else np.zeros((0, 8, 3))

    parts: Dict[str, list] = {"pts": [], "lab": [], "obj": [], "sid": [], "prim": []}
    for sid, spec in enumerate(rig):
        dirs, el, az = _beam_grid(spec)
        origin = np.asarray(spec.position, dtype=np.float64)
        t_buf = _ground_hits(scene, origin, dirs)
        hit = np.full(t_buf.shape, -1, dtype=np.int32)
        for pi, prim in enumerate(prims):
            rings, cols = _angular_window(spec, corners[pi], el, az)
            if len(rings) == 0 or len(cols) == 0:
                continue
            sub = dirs[np.ix_(rings, cols)].reshape(-1, 3)
            t = g.intersect(prim, origin, sub).reshape(len(rings), len(cols))
            cur = t_buf[np.ix_(rings, cols)]
            closer = t < cur
            if closer.any():
                rr, cc = np.nonzero(closer)
                t_buf[rings[rr], cols[cc]] = t[rr, cc]
                hit[rings[rr], cols[cc]] = pi
        _collect(scene, spec, sid, origin, dirs, t_buf, hit, prim_obj_arr, prim_class, prim_refl,
                 rng, parts)

    points = np.concatenate(parts["pts"]) if parts["pts"] else np.zeros((0, 4), np.float32)
    labels = np.concatenate(parts["lab"]).astype(np.uint8)
    object_ids = np.concatenate(parts["obj"]).astype(np.int32)
    sensor_ids = np.concatenate(parts["sid"]).astype(np.uint8)
    prim_ids = np.concatenate(parts["prim"])
    prim_hits = np.bincount(prim_ids[prim_ids >= 0], minlength=len(prims))
    points, labels, object_ids, sensor_ids = _add_clutter(scene, points, labels, object_ids,
                                                          sensor_ids, rng)
    return RawScan(points, labels, object_ids, sensor_ids, prim_hits)


def _collect(scene, spec, sid, origin, dirs, t_buf, hit, prim_obj, prim_class, prim_refl, rng, parts):
    """Turns one sensor's z-buffer into noisy, intensity-coded returns."""
    t = t_buf.reshape(-1)
    d = dirs.reshape(-1, 3)
    h = hit.reshape(-1)
    is_ground = h < 0
    pts = origin + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    refl = np.where(is_ground, 0.15, prim_refl[np.maximum(h, 0)])
    marking = is_ground & scene.ground.is_marking(pts[:, 0], pts[:, 1])
    refl = np.where(marking, 0.55, refl)
    if scene.conditions.is_wet:
        refl = np.where(is_ground, refl * 0.45, refl * 0.85)
    # Weak returns fade out at shorter range; the night sky adds no solar noise floor.
    reach = spec.max_range_m * np.clip(np.sqrt(refl / 0.25), 0.3, 1.0)
    if scene.conditions.is_night:
        reach = reach * 1.1
    dropout = spec.dropout * (3.0 if scene.conditions.is_wet else 1.0)
    grazing = is_ground & (np.abs(d[:, 2]) < 0.05)
    p_keep = np.where(grazing, 1.0 - 2 * dropout, 1.0 - dropout)
    keep = (np.isfinite(t) & (t <= reach) & (t >= spec.min_range_m)
            & (rng.random(len(t)) < p_keep))
    t_noisy = t[keep] + rng.normal(0.0, spec.range_noise_m, keep.sum())
    p = origin + t_noisy[:, None] * d[keep]
    cos_inc = np.where(is_ground[keep], np.abs(d[keep, 2]) * 4.0, 0.8).clip(0.1, 1.0)
    intensity = (255.0 * refl[keep] * (0.5 + 0.5 * cos_inc) + rng.normal(0, 2.0, keep.sum())).clip(0, 255)
    hk = h[keep]
    # Coordinates come quantised to 1/256 m and intensity to whole counts, as from a driver.
    p = np.round(p * 256.0) / 256.0
    parts["pts"].append(np.column_stack([p, np.round(intensity)]).astype(np.float32))
    parts["lab"].append(np.where(hk < 0, classes.GROUND, prim_class[np.maximum(hk, 0)]))
    parts["obj"].append(np.where(hk < 0, -1, prim_obj[np.maximum(hk, 0)]))
    parts["sid"].append(np.full(len(hk), sid))
    parts["prim"].append(hk)


def _add_clutter(scene: Scene, points, labels, object_ids, sensor_ids, rng):
    """Spurious returns: solar noise by day, spray around the vehicle when wet."""
    n = len(points)
    count = 0 if scene.conditions.is_night else int(0.0008 * n)
    noise = [rng.uniform([-60, -60, 0.5], [60, 60, 20], size=(count, 3))]
    if scene.conditions.is_wet:
        k = int(0.004 * n)
        r = rng.uniform(2.5, 10.0, k)
        b = rng.uniform(-np.pi, np.pi, k)
        noise.append(np.column_stack([r * np.cos(b), r * np.sin(b), rng.uniform(0.1, 1.8, k)]))
    extra = np.concatenate(noise)
    if len(extra) == 0:
        return points, labels, object_ids, sensor_ids
    intensity = rng.uniform(0, 20, len(extra))
    extra_pts = np.column_stack([extra, intensity]).astype(np.float32)
    return (np.concatenate([points, extra_pts]),
            np.concatenate([labels, np.full(len(extra), classes.UNKNOWN, np.uint8)]),
            np.concatenate([object_ids, np.full(len(extra), -1, np.int32)]),
            np.concatenate([sensor_ids, np.zeros(len(extra), np.uint8)]))
