"""Occupancy decoding: channel-to-height logits -> a 2D grid for nav_msgs/OccupancyGrid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OccupancyGrid2D:
    """cells (H, W) int8 0 (free) or 100 (occupied), row = y; origin = corner of cell (0, 0), metres."""

    cells: np.ndarray
    probability: np.ndarray
    resolution_m: float
    origin_x_m: float
    origin_y_m: float


def decode_occupancy(logits: np.ndarray, bev_half_extent_m: float, resolution_m: float,
                     out_half_extent_m: float, threshold: float, xp=np) -> OccupancyGrid2D:
    """``(1, Z, S, S)`` logits over the BEV grid -> the centre ``out_half_extent_m`` crop.

    A cell is occupied when any height bin's probability exceeds ``threshold``.
    """
    size = logits.shape[-1]
    out = int(round(2 * out_half_extent_m / resolution_m))
    start = (size - out) // 2
    top = logits[0, :, start:start + out, start:start + out].max(axis=0)
    prob = 1.0 / (1.0 + xp.exp(-top))
    cells = xp.where(prob > threshold, 100, 0).astype(xp.int8)
    origin = -bev_half_extent_m + start * resolution_m
    return OccupancyGrid2D(cells, prob.astype(xp.float32), resolution_m, origin, origin)
