"""Near-field safety net: baseline obstacles the advanced path does not account for are added to
its output, and the baseline's occupied cells to its grid.

Everything works on footprints, not centres. The near field is every point within
``near_field_m`` of the vehicle's own footprint (a polygon around base_link, metres): a box
whose footprint reaches into it counts, wherever its centre lies. A baseline obstacle there is
dropped only when an advanced box *corresponds* to it: the advanced box covers at least
``MIN_COVER`` of the baseline footprint, and the baseline footprint is at least
``MIN_AREA_RATIO`` of the advanced one (the cluster is a substantial part of that object). So a
cone's box does not hide the person 0.6 m from it, and no advanced box, however large, hides
small obstacles inside it that it does not correspond to. Baseline clusters carry no class; the
size condition is what makes a class compatible with them.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

from airside_perception.errors import ConfigError

MIN_COVER = 0.5
MIN_AREA_RATIO = 0.25
COVER_SAMPLES = 5  # per side: the baseline footprint is sampled on a 5 x 5 grid
POINT_FOOTPRINT = np.array([[-0.005, -0.005], [0.005, -0.005], [0.005, 0.005], [-0.005, 0.005]])


def footprint_polygon(spec: Union[Sequence[float], Sequence[Sequence[float]]]) -> np.ndarray:
    """``(K, 2)`` polygon of the vehicle footprint, base_link, metres, from ``[length, width]``
    (a rectangle centred on base_link) or a list of ``[x, y]`` corners (convex, in order)."""
    values = list(spec)
    if len(values) == 2 and all(isinstance(v, (int, float)) for v in values):
        length, width = (float(v) for v in values)
        if not (length > 0 and width > 0):
            raise ConfigError(f"vehicle_footprint_m {values}: length and width must be positive metres")
        return np.array([[-length / 2, -width / 2], [length / 2, -width / 2], [length / 2, width / 2],
                         [-length / 2, width / 2]])
    try:
        poly = np.asarray(values, float)
    except (TypeError, ValueError):
        poly = np.zeros((0, 0))
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3 or not np.isfinite(poly).all():
        raise ConfigError(f"vehicle_footprint_m {values} must be [length, width] or a list of at least three "
                          "[x, y] corners in metres around base_link")
    return poly


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """``(B, 4, 2)`` BEV corners of boxes ``(B, 7)`` x, y, z, l, w, h, yaw."""
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    half_l, half_w = boxes[:, 3] / 2, boxes[:, 4] / 2
    du = np.stack([half_l, half_l, -half_l, -half_l], 1)
    dv = np.stack([-half_w, half_w, half_w, -half_w], 1)
    x = boxes[:, None, 0] + c[:, None] * du - s[:, None] * dv
    y = boxes[:, None, 1] + s[:, None] * du + c[:, None] * dv
    return np.stack([x, y], -1)


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of ``points (..., 2)`` to segments ``a -> b (..., 2)``, broadcast."""
    ab = b - a
    t = np.clip(((points - a) * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    closest = a + t[..., None] * ab
    return np.linalg.norm(points - closest, axis=-1)


def _inside_convex(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """``points (..., 2)`` inside the convex polygon ``poly (..., K, 2)`` (either winding), broadcast."""
    a, b = poly, np.roll(poly, -1, axis=-2)
    cross = (b[..., 0] - a[..., 0]) * (points[..., None, 1] - a[..., 1]) - \
        (b[..., 1] - a[..., 1]) * (points[..., None, 0] - a[..., 0])
    return (cross >= 0).all(-1) | (cross <= 0).all(-1)


def distance_to_footprint(points: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """``(N,)`` distance of ``points (N, 2)`` to the footprint polygon; 0 inside it."""
    a, b = footprint, np.roll(footprint, -1, axis=0)
    d = _segment_distance(points[:, None, :], a[None], b[None]).min(axis=1)
    return np.where(_inside_convex(points, footprint[None]), 0.0, d)


def reaches_near_field(boxes: np.ndarray, footprint: np.ndarray, near_field_m: float) -> np.ndarray:
    """``(B,)`` whether any part of each box's footprint lies within ``near_field_m`` of the vehicle's."""
    if len(boxes) == 0:
        return np.zeros(0, bool)
    corners = box_corners(boxes)  # (B, 4, 2)
    a, b = corners, np.roll(corners, -1, axis=1)
    # vehicle corners to box edges, box corners to vehicle edges; overlap when a corner is inside
    v_to_box = _segment_distance(footprint[None, :, None, :], a[:, None], b[:, None]).min(axis=(1, 2))
    box_to_v = distance_to_footprint(corners.reshape(-1, 2), footprint).reshape(-1, 4).min(axis=1)
    overlap = _inside_convex(footprint[None, :, :], corners[:, None]).any(axis=1)
    return (np.minimum(v_to_box, box_to_v) <= near_field_m) | overlap


def _footprint_samples(boxes: np.ndarray) -> np.ndarray:
    """``(B, S*S, 2)``: each box's BEV footprint sampled on an S x S grid (S = ``COVER_SAMPLES``)."""
    grid = (np.arange(COVER_SAMPLES) + 0.5) / COVER_SAMPLES - 0.5  # (S,) in [-0.5, 0.5]
    gu, gv = np.meshgrid(grid, grid)
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    du = gu.reshape(1, -1) * boxes[:, 3:4]
    dv = gv.reshape(1, -1) * boxes[:, 4:5]
    return np.stack([boxes[:, 0:1] + c[:, None] * du - s[:, None] * dv,
                     boxes[:, 1:2] + s[:, None] * du + c[:, None] * dv], -1)


def _accounts_for(cover: np.ndarray, advanced: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """The correspondence rule on broadcast boxes: enough cover, and comparable footprints."""
    return (cover >= MIN_COVER) & (baseline[..., 3] * baseline[..., 4]
                                   >= MIN_AREA_RATIO * advanced[..., 3] * advanced[..., 4])


def corresponds_pairs(advanced: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``(P,)``: ``corresponds`` for the pairs (advanced[i], baseline[i]) only."""
    cover = inside_boxes(_footprint_samples(baseline), advanced[:, None, :], 0.0).mean(axis=-1)
    return _accounts_for(cover, advanced, baseline)


def corresponds(advanced: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``(A, B)``: advanced box a accounts for baseline obstacle b (covers at least ``MIN_COVER``
    of its footprint, and b's footprint is at least ``MIN_AREA_RATIO`` of a's)."""
    if len(advanced) == 0 or len(baseline) == 0:
        return np.zeros((len(advanced), len(baseline)), bool)
    samples = _footprint_samples(baseline)
    cover = inside_boxes(samples[None], advanced[:, None, None, :], 0.0).mean(axis=-1)  # (A, B)
    return _accounts_for(cover, advanced[:, None, :], baseline[None, :, :])


def missed_near_obstacles(advanced: np.ndarray, baseline: np.ndarray, near_field_m: float,
                          footprint: np.ndarray = None) -> np.ndarray:
    """Indices of baseline boxes whose footprint reaches into the near field and that no advanced
    box corresponds to. advanced (A, 7), baseline (B, 7): x, y, z, l, w, h, yaw in one frame;
    ``footprint`` (K, 2) the vehicle's polygon (default: a 1 cm square at base_link)."""
    if len(baseline) == 0:
        return np.zeros(0, np.int64)
    footprint = POINT_FOOTPRINT if footprint is None else footprint
    near = np.flatnonzero(reaches_near_field(baseline, footprint, near_field_m))
    if len(near) == 0 or len(advanced) == 0:
        return near
    covered = _covered(advanced, baseline[near])
    return near[~covered]


def _covered(advanced: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """``(B,)``: some advanced box corresponds to each baseline box (``corresponds(...).any(0)``),
    testing only pairs whose footprints can touch (centres closer than their half diagonals)."""
    reach_a = np.hypot(advanced[:, 3], advanced[:, 4]) / 2
    reach_b = np.hypot(baseline[:, 3], baseline[:, 4]) / 2
    gap = np.hypot(advanced[:, None, 0] - baseline[None, :, 0], advanced[:, None, 1] - baseline[None, :, 1])
    ia, ib = np.nonzero(gap <= reach_a[:, None] + reach_b[None, :])
    covered = np.zeros(len(baseline), bool)
    if len(ia):
        pairs = corresponds_pairs(advanced[ia], baseline[ib])
        covered[ib[pairs]] = True
    return covered


def inside_boxes(points: np.ndarray, boxes: np.ndarray, margin_m: float) -> np.ndarray:
    """points (..., 2) in boxes (..., 7), broadcast; BEV test with boxes grown by ``margin_m``."""
    dx = points[..., 0] - boxes[..., 0]
    dy = points[..., 1] - boxes[..., 1]
    c, s = np.cos(boxes[..., 6]), np.sin(boxes[..., 6])
    u, v = c * dx + s * dy, -s * dx + c * dy
    return (np.abs(u) <= boxes[..., 3] / 2 + margin_m) & (np.abs(v) <= boxes[..., 4] / 2 + margin_m)


def merge_grids(advanced: np.ndarray, baseline: np.ndarray, near_mask: np.ndarray) -> np.ndarray:
    """The advanced grid with the baseline's occupied cells added inside ``near_mask``."""
    out = advanced.copy()
    add = near_mask & (baseline == 100)
    out[add] = 100
    return out


def near_field_mask(size: int, resolution_m: float, origin_m: float, near_field_m: float,
                    footprint: np.ndarray = None) -> np.ndarray:
    """(size, size) cells whose centre lies within ``near_field_m`` of the vehicle footprint."""
    c = origin_m + (np.arange(size) + 0.5) * resolution_m
    xs, ys = np.meshgrid(c, c)
    footprint = POINT_FOOTPRINT if footprint is None else footprint
    d = distance_to_footprint(np.column_stack([xs.ravel(), ys.ravel()]), footprint)
    return d.reshape(size, size) <= near_field_m
