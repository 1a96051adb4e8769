"""CenterPoint decoding: heatmap peaks -> oriented boxes, then rotated-box NMS (BEV IoU)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

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


def decode_centerpoint(heat_logits: np.ndarray, regression: np.ndarray, params: DecodeParams, xp=np) -> Boxes:
    """heat_logits (1, C, H, W); regression (1, 8, H, W): dx, dy, z, log l, log w, log h, sin, cos.

    With ``xp`` CuPy the array work runs on the device and only the candidates (at most
    4 x max_detections rows) come to the host for the rotated NMS.
    """
    heat = 1.0 / (1.0 + xp.exp(-heat_logits[0]))
    candidates = heatmap_peaks(heat, xp=xp) & (heat > params.score_threshold)
    cls, iy, ix = xp.nonzero(candidates)
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


def box_corners_bev(box: np.ndarray) -> np.ndarray:
    """(7,) box -> (4, 2) BEV corners, counter-clockwise."""
    x, y, _, length, width, _, yaw = box
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[length, width], [-length, width], [-length, -width], [length, -width]]) / 2
    return np.column_stack([x + c * local[:, 0] - s * local[:, 1], y + s * local[:, 0] + c * local[:, 1]])


def _clip(subject: List[np.ndarray], a: np.ndarray, b: np.ndarray) -> List[np.ndarray]:
    """Sutherland-Hodgman: the part of polygon ``subject`` left of the edge a -> b."""
    def side(p):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])

    out: List[np.ndarray] = []
    for i, cur in enumerate(subject):
        prev = subject[i - 1]
        s_cur, s_prev = side(cur), side(prev)
        if s_cur >= 0:
            if s_prev < 0:
                out.append(prev + (cur - prev) * (s_prev / (s_prev - s_cur)))
            out.append(cur)
        elif s_prev >= 0:
            out.append(prev + (cur - prev) * (s_prev / (s_prev - s_cur)))
    return out


def _area(poly: List[np.ndarray]) -> float:
    if len(poly) < 3:
        return 0.0
    p = np.asarray(poly)
    return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))


def rotated_iou_bev(a: np.ndarray, b: np.ndarray) -> float:
    """BEV IoU of two (7,) boxes."""
    ca, cb = box_corners_bev(a), box_corners_bev(b)
    poly = list(ca)
    for i in range(4):
        poly = _clip(poly, cb[i], cb[(i + 1) % 4])
        if not poly:
            return 0.0
    inter = _area(poly)
    union = a[3] * a[4] + b[3] * b[4] - inter
    return float(inter / union) if union > 0 else 0.0


def nms_rotated(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy per-class NMS with BEV IoU; indices of kept boxes, best first.

    Only pairs whose circumscribed circles overlap are clipped, so the cost stays small.
    """
    order = np.argsort(-scores, kind="stable")
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        dist = np.hypot(boxes[:, 0] - boxes[i, 0], boxes[:, 1] - boxes[i, 1])
        near = np.flatnonzero(~suppressed & (labels == labels[i]) & (dist < radius + radius[i]))
        for j in near:
            if j != i and rotated_iou_bev(boxes[i], boxes[j]) > iou_threshold:
                suppressed[j] = True
    return np.asarray(keep, dtype=np.int64)
