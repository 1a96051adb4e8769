"""Task pipelines: one engine each, from the shared BEV input to arrays the nodes publish."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np

from airside_perception.backends.base import Backend
from airside_perception.engines.manifest import Manifest
from airside_perception.errors import ConfigError, InferenceError
from airside_perception.frames import ENGINE_INTENSITY_MAX
from airside_perception.ops import segmentation as seg_ops
from airside_perception.ops.bev import BevInput, BevSpec
from airside_perception.ops.detection import Boxes, DecodeParams, decode_centerpoint
from airside_perception.ops.occupancy import OccupancyGrid2D, decode_occupancy
from airside_perception.pipelines import trust


def bev_spec_of(manifest: Manifest) -> BevSpec:
    p = manifest.preprocessing
    try:
        return BevSpec(half_extent_m=float(p["half_extent_m"]), resolution_m=float(p["resolution_m"]),
                       z_min_m=float(p["z_min_m"]), z_max_m=float(p["z_max_m"]), max_pillars=int(p["max_pillars"]),
                       intensity_max=float(p.get("intensity_max", ENGINE_INTENSITY_MAX)))
    except KeyError as exc:
        raise ConfigError(f"{manifest.directory}: preprocessing lacks {exc}") from None


@dataclass(frozen=True)
class TaskResult:
    """What one task made of one cloud. ``confidence`` in 0..1 feeds the simplex decision."""

    task: str
    version: str
    confidence: float
    inference_ms: float
    postprocess_ms: float
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    boxes: Boxes = field(default_factory=Boxes.empty)
    grid: Any = None  # OccupancyGrid2D for occupancy
    features: Dict[str, float] = field(default_factory=dict)  # output statistics for the trust monitor


def largest(logits: np.ndarray, k: int, block: int = 4) -> np.ndarray:
    """The ``k`` largest values of a ``(1, C, H, W)`` map, in no order. The maxima of the map's
    blocks (all classes, ``block`` x ``block`` cells) are ``k`` or more values of the map, so
    their ``k``-th largest bounds the map's from below: only the values at or above it (a few
    dozen) are partitioned, not all C x H x W."""
    flat = logits.reshape(-1)
    if len(flat) <= k:
        return flat
    c, h, w = logits.shape[-3:]
    if h % block or w % block:
        block = 1
    cell_max = logits.reshape(c, h, w).max(axis=0)
    # strided views, element-wise: NumPy's reduction over a short inner axis is 8x slower
    block_max = np.maximum.reduce([cell_max[i::block, j::block] for i in range(block) for j in range(block)])
    block_max = block_max.reshape(-1)
    if len(block_max) <= k:
        return np.partition(flat, len(flat) - k)[-k:]
    bound = np.partition(block_max, len(block_max) - k)[len(block_max) - k]
    above = flat[flat >= bound]
    return np.partition(above, len(above) - k)[-k:]


def _check_finite(outputs: Mapping[str, np.ndarray], manifest: Manifest) -> None:
    for name, value in outputs.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise InferenceError(f"{manifest.task} {manifest.version}: output '{name}' has non-finite values")


class TaskEngine:
    """A loaded engine of one task with its manifest's post-processing parameters."""

    def __init__(self, manifest: Manifest, backend: Backend):
        self.manifest = manifest
        self.backend = backend
        self.task = manifest.task
        self.version = manifest.version
        self.bev_spec = bev_spec_of(manifest)
        self.monitor: Optional[trust.MonitorCalibration] = (
            trust.MonitorCalibration.from_dict(manifest.monitor, f"{manifest.directory}/manifest.yaml")
            if manifest.monitor else None)
        post = manifest.postprocessing
        try:
            if self.task == "detection":
                self.decode = DecodeParams(float(post["score_threshold"]), int(post["max_detections"]),
                                           float(post["nms_iou"]), self.bev_spec.half_extent_m,
                                           self.bev_spec.resolution_m * int(post["stride"]))
            elif self.task == "occupancy":
                self.occ_threshold = float(post["threshold"])
                self.occ_half_extent_m = float(post["grid_half_extent_m"])
        except KeyError as exc:
            raise ConfigError(f"{manifest.directory}: postprocessing lacks {exc}") from None

    def feeds(self, bev: BevInput) -> Dict[str, np.ndarray]:
        if self.task == "segmentation":
            return {"bev": bev.bev, "point_cells": bev.point_cells, "point_features": bev.point_features}
        return {"bev": bev.bev}

    def run(self, bev: BevInput) -> TaskResult:
        """Inference and post-processing of one encoded cloud. Raises ``InferenceError``."""
        start = time.perf_counter()
        if self.task == "segmentation" and len(bev.kept) == 0:
            outputs = {"point_logits": np.zeros((0, len(self.manifest.class_names)), np.float32)}
        else:
            outputs = self.backend.infer(self.feeds(bev))
        _check_finite(outputs, self.manifest)
        mid = time.perf_counter()
        result_fields = self._postprocess(outputs, bev)
        end = time.perf_counter()
        return TaskResult(self.task, self.version, inference_ms=(mid - start) * 1e3,
                          postprocess_ms=(end - mid) * 1e3, **result_fields)

    def _postprocess(self, outputs: Mapping[str, np.ndarray], bev: BevInput) -> Dict[str, Any]:
        if self.task == "segmentation":
            labels, scores, top = seg_ops.softmax_top(outputs["point_logits"])
            all_labels, all_scores = seg_ops.scatter_labels(bev.kept, labels, scores, bev.n_input)
            confidence = float(scores.mean()) if len(scores) else 1.0
            return {"labels": all_labels, "scores": all_scores, "confidence": confidence,
                    "features": trust.segmentation_features(top, scores)}
        if self.task == "detection":
            heat = outputs["heatmap"]
            p = 1.0 / (1.0 + np.exp(-heat))
            boxes = decode_centerpoint(heat, outputs["regression"], self.decode, heat=p[0])
            return {"boxes": boxes, "confidence": float(np.maximum(p, 1 - p).mean()),
                    "features": trust.cell_features("det", p.max(axis=1), largest(heat, trust.DETECTION_PEAKS))}
        grid: OccupancyGrid2D = decode_occupancy(outputs["occupancy_logits"], self.bev_spec.half_extent_m,
                                                 self.bev_spec.resolution_m, self.occ_half_extent_m,
                                                 self.occ_threshold)
        p = grid.probability
        return {"grid": grid, "confidence": float(np.maximum(p, 1 - p).mean()),
                "features": trust.cell_features("occ", p)}

    def close(self) -> None:
        self.backend.deactivate()

