"""The pre/post-processing on device arrays, for the vehicle's GPU path.

The same functions as :mod:`bev`, :mod:`segmentation`, :mod:`detection` and :mod:`occupancy`,
run with CuPy as their array module. ``scripts/check_gpu_ops.py`` checks on a CUDA GPU that
they give the NumPy results. CuPy is imported when a function is first called.
"""

from __future__ import annotations

from airside_perception.ops import bev, detection, occupancy, segmentation


def _cp():
    import cupy

    return cupy


def encode(points, spec: bev.BevSpec) -> bev.BevInput:
    """points (N, 4) float32 on the device -> :class:`bev.BevInput` of device arrays."""
    return bev.encode(points, spec, xp=_cp())


def softmax_max(logits):
    return segmentation.softmax_max(logits, xp=_cp())


def scatter_labels(kept, labels, scores, n_points: int):
    return segmentation.scatter_labels(kept, labels, scores, n_points, xp=_cp())


def heatmap_peaks(heat):
    """(C, H, W) probabilities -> mask of 3x3 local maxima."""
    return detection.heatmap_peaks(heat, xp=_cp())


def decode_occupancy(logits, bev_half_extent_m: float, resolution_m: float, out_half_extent_m: float,
                     threshold: float) -> occupancy.OccupancyGrid2D:
    """(1, Z, S, S) logits -> :class:`occupancy.OccupancyGrid2D` with device arrays."""
    return occupancy.decode_occupancy(logits, bev_half_extent_m, resolution_m, out_half_extent_m, threshold,
                                      xp=_cp())
