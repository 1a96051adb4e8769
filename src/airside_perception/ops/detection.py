"""CenterPoint decoding: heatmap peaks -> oriented boxes, then rotated-box NMS (BEV IoU)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from airside_perception.errors import ConfigError


@dataclass(frozen=True)
class DecodeParams:
    """score_threshold (0..1), max_detections, nms_iou (BEV IoU above which the weaker box goes),
    half_extent_m and cell_m of the heatmap grid (base_link, centred)."""

    score_threshold: float
    max_detections: int
    nms_iou: float
    half_extent_m: float
    cell_m: float

    def __post_init__(self):
        if not 0.0 < self.score_threshold < 1.0:
            raise ConfigError(f"score_threshold {self.score_threshold} must lie in (0, 1)")
        if self.max_detections <= 0:
            raise ConfigError(f"max_detections {self.max_detections} must be positive")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ConfigError(f"nms_iou {self.nms_iou} must lie in (0, 1]")


@dataclass(frozen=True)
class Boxes:
    """boxes (M, 7) float32 x, y, z, length, width, height, yaw (metres, radians, base_link);
    labels (M,) int64 detection class; scores (M,) float32."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @staticmethod
    def empty() -> "Boxes":
        return Boxes(np.zeros((0, 7), np.float32), np.zeros(0, np.int64), np.zeros(0, np.float32))


def heatmap_peaks(heat: np.ndarray, xp=np) -> np.ndarray:
    """``(C, H, W)`` probabilities -> mask of 3x3 local maxima (CenterPoint's max-pool NMS)."""
    padded = xp.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-xp.inf)
    h, w = heat.shape[1:]
    pooled = heat.copy()
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            xp.maximum(pooled, padded[:, dy:dy + h, dx:dx + w], out=pooled)
    return heat >= pooled


def peaks_above(heat: np.ndarray, threshold: float):
    """``(cls, iy, ix)`` of the cells above ``threshold`` that are 3x3 local maxima: the same
    cells as ``heatmap_peaks(heat) & (heat > threshold)``, with the neighbourhood compared only
    at the few cells above the threshold instead of over the whole map (the CPU path)."""
    cls, iy, ix = np.unravel_index(np.flatnonzero(heat.ravel() > threshold), heat.shape)  # nonzero: 4x slower
    if len(cls) == 0:
        return cls, iy, ix
    h, w = heat.shape[1:]
    value = heat[cls, iy, ix]
    peak = np.ones(len(cls), bool)
    # a neighbour beyond the border is clipped onto the cell itself or onto a neighbour inside
    # the 3x3 that is compared anyway: the same result as padding with -inf, without copying the map
    for dy in (-1, 0, 1):
        ny = np.clip(iy + dy, 0, h - 1)
        for dx in (-1, 0, 1):
            if dy or dx:
                peak &= value >= heat[cls, ny, np.clip(ix + dx, 0, w - 1)]
    return cls[peak], iy[peak], ix[peak]


def decode_centerpoint(heat_logits: np.ndarray, regression: np.ndarray, params: DecodeParams, xp=np,
                       heat: Optional[np.ndarray] = None) -> Boxes:
    """heat_logits (1, C, H, W); regression (1, 8, H, W): dx, dy, z, log l, log w, log h, sin, cos.
    ``heat``: the heatmap's probabilities (C, H, W) when the caller has them already.

    With ``xp`` CuPy the array work runs on the device and only the candidates (at most
    4 x max_detections rows) come to the host for the rotated NMS.
    """
    if heat is None:
        heat = 1.0 / (1.0 + xp.exp(-heat_logits[0]))
    if xp is np:
        cls, iy, ix = peaks_above(heat, params.score_threshold)
    else:
        cls, iy, ix = xp.nonzero(heatmap_peaks(heat, xp=xp) & (heat > params.score_threshold))
    if len(cls) == 0:
        return Boxes.empty()
    scores = heat[cls, iy, ix]
    order = xp.argsort(-scores, kind="stable")[: 4 * params.max_detections]
    cls, iy, ix, scores = cls[order], iy[order], ix[order], scores[order]
    r = regression[0][:, iy, ix]  # (8, K)
    x = (ix + r[0]) * params.cell_m - params.half_extent_m
    y = (iy + r[1]) * params.cell_m - params.half_extent_m
    size = xp.exp(xp.clip(r[3:6], -5.0, 5.0))
    yaw = xp.arctan2(r[6], r[7])
    boxes = xp.column_stack([x, y, r[2], size[0], size[1], size[2], yaw]).astype(xp.float32)
    if xp is not np:
        boxes, scores, cls = boxes.get(), scores.get(), cls.get()
    keep = nms_rotated(boxes, scores, cls, params.nms_iou)[: params.max_detections]
    return Boxes(boxes[keep], cls[keep].astype(np.int64), scores[keep].astype(np.float32))


Point = Tuple[float, float]


def _corners(box) -> List[Point]:
    """(7,) box -> its four BEV corners as float pairs, counter-clockwise."""
    x, y, length, width, yaw = float(box[0]), float(box[1]), float(box[3]) / 2, float(box[4]) / 2, float(box[6])
    c, s = math.cos(yaw), math.sin(yaw)
    return [(x + c * u - s * v, y + s * u + c * v)
            for u, v in ((length, width), (-length, width), (-length, -width), (length, -width))]


def _clip(subject: List[Point], a: Point, b: Point) -> List[Point]:
    """Sutherland-Hodgman: the part of polygon ``subject`` left of the edge a -> b. Plain floats:
    on polygons of four to eight corners NumPy's per-call overhead is most of the cost."""
    ex, ey = b[0] - a[0], b[1] - a[1]
    out: List[Point] = []
    prev = subject[-1]
    s_prev = ex * (prev[1] - a[1]) - ey * (prev[0] - a[0])
    for cur in subject:
        s_cur = ex * (cur[1] - a[1]) - ey * (cur[0] - a[0])
        if (s_cur >= 0) != (s_prev >= 0):
            t = s_prev / (s_prev - s_cur)
            out.append((prev[0] + (cur[0] - prev[0]) * t, prev[1] + (cur[1] - prev[1]) * t))
        if s_cur >= 0:
            out.append(cur)
        prev, s_prev = cur, s_cur
    return out


def _area(poly: List[Point]) -> float:
    if len(poly) < 3:
        return 0.0
    twice = 0.0
    prev = poly[-1]
    for cur in poly:
        twice += prev[0] * cur[1] - prev[1] * cur[0]
        prev = cur
    return 0.5 * abs(twice)


def rotated_iou_bev(a: np.ndarray, b: np.ndarray) -> float:
    """BEV IoU of two (7,) boxes."""
    poly, cb = _corners(a), _corners(b)
    for i in range(4):
        poly = _clip(poly, cb[i], cb[(i + 1) % 4])
        if not poly:
            return 0.0
    inter = _area(poly)
    union = float(a[3]) * float(a[4]) + float(b[3]) * float(b[4]) - inter
    return inter / union if union > 0 else 0.0


def nms_rotated(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy per-class NMS with BEV IoU; indices of kept boxes, best first.

    Only pairs whose circumscribed circles overlap are clipped: they are found once for all
    pairs (one K x K distance matrix), so the greedy pass is a loop over those pairs alone.
    """
    order = np.argsort(-scores, kind="stable")
    b, lab = boxes[order], labels[order]
    radius = 0.5 * np.hypot(b[:, 3], b[:, 4])
    dist = np.hypot(b[:, None, 0] - b[None, :, 0], b[:, None, 1] - b[None, :, 1])
    close = np.triu((lab[:, None] == lab[None, :]) & (dist < radius[:, None] + radius[None, :]), 1)
    rows, cols = np.nonzero(close)  # row-major: each box's weaker close neighbours, in order
    starts = np.searchsorted(rows, np.arange(len(b) + 1))
    suppressed = np.zeros(len(b), bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(order[i])
        for j in cols[starts[i]:starts[i + 1]]:
            if not suppressed[j] and rotated_iou_bev(b[i], b[j]) > iou_threshold:
                suppressed[j] = True
    return np.asarray(keep, dtype=np.int64)
