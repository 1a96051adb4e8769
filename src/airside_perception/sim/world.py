"""Labelled scans: points with ground truth for segmentation, detection and occupancy."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, Tuple

import numpy as np

from airside_perception import classes
from airside_perception.sim import geometry as g
from airside_perception.sim.scanner import make_rig, scan
from airside_perception.sim.scene import Scene, generate_scene


@dataclass(frozen=True)
class GridSpec:
    """A BEV grid centred on base_link: ``size`` cells of ``resolution_m`` along x and y."""

    resolution_m: float
    half_extent_m: float

    @property
    def size(self) -> int:
        return int(round(2 * self.half_extent_m / self.resolution_m))

    def centres(self) -> Tuple[np.ndarray, np.ndarray]:
        """Cell centres ``(size, size)`` each, indexed ``[iy, ix]`` (OccupancyGrid order)."""
        c = -self.half_extent_m + (np.arange(self.size) + 0.5) * self.resolution_m
        xs, ys = np.meshgrid(c, c)
        return xs, ys


#: Ground-truth occupancy: 0.4 m cells over +-40 m; occupied means solid in the band
#: from 0.1 m to 2.5 m above the apron, where a tug or a person would collide.
OCCUPANCY_GRID = GridSpec(resolution_m=0.4, half_extent_m=40.0)
OCCUPANCY_BAND_M = (0.1, 2.5)
#: The band split in height slices, for channel-to-height occupancy models.
OCCUPANCY_BINS_M = ((0.1, 0.7), (0.7, 1.3), (1.3, 1.9), (1.9, 2.5))

#: Seed ranges of the data splits.
SPLITS: Dict[str, Tuple[int, int]] = {
    "train": (0, 100_000),
    "val": (100_000, 110_000),
    "test": (110_000, 120_000),
    "calib": (120_000, 130_000),
}


@dataclass(frozen=True)
class Scan:
    """One aggregated scan and its ground truth, base_link frame.

    points (N, 4) float32 x, y, z (metres), intensity (0..255);
    labels (N,) uint8 index into ``class_names``;
    boxes (M, 7) float32 x, y, z, length, width, height, yaw of every object;
    box_labels (M,) uint8 class of each box; box_points (M,) int32 returns on each object;
    occupancy (H, W) uint8 0 free / 1 occupied, ``OCCUPANCY_GRID``, row = y, column = x.
    """

    points: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    box_labels: np.ndarray
    box_points: np.ndarray
    occupancy: np.ndarray
    sensor_ids: np.ndarray
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # (N,) box index, -1: none
    class_names: Tuple[str, ...] = classes.CLASS_NAMES
    seed: int = 0
    is_wet: bool = False
    is_night: bool = False
    traffic: str = "normal"

    def to_npz_dict(self) -> Dict[str, np.ndarray]:
        return {
            "points": self.points, "labels": self.labels, "boxes": self.boxes,
            "box_labels": self.box_labels, "box_points": self.box_points,
            "occupancy": self.occupancy, "sensor_ids": self.sensor_ids, "object_ids": self.object_ids,
            "class_names": np.array(self.class_names), "seed": np.int64(self.seed),
            "is_wet": np.bool_(self.is_wet), "is_night": np.bool_(self.is_night),
            "traffic": np.array(self.traffic),
            "occupancy_resolution_m": np.float32(OCCUPANCY_GRID.resolution_m),
            "occupancy_half_extent_m": np.float32(OCCUPANCY_GRID.half_extent_m),
        }


def occupancy_from_scene(scene: Scene, prim_hits: np.ndarray, grid: GridSpec = OCCUPANCY_GRID) -> np.ndarray:
    """Rasterises the footprints of every solid that was seen and reaches into the band."""
    return occupancy_volume(scene, prim_hits, grid, (OCCUPANCY_BAND_M,))[0]


def occupancy_volume(scene: Scene, prim_hits: np.ndarray, grid: GridSpec, bins) -> np.ndarray:
    """``(Z, H, W)`` uint8: cells under a seen solid that reaches into each height bin
    ``(lo, hi)`` metres above the apron."""
    occ = np.zeros((len(bins), grid.size, grid.size), dtype=np.uint8)
    xs, ys = grid.centres()
    res, half = grid.resolution_m, grid.half_extent_m
    k = 0
    for obj in scene.objects:
        for prim in obj.prims:
            seen = prim_hits[k] > 0
            k += 1
            if not seen:
                continue
            ground_z = float(scene.ground.height(np.array(prim.center[0]), np.array(prim.center[1])))
            lo = prim.center[2] - prim.half[2] - ground_z
            hi = prim.center[2] + prim.half[2] - ground_z
            slices = [z for z, (b_lo, b_hi) in enumerate(bins) if hi >= b_lo and lo <= b_hi]
            if not slices:
                continue
            reach = float(np.hypot(prim.half[0], prim.half[1]))
            ix0 = max(int((prim.center[0] - reach + half) / res), 0)
            ix1 = min(int((prim.center[0] + reach + half) / res) + 1, grid.size)
            iy0 = max(int((prim.center[1] - reach + half) / res), 0)
            iy1 = min(int((prim.center[1] + reach + half) / res) + 1, grid.size)
            if ix0 >= ix1 or iy0 >= iy1:
                continue
            window = g.footprint_mask(prim, xs[iy0:iy1, ix0:ix1], ys[iy0:iy1, ix0:ix1])
            for z in slices:
                occ[z, iy0:iy1, ix0:ix1] |= window.astype(np.uint8)
    return occ


def render_scan(scene: Scene, density: str = "default", noise_seed: int = 0) -> Scan:
    """Scans ``scene`` with the vehicle's rig and summarises the ground truth."""
    rng = np.random.default_rng([scene.seed, noise_seed])
    raw = scan(scene, make_rig(density), rng)
    boxes = np.array([o.box() for o in scene.objects], dtype=np.float32).reshape(-1, 7)
    box_labels = np.array([o.class_id for o in scene.objects], dtype=np.uint8)
    obj_ids = raw.object_ids[raw.object_ids >= 0]
    box_points = np.bincount(obj_ids, minlength=len(scene.objects)).astype(np.int32)
    return Scan(points=raw.points, labels=raw.labels, boxes=boxes, box_labels=box_labels,
                box_points=box_points, occupancy=occupancy_from_scene(scene, raw.prim_hits),
                sensor_ids=raw.sensor_ids, object_ids=raw.object_ids, seed=scene.seed,
                is_wet=scene.conditions.is_wet, is_night=scene.conditions.is_night,
                traffic=scene.conditions.traffic)


def make_scan(seed: int, density: str = "default") -> Scan:
    """The labelled scan of ``seed``: deterministic on every machine."""
    return render_scan(generate_scene(seed), density)


def sequence(seed: int, frames: int, density: str = "default", period_s: float = 0.1) -> Iterator[Scan]:
    """``frames`` consecutive scans of one scene, ``period_s`` apart, objects moving."""
    scene = generate_scene(seed)
    for k in range(frames):
        yield render_scan(scene.moved(k * period_s), density, noise_seed=k)


def split_seeds(split: str, count: int) -> np.ndarray:
    """The first ``count`` seeds of a split (``train``, ``val``, ``test``, ``calib``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}': use one of {sorted(SPLITS)}")
    lo, hi = SPLITS[split]
    if count > hi - lo:
        raise ValueError(f"split '{split}' has {hi - lo} seeds, {count} asked for")
    return np.arange(lo, lo + count)
