"""Procedural apron scenes: aircraft, ground support equipment, carts, crew, cones, FOD.

A scene is drawn from one integer seed and is the same on every machine. Object poses are
in ``base_link`` of the ego vehicle, which stands at the origin facing +x.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Tuple

import numpy as np

from airside_perception import classes
from airside_perception.sim import geometry as g
from airside_perception.sim.geometry import Primitive

EGO_CLEAR_RADIUS_M = 4.0
SCENE_HALF_EXTENT_M = 110.0


@dataclass(frozen=True)
class SceneObject:
    """One object: its class, solids, and its velocity (m/s, base_link)."""

    class_id: int
    prims: Tuple[Primitive, ...]
    yaw: float
    velocity: Tuple[float, float] = (0.0, 0.0)
    kind: str = ""

    def box(self) -> np.ndarray:
        """Oriented box enclosing every solid: ``(7,)`` x, y, z, length, width, height, yaw."""
        pts = g.corners(list(self.prims)).reshape(-1, 3)
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        lx = c * pts[:, 0] + s * pts[:, 1]
        ly = -s * pts[:, 0] + c * pts[:, 1]
        lo = np.array([lx.min(), ly.min(), pts[:, 2].min()])
        hi = np.array([lx.max(), ly.max(), pts[:, 2].max()])
        mid = (lo + hi) / 2
        cx = c * mid[0] - s * mid[1]
        cy = s * mid[0] + c * mid[1]
        size = hi - lo
        return np.array([cx, cy, mid[2], size[0], size[1], size[2], self.yaw])

    def moved(self, dt_s: float) -> "SceneObject":
        """This object after ``dt_s`` seconds at its velocity."""
        dx, dy = self.velocity[0] * dt_s, self.velocity[1] * dt_s
        prims = tuple(replace(p, center=(p.center[0] + dx, p.center[1] + dy, p.center[2]))
                      for p in self.prims)
        return replace(self, prims=prims)


@dataclass(frozen=True)
class Ground:
    """Apron surface: ``z = slope_x * x + slope_y * y + bump_m * sin(kx x) sin(ky y)``."""

    slope_x: float
    slope_y: float
    bump_m: float
    bump_k: Tuple[float, float]
    line_offset_m: float
    line_spacing_m: float

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (self.slope_x * x + self.slope_y * y
                + self.bump_m * np.sin(self.bump_k[0] * x) * np.sin(self.bump_k[1] * y))

    def is_marking(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Painted lines: lead-in lines along x and stop bars along y, 15 cm wide."""
        lead = np.abs(np.mod(y - self.line_offset_m, self.line_spacing_m)) < 0.15
        stop = np.abs(np.mod(x - self.line_offset_m, 2 * self.line_spacing_m)) < 0.3
        return lead | stop


@dataclass(frozen=True)
class Conditions:
    """Weather and traffic of a scene."""

    is_wet: bool
    is_night: bool
    traffic: str  # "empty" | "normal" | "busy"


@dataclass(frozen=True)
class Scene:
    seed: int
    ground: Ground
    conditions: Conditions
    objects: Tuple[SceneObject, ...] = field(default_factory=tuple)

    def moved(self, dt_s: float) -> "Scene":
        return replace(self, objects=tuple(o.moved(dt_s) for o in self.objects))


# --------------------------------------------------------------------------- builders
def _place(parts: List[Tuple[str, tuple]], x: float, y: float, yaw: float, z0: float,
           refl: float) -> Tuple[Primitive, ...]:
    """Turns parts given in the object frame into world solids.

    Each part: ``("box", (px, py, pz, l, w, h, dyaw[, refl]))``, ``("zcyl", (px, py, pz, r, h
    [, refl]))`` or ``("xcyl", (px, py, pz, length, r, dyaw[, refl]))``; ``pz`` is the centre
    height above the ground.
    """
    c, s = np.cos(yaw), np.sin(yaw)
    out = []
    for shape, v in parts:
        wx = x + c * v[0] - s * v[1]
        wy = y + s * v[0] + c * v[1]
        centre = (wx, wy, z0 + v[2])
        if shape == "box":
            r = v[7] if len(v) > 7 else refl
            out.append(g.box(centre, (v[3], v[4], v[5]), yaw + v[6], r))
        elif shape == "zcyl":
            r = v[5] if len(v) > 5 else refl
            out.append(g.zcyl(centre, v[3], v[4], r))
        else:
            r = v[6] if len(v) > 6 else refl
            out.append(g.xcyl(centre, v[3], v[4], yaw + v[5], r))
    return tuple(out)


def aircraft_parts(rng: np.random.Generator) -> List[Tuple[str, tuple]]:
    scale = rng.choice([1.0, 1.0, 1.35])
    length = 37.0 * scale
    radius = 2.0 * scale
    span = 34.0 * scale
    fz = 1.3 + radius  # fuselage centre height
    sweep = np.deg2rad(25.0)
    half_span = span / 2
    wing_x = 0.5 * scale
    parts: List[Tuple[str, tuple]] = [
        ("xcyl", (0.0, 0.0, fz, length * 0.85, radius, 0.0)),
        ("xcyl", (length * 0.45, 0.0, fz - 0.2 * scale, length * 0.1, radius * 0.7, 0.0)),
        ("xcyl", (-length * 0.45, 0.0, fz + 0.5 * scale, length * 0.1, radius * 0.6, 0.0)),
        ("box", (-length * 0.44, 0.0, fz + radius + 3.0 * scale, 4.5 * scale, 0.4, 6.0 * scale,
                 0.0)),
        ("box", (-length * 0.45, 0.0, fz + 0.8 * scale, 3.0 * scale, 12.0 * scale, 0.3, 0.0)),
        ("box", (0.0, 1.5 * scale, 0.75, 1.2, 1.0, 1.5, 0.0)),
        ("box", (0.0, -1.5 * scale, 0.75, 1.2, 1.0, 1.5, 0.0)),
        ("zcyl", (length * 0.36, 0.0, 0.9, 0.25, 1.8)),
    ]
    for side in (-1.0, 1.0):
        # A swept wing as two yawed slabs, root and tip.
        for frac, chord in ((0.28, 6.0 * scale), (0.72, 3.5 * scale)):
            wy = side * half_span * frac
            wx = wing_x - abs(wy) * np.tan(sweep)
            parts.append(("box", (wx, wy, fz - 0.6 * scale, chord, half_span * 0.5, 0.45,
                                  -side * sweep)))
        ey = side * 5.7 * scale
        parts.append(("xcyl", (wing_x + 2.0 - abs(ey) * np.tan(sweep), ey,
                               fz - 0.6 * scale - 1.5 * scale, 4.0 * scale, 1.0 * scale, 0.0)))
    return parts


def gse_parts(kind: str) -> List[Tuple[str, tuple]]:
    if kind == "pushback_tug":
        return [("box", (0.0, 0.0, 0.8, 6.5, 3.0, 1.3, 0.0)), ("box", (2.2, 0.0, 1.9, 1.6, 2.4, 1.0, 0.0))]
    if kind == "baggage_tractor":
        return [("box", (0.0, 0.0, 0.7, 3.0, 1.5, 1.0, 0.0)), ("box", (-0.5, 0.0, 1.6, 1.3, 1.4, 1.0, 0.0))]
    if kind == "belt_loader":
        return [("box", (0.0, 0.0, 0.7, 7.0, 2.1, 1.0, 0.0)),
                ("box", (2.4, 0.0, 1.8, 2.5, 1.0, 0.3, 0.0)),
                ("box", (4.3, 0.0, 2.6, 2.5, 1.0, 0.3, 0.0)),
                ("box", (-2.6, 0.0, 1.7, 1.4, 1.9, 1.2, 0.0))]
    if kind == "fuel_truck":
        return [("box", (3.3, 0.0, 1.6, 2.2, 2.5, 2.6, 0.0)), ("box", (-1.0, 0.0, 0.7, 7.0, 2.3, 0.8, 0.0)),
                ("xcyl", (-1.2, 0.0, 2.0, 6.4, 1.2, 0.0, 0.7))]
    # catering truck: cab and a raised box body on a scissor lift
    return [("box", (2.6, 0.0, 1.5, 1.8, 2.4, 2.4, 0.0)), ("box", (-0.8, 0.0, 0.6, 5.0, 2.4, 0.6, 0.0)),
            ("box", (-0.8, 0.0, 1.5, 1.0, 1.6, 1.2, 0.0)), ("box", (-0.8, 0.0, 3.3, 5.2, 2.5, 2.6, 0.0))]


GSE_KINDS = ("pushback_tug", "baggage_tractor", "belt_loader", "fuel_truck", "catering_truck")


def person_parts(pose: str) -> List[Tuple[str, tuple]]:
    """A crew member in a retro-reflective vest (the torso solid is bright)."""
    if pose == "crouching":
        return [("zcyl", (0.0, 0.0, 0.3, 0.25, 0.6, 0.3)), ("zcyl", (0.05, 0.0, 0.85, 0.21, 0.5, 0.95)),
                ("zcyl", (0.12, 0.0, 1.22, 0.11, 0.24, 0.3))]
    stride = 0.18 if pose == "walking" else 0.0
    return [("zcyl", (stride, 0.1, 0.43, 0.08, 0.86, 0.3)), ("zcyl", (-stride, -0.1, 0.43, 0.08, 0.86, 0.3)),
            ("zcyl", (0.0, 0.0, 1.17, 0.21, 0.62, 0.95)), ("zcyl", (0.0, 0.0, 1.6, 0.11, 0.24, 0.3))]


def cone_parts() -> List[Tuple[str, tuple]]:
    return [("box", (0.0, 0.0, 0.025, 0.38, 0.38, 0.05, 0.0)), ("zcyl", (0.0, 0.0, 0.2, 0.12, 0.3)),
            ("zcyl", (0.0, 0.0, 0.52, 0.07, 0.34))]


def fod_parts(rng: np.random.Generator) -> List[Tuple[str, tuple]]:
    if rng.random() < 0.3:  # lost bag
        return [("box", (0.0, 0.0, 0.15, 0.7, 0.45, 0.3, 0.0))]
    size = rng.uniform(0.08, 0.35, size=3) * np.array([1.0, 1.0, 0.6])
    return [("box", (0.0, 0.0, size[2] / 2, size[0], size[1], size[2], 0.0))]


# --------------------------------------------------------------------------- scene
class _Placer:
    """Draws non-overlapping footprints (circles) on the apron."""

    def __init__(self, rng: np.random.Generator, ground: Ground):
        self.rng = rng
        self.ground = ground
        self.circles: List[Tuple[float, float, float]] = [(0.0, 0.0, EGO_CLEAR_RADIUS_M)]
        self.objects: List[SceneObject] = []

    def is_free(self, x: float, y: float, r: float) -> bool:
        return all((x - cx) ** 2 + (y - cy) ** 2 >= (r + cr) ** 2 for cx, cy, cr in self.circles)

    def add(self, class_id: int, parts, x: float, y: float, yaw: float, refl: float, radius: float,
            velocity=(0.0, 0.0), kind: str = "", reserve: bool = True) -> SceneObject:
        z0 = float(self.ground.height(np.array(x), np.array(y)))
        obj = SceneObject(class_id, _place(parts, x, y, yaw, z0, refl), yaw, velocity, kind)
        self.objects.append(obj)
        if reserve:
            self.circles.append((x, y, radius))
        return obj

    def sample(self, radius: float, lo_m: float, hi_m: float, tries: int = 30):
        for _ in range(tries):
            rng_m = self.rng.uniform(lo_m, hi_m)
            bearing = self.rng.uniform(-np.pi, np.pi)
            x, y = rng_m * np.cos(bearing), rng_m * np.sin(bearing)
            if self.is_free(x, y, radius):
                return x, y
        return None


TRAFFIC_COUNTS = {  # aircraft, gse, cart trains, crew groups, cones, fod
    "empty": (0, 1, 0, 1, 2, 2),
    "normal": (1, 4, 1, 3, 8, 4),
    "busy": (3, 8, 3, 6, 16, 8),
}


def generate_scene(seed: int) -> Scene:
    """The apron scene of ``seed``: the same objects on every machine."""
    rng = np.random.default_rng(seed)
    ground = Ground(slope_x=rng.uniform(-0.012, 0.012), slope_y=rng.uniform(-0.012, 0.012),
                    bump_m=rng.uniform(0.0, 0.05), bump_k=(rng.uniform(0.05, 0.2), rng.uniform(0.05, 0.2)),
                    line_offset_m=rng.uniform(0, 40), line_spacing_m=rng.uniform(35, 50))
    traffic = str(rng.choice(["empty", "normal", "normal", "busy", "busy"]))
    conditions = Conditions(is_wet=bool(rng.random() < 0.3), is_night=bool(rng.random() < 0.3),
                            traffic=traffic)
    placer = _Placer(rng, ground)
    n_aircraft, n_gse, n_trains, n_groups, n_cones, n_fod = TRAFFIC_COUNTS[traffic]
    _add_structures(placer)
    aircraft = _add_aircraft(placer, n_aircraft)
    _add_cones(placer, aircraft, n_cones)
    _add_gse(placer, n_gse)
    _add_cart_trains(placer, n_trains)
    _add_crew(placer, aircraft, n_groups)
    _add_fod(placer, n_fod)
    return Scene(seed, ground, conditions, tuple(placer.objects))


def _add_structures(p: _Placer) -> None:
    rng = p.rng
    wall_x = rng.uniform(60.0, 95.0) * rng.choice([-1.0, 1.0])
    wall_yaw = np.pi / 2 + rng.uniform(-0.15, 0.15)
    for k in range(3):  # terminal wall, three segments
        p.add(classes.STRUCTURE, [("box", (0.0, 0.0, 7.5, 70.0, 2.0, 15.0, 0.0))],
              wall_x, -70.0 + 70.0 * k, wall_yaw, 0.35, 1.0, reserve=False)
    for _ in range(int(rng.integers(0, 3))):  # jet bridges out of the terminal
        y = rng.uniform(-60, 60)
        length = rng.uniform(15, 30)
        x = wall_x - np.sign(wall_x) * (length / 2 + 1)
        parts = [("box", (0.0, 0.0, 5.5, length, 3.2, 3.0, 0.0)),
                 ("zcyl", (-length / 2 + 3, 0.0, 2.0, 0.5, 4.0)), ("zcyl", (length / 2 - 3, 0.0, 2.0, 0.5, 4.0))]
        p.add(classes.STRUCTURE, parts, x, y, 0.0, 0.4, length / 2)
    for _ in range(int(rng.integers(1, 4))):  # apron flood-light masts
        spot = p.sample(1.0, 25, 100)
        if spot:
            p.add(classes.STRUCTURE, [("zcyl", (0.0, 0.0, 10.0, 0.35, 20.0))], spot[0], spot[1], 0.0, 0.3, 1.0)
    if rng.random() < 0.5:  # a row of jersey barriers: not a class of its own
        spot = p.sample(6.0, 10, 50)
        if spot:
            yaw = rng.uniform(-np.pi, np.pi)
            parts = [("box", (i * 2.1 - 4.2, 0.0, 0.4, 2.0, 0.6, 0.8, 0.0)) for i in range(5)]
            p.add(classes.UNKNOWN, parts, spot[0], spot[1], yaw, 0.3, 5.5)


def _add_aircraft(p: _Placer, count: int) -> List[Tuple[float, float, float]]:
    placed = []
    for _ in range(count):
        spot = p.sample(20.0, 22.0, 105.0)
        if spot is None:
            continue
        yaw = p.rng.uniform(-np.pi, np.pi)
        taxiing = p.rng.random() < 0.25
        speed = p.rng.uniform(2.0, 5.0) if taxiing else 0.0
        vel = (speed * np.cos(yaw), speed * np.sin(yaw))
        p.add(classes.AIRCRAFT, aircraft_parts(p.rng), spot[0], spot[1], yaw, 0.6, 21.0, vel,
              "taxiing_aircraft" if taxiing else "parked_aircraft")
        placed.append((spot[0], spot[1], yaw))
    return placed


def _add_cones(p: _Placer, aircraft, count: int) -> None:
    for i in range(count):
        if aircraft and i % 3 != 2:  # most cones mark engines, wingtips and the nose gear
            ax, ay, ayaw = aircraft[i % len(aircraft)]
            lx, ly = p.rng.choice([(16.0, 0.0), (2.0, 7.5), (2.0, -7.5), (-2.0, 18.5), (-2.0, -18.5)])
            lx += p.rng.normal(0, 0.5)
            ly += p.rng.normal(0, 0.5)
            x = ax + np.cos(ayaw) * lx - np.sin(ayaw) * ly
            y = ay + np.sin(ayaw) * lx + np.cos(ayaw) * ly
            if x * x + y * y < EGO_CLEAR_RADIUS_M ** 2:
                continue
            p.add(classes.CONE, cone_parts(), x, y, 0.0, 0.9, 0.3, reserve=False)
        else:
            spot = p.sample(0.4, 5.0, 60.0)
            if spot:
                p.add(classes.CONE, cone_parts(), spot[0], spot[1], 0.0, 0.9, 0.4)


def _add_gse(p: _Placer, count: int) -> None:
    for _ in range(count):
        kind = str(p.rng.choice(GSE_KINDS))
        spot = p.sample(4.5, 6.0, 80.0)
        if spot is None:
            continue
        yaw = p.rng.uniform(-np.pi, np.pi)
        speed = p.rng.uniform(1.0, 5.0) if p.rng.random() < 0.4 else 0.0
        p.add(classes.VEHICLE, gse_parts(kind), spot[0], spot[1], yaw, 0.45, 4.5,
              (speed * np.cos(yaw), speed * np.sin(yaw)), kind)


def _add_cart_trains(p: _Placer, count: int) -> None:
    for _ in range(count):
        n_carts = int(p.rng.integers(2, 6))
        length = 3.0 + n_carts * 3.6
        spot = p.sample(length / 2 + 1, 8.0, 70.0)
        if spot is None:
            continue
        yaw = p.rng.uniform(-np.pi, np.pi)
        speed = p.rng.uniform(1.5, 4.0) if p.rng.random() < 0.5 else 0.0
        vel = (speed * np.cos(yaw), speed * np.sin(yaw))
        c, s = np.cos(yaw), np.sin(yaw)
        head = length / 2 - 1.5
        p.add(classes.VEHICLE, gse_parts("baggage_tractor"), spot[0] + c * head, spot[1] + s * head,
              yaw, 0.45, 0.0, vel, "baggage_tractor", reserve=False)
        for k in range(n_carts):
            off = head - 3.3 - k * 3.6
            parts = [("box", (0.0, 0.0, 0.55, 3.0, 1.6, 0.5, 0.0)), ("box", (0.0, 0.0, 1.25, 2.9, 1.5, 0.9, 0.0, 0.25))]
            p.add(classes.CART, parts, spot[0] + c * off, spot[1] + s * off, yaw, 0.3, 0.0, vel,
                  "baggage_cart", reserve=False)
        p.circles.append((spot[0], spot[1], length / 2 + 1))


def _add_crew(p: _Placer, aircraft, groups: int) -> None:
    for gi in range(groups):
        size = int(p.rng.choice([1, 1, 2, 3, 4]))
        if aircraft and gi % 2 == 0:  # under a wing or near the nose
            ax, ay, ayaw = aircraft[gi % len(aircraft)]
            lx, ly = p.rng.uniform(-4, 12), p.rng.uniform(-12, 12)
            cx = ax + np.cos(ayaw) * lx - np.sin(ayaw) * ly
            cy = ay + np.sin(ayaw) * lx + np.cos(ayaw) * ly
            if cx * cx + cy * cy < 25.0:
                continue
        else:
            spot = p.sample(2.0, 5.0, 45.0)
            if spot is None:
                continue
            cx, cy = spot
        heading = p.rng.uniform(-np.pi, np.pi)
        walking = p.rng.random() < 0.4
        for k in range(size):
            x = cx + p.rng.normal(0, 1.0) * (k > 0)
            y = cy + p.rng.normal(0, 1.0) * (k > 0)
            if not p.is_free(x, y, 0.35) and k > 0:
                continue
            pose = "walking" if walking else str(p.rng.choice(["standing", "standing", "crouching"]))
            speed = p.rng.uniform(0.8, 1.6) if walking else 0.0
            yaw = heading + p.rng.normal(0, 0.3)
            p.add(classes.PERSON, person_parts(pose), x, y, yaw, 0.3, 0.35,
                  (speed * np.cos(heading), speed * np.sin(heading)), pose)


def _add_fod(p: _Placer, count: int) -> None:
    for _ in range(count):
        spot = p.sample(0.3, 5.0, 35.0)
        if spot:
            p.add(classes.FOD, fod_parts(p.rng), spot[0], spot[1], p.rng.uniform(-np.pi, np.pi), 0.55, 0.3)
