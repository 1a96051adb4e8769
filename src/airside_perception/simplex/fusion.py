"""Near-field safety net: baseline obstacles the advanced path missed are added to its output."""

from __future__ import annotations

import numpy as np


def missed_near_obstacles(advanced: np.ndarray, baseline: np.ndarray, near_field_m: float,
                          margin_m: float = 0.5) -> np.ndarray:
    """Indices of baseline boxes within ``near_field_m`` that no advanced box covers.

    advanced (A, 7), baseline (B, 7): x, y, z, l, w, h, yaw in one frame. A baseline obstacle
    is covered when an advanced box centre lies in it (grown by ``margin_m``) or its centre
    lies in an advanced box (grown by ``margin_m``).
    """
    if len(baseline) == 0:
        return np.zeros(0, np.int64)
    near = np.hypot(baseline[:, 0], baseline[:, 1]) <= near_field_m
    if len(advanced) == 0:
        return np.flatnonzero(near)
    # (A, B) tests, reduced over the advanced boxes
    covered = inside_boxes(advanced[:, None, :2], baseline[None, :, :], margin_m).any(axis=0)
    covered |= inside_boxes(baseline[None, :, :2], advanced[:, None, :], margin_m).any(axis=0)
    return np.flatnonzero(near & ~covered)


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


def near_field_mask(size: int, resolution_m: float, origin_m: float, near_field_m: float) -> np.ndarray:
    c = origin_m + (np.arange(size) + 0.5) * resolution_m
    xs, ys = np.meshgrid(c, c)
    return np.hypot(xs, ys) <= near_field_m

