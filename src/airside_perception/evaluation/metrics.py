"""Accuracy metrics of the three tasks against simulator ground truth (NumPy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from airside_perception import classes

#: nuScenes-style BEV centre-distance thresholds, metres; AP is their mean.
AP_DISTANCES_M = (0.5, 1.0, 2.0, 4.0)
MIN_GT_POINTS = 5
NEAR_FIELD_M = classes.NEAR_FIELD_M
PERSON_MATCH_M = classes.PERSON_MATCH_M


def _greedy_match(truth_xy: np.ndarray, det_xy: np.ndarray, order: np.ndarray, max_dist_m: float):
    """Detections in ``order`` each take the nearest object not yet taken within ``max_dist_m``:
    (per object, taken; per detection in ``order``, whether it took one)."""
    taken = np.zeros(len(truth_xy), bool)
    hits = np.zeros(len(order), bool)
    if len(truth_xy) == 0:
        return taken, hits
    for k, i in enumerate(order):
        dist = np.hypot(truth_xy[:, 0] - det_xy[i, 0], truth_xy[:, 1] - det_xy[i, 1])
        dist[taken] = np.inf
        j = int(np.argmin(dist))
        if dist[j] <= max_dist_m:
            taken[j] = hits[k] = True
    return taken, hits


def match_centres(truth_xy: np.ndarray, det_xy: np.ndarray, det_scores: np.ndarray, max_dist_m: float) -> np.ndarray:
    """One-to-one BEV centre matching, as AP matches: detections in descending score each take
    the nearest object not yet taken within ``max_dist_m``. Returns, per object, whether a
    detection took it. One box between two persons counts for one of them, not both."""
    return _greedy_match(truth_xy, det_xy, np.argsort(-np.asarray(det_scores), kind="stable"), max_dist_m)[0]


class SegmentationMeter:
    """Confusion matrix over labelled points; IoU per class, mIoU over all but ``unknown``."""

    def __init__(self, class_names: Sequence[str] = classes.CLASS_NAMES):
        self.names = tuple(class_names)
        self.confusion = np.zeros((len(self.names), len(self.names)), np.int64)

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        valid = predicted != classes.UNLABELLED
        k = len(self.names)
        idx = truth[valid].astype(np.int64) * k + predicted[valid].astype(np.int64)
        self.confusion += np.bincount(idx, minlength=k * k).reshape(k, k)

    def iou(self) -> Dict[str, float]:
        tp = np.diag(self.confusion).astype(float)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - tp
        return {n: float(tp[i] / denom[i]) if denom[i] else float("nan") for i, n in enumerate(self.names)}

    def summary(self, only_present: bool = False) -> Dict[str, object]:
        """mIoU over the named classes (not ``unknown``); with ``only_present``, over those
        with ground-truth points (a data set without aircraft does not score aircraft)."""
        iou = self.iou()
        present = self.confusion.sum(1) > 0
        scored = [v for i, (n, v) in enumerate(iou.items()) if n != "unknown" and not np.isnan(v)
                  and (present[i] or not only_present)]
        return {"miou": float(np.mean(scored)) * 100, "iou": {n: round(v * 100, 2) for n, v in iou.items()},
                "points": int(self.confusion.sum())}


@dataclass
class _ClassDetections:
    scores: List[float] = field(default_factory=list)
    matched: Dict[float, List[bool]] = field(default_factory=dict)
    n_gt: int = 0


class DetectionMeter:
    """BEV centre-distance average precision per class, and near-field person recall."""

    def __init__(self, class_names: Sequence[str] = classes.DETECTION_CLASS_NAMES, range_m: float = 51.2):
        self.names = tuple(class_names)
        self.range_m = range_m
        self.per_class = {n: _ClassDetections(matched={d: [] for d in AP_DISTANCES_M}) for n in self.names}
        self.near_persons = 0
        self.near_persons_found = 0

    def add(self, gt_boxes: np.ndarray, gt_labels: Sequence[str], gt_points: np.ndarray,
            boxes: np.ndarray, labels: Sequence[str], scores: np.ndarray, recall_threshold: float) -> None:
        """gt/pred boxes (M, 7) base_link; labels by name; objects with few returns are not scored."""
        in_range = (np.abs(gt_boxes[:, 0]) < self.range_m) & (np.abs(gt_boxes[:, 1]) < self.range_m)
        for name, stats in self.per_class.items():
            g_mask = np.array([lab == name for lab in gt_labels], bool) & in_range & (gt_points >= MIN_GT_POINTS)
            g = gt_boxes[g_mask]
            p_mask = np.array([lab == name for lab in labels], bool)
            p, s = boxes[p_mask], scores[p_mask]
            stats.n_gt += len(g)
            order = np.argsort(-s)
            stats.scores.extend(s[order].tolist())
            for d in AP_DISTANCES_M:
                stats.matched[d].extend(_greedy_match(g[:, :2], p[:, :2], order, d)[1].tolist())
            if name == "person":
                near = np.hypot(g[:, 0], g[:, 1]) < NEAR_FIELD_M
                confident = s >= recall_threshold
                found = match_centres(g[:, :2], p[confident, :2], s[confident], PERSON_MATCH_M)
                self.near_persons += int(near.sum())
                self.near_persons_found += int((found & near).sum())

    @staticmethod
    def _ap(scores: List[float], matched: List[bool], n_gt: int) -> float:
        if n_gt == 0:
            return float("nan")
        if not scores:
            return 0.0
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = np.asarray(matched, float)[order]
        cum_tp = np.cumsum(tp)
        precision = cum_tp / np.arange(1, len(tp) + 1)
        recall = cum_tp / n_gt
        # 101-point interpolated AP
        ap = 0.0
        for r in np.linspace(0, 1, 101):
            above = precision[recall >= r]
            ap += above.max() if len(above) else 0.0
        return ap / 101

    def summary(self) -> Dict[str, object]:
        ap = {}
        for name, stats in self.per_class.items():
            values = [self._ap(stats.scores, stats.matched[d], stats.n_gt) for d in AP_DISTANCES_M]
            ap[name] = float(np.mean(values)) * 100 if stats.n_gt else float("nan")
        scored = [v for v in ap.values() if not np.isnan(v)]
        recall = self.near_persons_found / self.near_persons if self.near_persons else float("nan")
        return {"map": float(np.mean(scored)), "ap": {k: round(v, 2) for k, v in ap.items()},
                "gt_objects": {k: v.n_gt for k, v in self.per_class.items()},
                "person_recall_20m": round(recall * 100, 2), "near_persons": self.near_persons}


class OccupancyMeter:
    def __init__(self):
        self.inter = 0
        self.union = 0

    def add(self, truth: np.ndarray, occupied: np.ndarray) -> None:
        t, p = truth.astype(bool), occupied.astype(bool)
        self.inter += int((t & p).sum())
        self.union += int((t | p).sum())

    def summary(self) -> Dict[str, object]:
        return {"iou": self.inter / self.union * 100 if self.union else float("nan")}
