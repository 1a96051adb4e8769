"""Worlds beyond the training apron, for the data loop and the shifted-data gate.

* ``remote_stand``: a "new site" the shipped models were not trained on: a remote stand at
  night in rain, seen by another sensor mount (one 128-beam roof LiDAR at 1.9 m, 10 m further
  forward on the vehicle's roof rack, no blind-spot sensors), with wet-apron returns (intensity
  0.45 of dry, a fifth of the far returns lost in spray, more range noise);
* ``randomized``: the training's domain randomisation drawn per scan (one roof sensor of another
  kind, mount offsets, intensity gain, dropped patches, range noise), always applied.

``site_scan(seed, site)`` renders the apron scene of ``seed`` as that site sees it, with the
simulator's ground truth (labels, boxes, occupancy) moved with the points.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Tuple

import numpy as np

from airside_perception.errors import ConfigError
from airside_perception.sim.randomize import Randomization, perturb, random_rig
from airside_perception.sim.scanner import LidarSpec, _rings, scan
from airside_perception.sim.scene import generate_scene
from airside_perception.sim.world import Scan, occupancy_from_scene

SITES = ("apron", "remote_stand", "randomized")
REMOTE_STAND_RIG: Tuple[LidarSpec, ...] = (
    LidarSpec("roof128", (0.6, 0.0, 1.9), 0.0, _rings(128, -22.0, 12.0, -2.0), 1024, 360.0, 120.0, 0.8, 0.04, 0.04),)
RAIN_INTENSITY = 0.45
RAIN_FAR_DROP = 0.2
RAIN_FAR_M = 30.0


def site_scan(seed: int, site: str) -> Scan:
    """The scene of ``seed`` seen at ``site`` (one of ``SITES``)."""
    if site not in SITES:
        raise ConfigError(f"site '{site}' unknown: one of {list(SITES)}")
    scene = generate_scene(seed)
    rng = np.random.default_rng([seed, 7])
    if site == "apron":
        from airside_perception.sim.world import make_scan

        return make_scan(seed)
    if site == "remote_stand":
        scene = replace(scene, conditions=replace(scene.conditions, is_night=True, is_wet=True))
        rig = REMOTE_STAND_RIG
    else:
        rig = random_rig(rng, Randomization())
    raw = scan(scene, rig, rng)
    boxes = np.array([o.box() for o in scene.objects], dtype=np.float32).reshape(-1, 7)
    points, labels, object_ids = raw.points, raw.labels, raw.object_ids
    if site == "remote_stand":
        far = np.hypot(points[:, 0], points[:, 1]) > RAIN_FAR_M
        keep = ~(far & (rng.random(len(points)) < RAIN_FAR_DROP))
        points = points[keep].copy()
        points[:, 3] *= RAIN_INTENSITY
        labels, object_ids = labels[keep], object_ids[keep]
    else:
        points, boxes, keep = perturb(points, boxes, rng, Randomization())
        labels, object_ids = labels[keep], object_ids[keep]
    box_labels = np.array([o.class_id for o in scene.objects], dtype=np.uint8)
    box_points = np.bincount(object_ids[object_ids >= 0], minlength=len(scene.objects)).astype(np.int32)
    return Scan(points=points.astype(np.float32), labels=labels, boxes=boxes, box_labels=box_labels,
                box_points=box_points, occupancy=occupancy_from_scene(scene, raw.prim_hits),
                sensor_ids=raw.sensor_ids[keep] if len(raw.sensor_ids) == len(keep) else raw.sensor_ids,
                object_ids=object_ids, seed=seed, is_wet=scene.conditions.is_wet,
                is_night=scene.conditions.is_night, traffic=scene.conditions.traffic)
