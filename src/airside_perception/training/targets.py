"""Training samples: a simulated scan, its BEV input and the targets of the three tasks (NumPy)."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, Optional

import numpy as np

from airside_perception import classes
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.sim import world
from airside_perception.sim.offsite import generate_street_scene
from airside_perception.sim.scanner import make_rig, scan
from airside_perception.sim.scene import generate_scene
from airside_perception.training.randomize import Randomization, perturb, random_rig

DET_STRIDE = 2  # detection output cell = 2 BEV cells = 0.8 m (1 with the fine head: 0.4 m)
DET_LABEL_OF_CLASS = {classes.CLASS_IDS[n]: i for i, n in enumerate(classes.DETECTION_CLASS_NAMES)}
MIN_BOX_POINTS = 3


@dataclass(frozen=True)
class Sample:
    bev: np.ndarray  # (8, S, S) float32
    point_cells: np.ndarray  # (K,) int64
    point_features: np.ndarray  # (K, 5) float32
    point_labels: np.ndarray  # (K,) int64
    heatmap: np.ndarray  # (C, S/k, S/k) float32, k the detection stride
    regression: np.ndarray  # (8, S/k, S/k) float32
    reg_mask: np.ndarray  # (S/k, S/k) float32
    occupancy: np.ndarray  # (Z, S, S) float32
    point_colour: Optional[np.ndarray] = None  # (K, 4) float32 camera RGB and seen flag, with colour=True


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float = 0.1) -> float:
    """CenterNet's radius for which a shifted box still overlaps by ``min_overlap``."""
    h, w = length_cells, width_cells
    r1 = (h + w - np.sqrt((h + w) ** 2 - 4 * h * w * (1 - min_overlap) / (1 + min_overlap))) / 2
    r2 = (2 * (h + w) - np.sqrt(4 * (h + w) ** 2 - 16 * (1 - min_overlap) * h * w)) / 4
    r3 = (-2 * min_overlap * (h + w) + np.sqrt((2 * min_overlap * (h + w)) ** 2
                                               - 16 * (min_overlap - 1) * min_overlap * h * w)) / 2
    return float(min(r1, r2, r3))


def detection_targets(boxes: np.ndarray, box_labels: np.ndarray, box_points: np.ndarray, spec: BevSpec,
                      stride: int = DET_STRIDE):
    """CenterPoint targets at ``stride`` BEV cells (0.8 m by default): Gaussian heatmaps and
    regression at each centre cell."""
    n_cls = len(classes.DETECTION_CLASS_NAMES)
    out = spec.size // stride
    cell = spec.resolution_m * stride
    heat = np.zeros((n_cls, out, out), np.float32)
    reg = np.zeros((8, out, out), np.float32)
    mask = np.zeros((out, out), np.float32)
    ys, xs = np.mgrid[0:out, 0:out]
    for box, label, n_pts in zip(boxes, box_labels, box_points):
        det_label = DET_LABEL_OF_CLASS.get(int(label))
        if det_label is None or n_pts < MIN_BOX_POINTS:
            continue
        cx = (box[0] + spec.half_extent_m) / cell
        cy = (box[1] + spec.half_extent_m) / cell
        ix, iy = int(cx), int(cy)
        if not (0 <= ix < out and 0 <= iy < out):
            continue
        radius = max(1.0, gaussian_radius(box[3] / cell, box[4] / cell))
        sigma = (2 * radius + 1) / 6
        r = int(np.ceil(3 * sigma))
        y0, y1, x0, x1 = max(iy - r, 0), min(iy + r + 1, out), max(ix - r, 0), min(ix + r + 1, out)
        g = np.exp(-((xs[y0:y1, x0:x1] - ix) ** 2 + (ys[y0:y1, x0:x1] - iy) ** 2) / (2 * sigma * sigma))
        np.maximum(heat[det_label, y0:y1, x0:x1], g, out=heat[det_label, y0:y1, x0:x1])
        reg[:, iy, ix] = [cx - ix, cy - iy, box[2], np.log(box[3]), np.log(box[4]), np.log(box[5]),
                          np.sin(box[6]), np.cos(box[6])]
        mask[iy, ix] = 1.0
    return heat, reg, mask


def make_sample(seed: int, spec: BevSpec, rng: np.random.Generator,
                randomization: Optional[Randomization] = None, colour: bool = False,
                det_stride: int = DET_STRIDE) -> Sample:
    """One training sample from scene ``seed``, at a randomly drawn sensor density; with
    ``randomization``, also a drawn site (apron or street), sensor and perturbation; with
    ``colour``, each kept point's camera colour and visibility (``sim.camera``, surround rig)
    for a cross-modal teacher; ``det_stride``, the detection targets' cell in BEV cells."""
    if colour and randomization is not None:
        raise ValueError("camera colour is simulated for the apron scenes only, not with randomization")
    density = str(rng.choice(["compact", "default", "default", "dense"]))
    r = randomization
    is_street = r is not None and rng.random() < r.street_share
    scene = generate_street_scene(int(seed)) if is_street else generate_scene(int(seed))
    rig = random_rig(rng, r) if r is not None and rng.random() < r.single_sensor_share else make_rig(density)
    raw = scan(scene, rig, np.random.default_rng([int(seed), 7]))
    boxes = np.array([o.box() for o in scene.objects], np.float32).reshape(-1, 7)
    points, labels, object_ids = raw.points, raw.labels, raw.object_ids
    if r is not None:
        points, boxes, keep = perturb(points, boxes, rng, r)
        labels, object_ids = labels[keep], object_ids[keep]
    enc = encode(points, spec)
    box_labels = np.array([o.class_id for o in scene.objects], np.uint8)
    obj = object_ids[object_ids >= 0]
    box_points = np.bincount(obj, minlength=len(scene.objects))
    heat, reg, mask = detection_targets(boxes, box_labels, box_points, spec, det_stride)
    grid = world.GridSpec(spec.resolution_m, spec.half_extent_m)
    occ = world.occupancy_volume(scene, raw.prim_hits, grid, world.OCCUPANCY_BINS_M)
    point_colour = None
    if colour:
        from airside_perception.sim.camera import SURROUND, point_colours

        view = SimpleNamespace(points=points, labels=labels, object_ids=object_ids, boxes=boxes, seed=int(seed),
                               is_night=scene.conditions.is_night, is_wet=scene.conditions.is_wet)
        rgb, seen = point_colours(view, SURROUND, scene=scene)
        point_colour = np.column_stack([rgb[enc.kept], seen[enc.kept]]).astype(np.float32)
    return Sample(enc.bev[0], enc.point_cells, enc.point_features, labels[enc.kept].astype(np.int64),
                  heat, reg, mask, occ.astype(np.float32), point_colour)


def as_dict(sample: Sample) -> Dict[str, np.ndarray]:
    return {k: getattr(sample, k) for k in sample.__dataclass_fields__ if getattr(sample, k) is not None}
