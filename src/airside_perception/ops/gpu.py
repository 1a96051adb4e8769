"""CuPy twins of the NumPy pre/post-processing, for the vehicle's GPU path.

Same inputs, same outputs as :mod:`bev`, :mod:`segmentation`, :mod:`detection` and
:mod:`occupancy`, on device arrays. ``scripts/check_gpu_ops.py`` checks them against the NumPy
versions on a CUDA GPU. CuPy is imported when a function is first called.
"""

from __future__ import annotations

from typing import Tuple

from airside_perception.ops.bev import N_BEV_FEATURES, N_POINT_FEATURES, BevSpec


def _cp():
    import cupy
    import cupyx

    return cupy, cupyx


def encode(points, spec: BevSpec) -> Tuple:
    """points (N, 4) float32 on the device -> (bev (1, 8, S, S), kept, point_cells,
    point_features, overflow_points): the values of :func:`bev.encode`."""
    cp, cpx = _cp()
    s = spec.size
    h = spec.half_extent_m
    finite = cp.isfinite(points).all(axis=1)
    safe = cp.where(finite[:, None], points, 0.0)
    inside = finite & (cp.abs(safe[:, 0]) < h) & (cp.abs(safe[:, 1]) < h) & (safe[:, 2] >= spec.z_min_m) & (
        safe[:, 2] < spec.z_max_m)
    kept = cp.flatnonzero(inside)
    p = points[kept]
    ix = cp.clip(((p[:, 0] + h) / spec.resolution_m).astype(cp.int64), 0, s - 1)
    iy = cp.clip(((p[:, 1] + h) / spec.resolution_m).astype(cp.int64), 0, s - 1)
    cells = iy * s + ix
    count = cp.bincount(cells, minlength=s * s)
    occupied = cp.flatnonzero(count)
    overflow_points = 0
    if int(occupied.size) > spec.max_pillars:
        cy, cx = cp.divmod(occupied, s)
        dist = (cx - s / 2 + 0.5) ** 2 + (cy - s / 2 + 0.5) ** 2
        keep_cells = occupied[cp.argsort(dist, kind="stable")[: spec.max_pillars]]
        allowed = cp.zeros(s * s, bool)
        allowed[keep_cells] = True
        mask = allowed[cells]
        overflow_points = int((~mask).sum())
        cells, kept, p = cells[mask], kept[mask], p[mask]
        count = cp.where(allowed, count, 0)
        occupied = cp.flatnonzero(count)
    z, inten = p[:, 2], p[:, 3]
    zmax = cp.full(s * s, -cp.inf, cp.float32)
    zmin = cp.full(s * s, cp.inf, cp.float32)
    imax = cp.zeros(s * s, cp.float32)
    cpx.scatter_max(zmax, cells, z)
    cpx.scatter_min(zmin, cells, z)
    cpx.scatter_max(imax, cells, inten)
    n = count[occupied].astype(cp.float32)
    zsum = cp.bincount(cells, weights=z.astype(cp.float64), minlength=s * s)
    isum = cp.bincount(cells, weights=inten.astype(cp.float64), minlength=s * s)
    zmin_pt = zmin[cells]
    above = cp.bincount(cells, weights=((z - zmin_pt) > 0.2).astype(cp.float64), minlength=s * s)
    bev = cp.zeros((N_BEV_FEATURES, s * s), cp.float32)
    zmean_occ = zsum[occupied] / n
    bev[0, occupied] = 1.0
    bev[1, occupied] = cp.log1p(n) / 4.0
    bev[2, occupied] = zmax[occupied] / 4.0
    bev[3, occupied] = zmin[occupied] / 4.0
    bev[4, occupied] = zmean_occ / 4.0
    bev[5, occupied] = imax[occupied] / 255.0
    bev[6, occupied] = isum[occupied] / n / 255.0
    bev[7, occupied] = above[occupied] / n
    zmean = cp.zeros(s * s, cp.float32)
    zmean[occupied] = zmean_occ
    feats = cp.empty((p.shape[0], N_POINT_FEATURES), cp.float32)
    feats[:, 0] = z - zmin_pt
    feats[:, 1] = z - zmean[cells]
    feats[:, 2] = inten / 255.0
    feats[:, 3] = z / 4.0
    feats[:, 4] = cp.sqrt(p[:, 0] * p[:, 0] + p[:, 1] * p[:, 1]) / 50.0
    return bev.reshape(1, N_BEV_FEATURES, s, s), kept, cells, feats, overflow_points


def softmax_max(logits):
    cp, _ = _cp()
    labels = cp.argmax(logits, axis=1)
    top = cp.take_along_axis(logits, labels[:, None], axis=1)
    denom = cp.exp(logits - top).sum(axis=1)
    return labels.astype(cp.uint8), (1.0 / denom).astype(cp.float32)


def scatter_labels(kept, labels, scores, n_points: int):
    cp, _ = _cp()
    out_labels = cp.full(n_points, 255, cp.uint8)
    out_scores = cp.zeros(n_points, cp.float32)
    out_labels[kept] = labels
    out_scores[kept] = scores
    return out_labels, out_scores


def heatmap_peaks(heat):
    """(C, H, W) probabilities -> mask of 3x3 local maxima, as :func:`detection.heatmap_peaks`."""
    cp, _ = _cp()
    padded = cp.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-cp.inf)
    h, w = heat.shape[1:]
    pooled = heat.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            cp.maximum(pooled, padded[:, dy:dy + h, dx:dx + w], out=pooled)
    return heat >= pooled


def decode_occupancy(logits, out_half_extent_m: float, resolution_m: float, threshold: float):
    """(1, Z, S, S) logits -> (cells int8 0/100, probability) of the centre crop."""
    cp, _ = _cp()
    size = logits.shape[-1]
    out = int(round(2 * out_half_extent_m / resolution_m))
    start = (size - out) // 2
    top = logits[0, :, start:start + out, start:start + out].max(axis=0)
    prob = 1.0 / (1.0 + cp.exp(-top))
    return cp.where(prob > threshold, 100, 0).astype(cp.int8), prob.astype(cp.float32)
