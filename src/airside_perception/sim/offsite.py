"""Scenes that are not aprons: what a vehicle meets on airport roads, car parks and landside.

A street between building facades, with trees, hedges, poles, fences and parked cars and
vans of road size. Classes: facades, trunks, poles and fences are ``structure``; tree crowns
and hedges ``unknown``; cars and vans ``vehicle``; pedestrians ``person``. The apron scene
of :mod:`airside_perception.sim.scene` has none of this; the trust monitor is measured on it,
and domain-randomised training may mix it in (``street_share``).
"""

from __future__ import annotations

import numpy as np

from airside_perception import classes
from airside_perception.sim.scene import Conditions, Ground, Scene, _Placer, person_parts


def car_parts(rng: np.random.Generator, is_van: bool):
    length, width = (rng.uniform(4.8, 5.6), 2.0) if is_van else (rng.uniform(3.9, 4.7), rng.uniform(1.7, 1.85))
    body_h = rng.uniform(1.6, 2.2) if is_van else rng.uniform(0.55, 0.7)
    parts = [("box", (0.0, 0.0, 0.35 + body_h / 2, length, width, body_h, 0.0))]
    if not is_van:  # cabin
        parts.append(("box", (-0.2, 0.0, 0.35 + body_h + 0.3, length * 0.55, width * 0.9, 0.6, 0.0, 0.15)))
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(("xcyl", (sx * length * 0.32, sy * width * 0.45, 0.33, 0.25, 0.33, np.pi / 2, 0.05)))
    return parts


def generate_street_scene(seed: int) -> Scene:
    """A street scene from ``seed``; the ego vehicle drives along +x in the right lane."""
    rng = np.random.default_rng([seed, 7331])
    ground = Ground(slope_x=rng.uniform(-0.02, 0.02), slope_y=rng.uniform(-0.01, 0.01),
                    bump_m=rng.uniform(0.0, 0.04), bump_k=(rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2)),
                    line_offset_m=rng.uniform(0, 3), line_spacing_m=1e6)
    conditions = Conditions(is_wet=bool(rng.random() < 0.3), is_night=bool(rng.random() < 0.3), traffic="normal")
    p = _Placer(rng, ground)
    half_road = rng.uniform(4.0, 9.0)
    for side in (-1.0, 1.0):
        setback = half_road + rng.uniform(3.0, 10.0)
        x = -110.0
        while x < 110.0:  # facades of varying depth and height
            length = rng.uniform(10.0, 40.0)
            height = rng.uniform(5.0, 25.0)
            depth = rng.uniform(8.0, 15.0)
            p.add(classes.STRUCTURE, [("box", (0.0, 0.0, height / 2, length, depth, height, 0.0))],
                  x + length / 2, side * (setback + depth / 2 + rng.uniform(0, 3)), 0.0, rng.uniform(0.2, 0.5),
                  1.0, reserve=False)
            x += length + rng.uniform(0.0, 8.0)
        x = -80.0 + rng.uniform(0, 8)
        while x < 80.0:  # kerbside trees, poles, hedges
            y = side * (half_road + rng.uniform(1.0, 2.5))
            kind = rng.random()
            if kind < 0.5:
                crown = rng.uniform(1.5, 3.5)
                trunk_h = rng.uniform(2.0, 4.0)
                p.add(classes.STRUCTURE, [("zcyl", (0.0, 0.0, trunk_h / 2, rng.uniform(0.12, 0.3), trunk_h))],
                      x, y, 0.0, 0.25, 0.5, reserve=False)
                p.add(classes.UNKNOWN, [("zcyl", (0.0, 0.0, trunk_h + crown, crown, 2 * crown, 0.18))],
                      x, y, 0.0, 0.18, crown, reserve=False)
            elif kind < 0.8:
                h = rng.uniform(4.0, 9.0)
                p.add(classes.STRUCTURE, [("zcyl", (0.0, 0.0, h / 2, 0.12, h))], x, y, 0.0, 0.4, 0.3, reserve=False)
            else:
                length = rng.uniform(4.0, 12.0)
                p.add(classes.UNKNOWN, [("box", (0.0, 0.0, 0.6, length, 1.0, 1.2, 0.0, 0.15))],
                      x, y, 0.0, 0.15, length / 2, reserve=False)
            x += rng.uniform(6.0, 15.0)
        if rng.random() < 0.6:  # a fence along the pavement
            p.add(classes.STRUCTURE, [("box", (0.0, 0.0, 0.9, rng.uniform(20, 60), 0.08, 1.8, 0.0))],
                  rng.uniform(-40, 40), side * (half_road + 3.2), 0.0, 0.3, 1.0, reserve=False)
    for _ in range(int(rng.integers(6, 20))):  # parked and moving cars and vans
        x = rng.uniform(-70, 70)
        lane = rng.choice([-1.0, 1.0]) * rng.uniform(1.5, half_road - 1.0)
        if abs(x) < 6 and abs(lane) < 3:
            continue
        yaw = (0.0 if lane < 0 else np.pi) + rng.normal(0, 0.05)
        p.add(classes.VEHICLE, car_parts(rng, rng.random() < 0.3), x, lane, yaw, rng.uniform(0.2, 0.7), 2.5,
              kind="road_vehicle", reserve=False)
    for _ in range(int(rng.integers(0, 8))):  # pedestrians on the pavement
        side = rng.choice([-1.0, 1.0])
        p.add(classes.PERSON, person_parts(str(rng.choice(["standing", "walking"]))), rng.uniform(-40, 40),
              side * (half_road + rng.uniform(0.5, 2.5)), rng.uniform(-np.pi, np.pi), 0.3, 0.4, reserve=False)
    return Scene(seed, ground, conditions, tuple(p.objects))
