"""What the vehicle's cameras see of each LiDAR point: a colour, for cross-modal teachers.

The apron's safety classes differ more in colour than in LiDAR intensity: hi-vis vests
(yellow-green or orange) against orange cones with a white band, yellow paint against grey
concrete and dark debris. :func:`point_colours` gives every point of a simulated scan the RGB
(0..1) a camera rig would record there, and whether any camera sees it:

- material colour by class (and by height within a person's box: trousers, vest, head; a cone's
  reflective band), markings painted on the apron where the ground has them (``Ground.is_marking``);
- light: day, or night under floodlights (darker, noisier), wet ground darker;
- visibility: a point is coloured when it lies within a camera's horizontal and vertical field
  of view and range. The cameras sit next to the LiDAR, so parallax and occlusion differences
  between them are neglected.

Deterministic per scan (its own random stream: seed, 11), and separate from the scan itself:
the LiDAR data and every existing output stay as they were.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from airside_perception import classes
from airside_perception.sim.scene import generate_scene
from airside_perception.sim.world import Scan


@dataclass(frozen=True)
class CameraSpec:
    """One camera, base_link: position (m), heading (rad, about z), fields of view (deg), range (m)."""

    position_m: Tuple[float, float, float] = (1.2, 0.0, 2.0)
    yaw_rad: float = 0.0
    hfov_deg: float = 100.0
    vfov_deg: float = 60.0
    range_m: float = 60.0

    def sees(self, xyz: np.ndarray) -> np.ndarray:
        d = xyz - np.asarray(self.position_m, np.float64)
        dist = np.linalg.norm(d, axis=1)
        az = np.arctan2(d[:, 1], d[:, 0]) - self.yaw_rad
        az = (az + np.pi) % (2 * np.pi) - np.pi
        el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
        return ((np.abs(az) <= np.radians(self.hfov_deg) / 2) & (np.abs(el) <= np.radians(self.vfov_deg) / 2)
                & (dist <= self.range_m) & (dist > 0.3))


FRONT = (CameraSpec(),)
#: Four cameras around the vehicle (front, left, rear, right), 100 degrees each: no blind sector.
SURROUND = tuple(CameraSpec(yaw_rad=a) for a in (0.0, np.pi / 2, np.pi, -np.pi / 2))

#: Daylight albedo (RGB) of each class's surfaces.
MATERIAL = {
    classes.GROUND: (0.42, 0.42, 0.40),  # concrete
    classes.AIRCRAFT: (0.90, 0.91, 0.93),
    classes.VEHICLE: (0.90, 0.70, 0.10),  # ground support equipment yellow
    classes.CART: (0.30, 0.35, 0.45),
    classes.CONE: (0.95, 0.40, 0.05),
    classes.FOD: (0.35, 0.32, 0.28),
    classes.STRUCTURE: (0.60, 0.60, 0.62),
    classes.CLASS_IDS["unknown"]: (0.50, 0.50, 0.50),
}
PAINT = (0.92, 0.85, 0.25)  # apron markings
TROUSERS = (0.12, 0.12, 0.16)
HEAD = (0.55, 0.40, 0.30)
VESTS = ((0.80, 0.95, 0.10), (1.00, 0.50, 0.05))  # hi-vis yellow-green, hi-vis orange
CONE_BAND = (0.95, 0.95, 0.95)
NIGHT_LIGHT = 0.3
WET_GROUND = 0.7


def point_colours(scan: Scan, cameras: Sequence[CameraSpec] = SURROUND,
                  scene=None) -> Tuple[np.ndarray, np.ndarray]:
    """(N, 3) float32 RGB in 0..1 (0 where unseen) and (N,) bool seen, for ``scan``'s points.

    ``scene`` defaults to the scan's own (``generate_scene(scan.seed)``), for its markings."""
    scene = scene if scene is not None else generate_scene(int(scan.seed))
    pts = scan.points.astype(np.float64)
    n = len(pts)
    finite = np.isfinite(pts[:, :3]).all(axis=1)
    seen = np.zeros(n, bool)
    for cam in cameras:
        seen[finite] |= cam.sees(pts[finite, :3])
    rgb = np.zeros((n, 3), np.float64)
    for cls, colour in MATERIAL.items():
        rgb[scan.labels == cls] = colour
    ground = (scan.labels == classes.GROUND) & finite
    painted = np.zeros(n, bool)
    painted[ground] = scene.ground.is_marking(pts[ground, 0], pts[ground, 1])
    rgb[painted] = PAINT
    _colour_objects(scan, pts, rgb)
    light = NIGHT_LIGHT if scan.is_night else 1.0
    rgb *= light
    if scan.is_wet:
        rgb[ground] *= WET_GROUND
    rng = np.random.default_rng([int(scan.seed), 11])
    rgb += rng.normal(0.0, 0.06 if scan.is_night else 0.02, size=rgb.shape)
    rgb = np.clip(rgb, 0.0, 1.0)
    rgb[~seen] = 0.0
    return rgb.astype(np.float32), seen


def _colour_objects(scan: Scan, pts: np.ndarray, rgb: np.ndarray) -> None:
    """Persons by height in their box (trousers, vest, head), cones with their white band."""
    for label, parts in ((classes.PERSON, _person_parts), (classes.CONE, _cone_parts)):
        mine = (scan.labels == label) & (scan.object_ids >= 0)
        for obj in np.unique(scan.object_ids[mine]):
            idx = np.flatnonzero(mine & (scan.object_ids == obj))
            box = scan.boxes[obj]
            rel = (pts[idx, 2] - (box[2] - box[5] / 2)) / max(float(box[5]), 1e-3)  # 0 at the feet, 1 on top
            rgb[idx] = parts(rel, int(obj))


def _person_parts(rel: np.ndarray, obj: int) -> np.ndarray:
    out = np.empty((len(rel), 3))
    out[:] = VESTS[obj % len(VESTS)]
    out[rel < 0.45] = TROUSERS
    out[rel > 0.82] = HEAD
    return out


def _cone_parts(rel: np.ndarray, obj: Optional[int] = None) -> np.ndarray:
    out = np.empty((len(rel), 3))
    out[:] = MATERIAL[classes.CONE]
    out[(rel > 0.55) & (rel < 0.75)] = CONE_BAND
    return out
