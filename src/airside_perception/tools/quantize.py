"""INT8 post-training quantization to a Q/DQ ONNX model (ONNX Runtime's static quantizer).

The calibration set follows the vehicle team's rule: day and night, wet and dry, empty apron
and busy turnaround, near (5 m) and far (100 m and more) objects. ``select_calibration``
draws scans from the ``calib`` split until every condition is covered, and says which are not
when it cannot. Output heads can be kept in float (``keep_float``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from airside_perception.errors import ConfigError
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.sim.world import Scan, make_scan, split_seeds

CONDITIONS = ("day", "night", "wet", "dry", "empty_apron", "busy_turnaround", "near_object_5m", "far_object_100m")
NEAR_M, FAR_M = 5.0, 100.0


def conditions_of(scan: Scan) -> List[str]:
    """Which calibration conditions one labelled scan covers."""
    out = ["night" if scan.is_night else "day", "wet" if scan.is_wet else "dry"]
    if scan.traffic == "empty":
        out.append("empty_apron")
    if scan.traffic == "busy":
        out.append("busy_turnaround")
    seen = scan.box_points > 0
    dist = np.hypot(scan.boxes[seen, 0], scan.boxes[seen, 1]) - np.maximum(scan.boxes[seen, 3], scan.boxes[seen, 4]) / 2
    if (dist <= NEAR_M).any():
        out.append("near_object_5m")
    if (np.hypot(scan.points[:, 0], scan.points[:, 1]) >= FAR_M).sum() > 50 and (
            np.hypot(scan.boxes[seen, 0], scan.boxes[seen, 1]) >= FAR_M).any():
        out.append("far_object_100m")
    return out


@dataclass
class CalibrationSet:
    seeds: List[int] = field(default_factory=list)
    coverage: Dict[str, int] = field(default_factory=lambda: {c: 0 for c in CONDITIONS})

    @property
    def missing(self) -> List[str]:
        return [c for c, n in self.coverage.items() if n == 0]

    def report(self) -> str:
        return ", ".join(f"{c} {n}" for c, n in self.coverage.items())


def select_calibration(n_scans: int, split: str = "calib", min_per_condition: int = 2,
                       only: Optional[Sequence[str]] = None, max_draws: int = 400) -> CalibrationSet:
    """``n_scans`` scans covering every condition ``min_per_condition`` times where possible.

    ``only`` restricts the set to scans that have all the listed conditions (a deliberately
    narrow set, to show what poor calibration does).
    """
    chosen = CalibrationSet()
    for seed in split_seeds(split, max_draws):
        scan = make_scan(int(seed), "compact")
        conds = conditions_of(scan)
        if only and not set(only) <= set(conds):
            continue
        needed = any(chosen.coverage[c] < min_per_condition for c in conds)
        if needed or len(chosen.seeds) < n_scans and all(v >= min_per_condition for v in chosen.coverage.values()):
            chosen.seeds.append(int(seed))
            for c in conds:
                chosen.coverage[c] += 1
        if len(chosen.seeds) >= n_scans and (only or not chosen.missing):
            break
    return chosen


class _Reader:
    """ONNX Runtime CalibrationDataReader over encoded scans."""

    def __init__(self, seeds: Sequence[int], input_names: Sequence[str], spec: BevSpec,
                 intensity_scale: float = 1.0, z_offset_m: float = 0.0):
        self.seeds = list(seeds)
        self.intensity_scale = intensity_scale
        self.z_offset_m = z_offset_m
        self.names = list(input_names)
        self.spec = spec
        self._it: Optional[Iterator] = None

    def _feeds(self) -> Iterator[Dict[str, np.ndarray]]:
        for seed in self.seeds:
            points = make_scan(seed, "default").points
            points[:, 3] *= self.intensity_scale
            points[:, 2] += self.z_offset_m
            b = encode(points, self.spec)
            all_feeds = {"bev": b.bev, "point_cells": b.point_cells, "point_features": b.point_features}
            yield {n: all_feeds[n] for n in self.names}

    def get_next(self):
        if self._it is None:
            self._it = self._feeds()
        return next(self._it, None)

    def rewind(self):
        self._it = None


def head_nodes(model_path: str, outputs: Sequence[str]) -> List[str]:
    """Names of the nodes that produce the model's outputs (the output heads)."""
    import onnx

    model = onnx.load(model_path)
    return [n.name for n in model.graph.node if set(n.output) & set(outputs)]


def quantize_int8(model_path: str, out_path: str, calibration: CalibrationSet, input_names: Sequence[str],
                  output_names: Sequence[str], keep_float: Sequence[str] = ("heads",),
                  spec: Optional[BevSpec] = None, intensity_scale: float = 1.0,
                  z_offset_m: float = 0.0, quant_format: str = "qdq", activations: str = "s8") -> List[str]:
    """Writes a Q/DQ INT8 model; returns the nodes kept in float.

    ``intensity_scale`` and ``z_offset_m`` alter the calibration clouds, to reproduce a bad
    calibration set (a driver reporting intensity in 0..1, clouds in another frame) whose
    damage the release gates must catch. ``quant_format`` "qdq" (explicit Q/DQ pairs: what
    TensorRT builds) or "qoperator" (ONNX Runtime's fused integer operators, CPU only);
    ``activations`` "s8" or "u8" (U8S8: unsigned activations, signed weights, the pairing x86
    integer kernels without VNNI prefer).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration.seeds:
        raise ConfigError("the calibration set is empty: widen the conditions or draw more scans")
    excluded: List[str] = []
    if "heads" in keep_float:
        excluded += head_nodes(model_path, output_names)
    excluded += [k for k in keep_float if k != "heads"]
    pre = out_path + ".pre.onnx"
    quant_pre_process(model_path, pre, skip_symbolic_shape=True)
    reader = _Reader(calibration.seeds, input_names, spec or BevSpec(), intensity_scale, z_offset_m)
    quantize_static(pre, out_path, reader,
                    quant_format=QuantFormat.QOperator if quant_format == "qoperator" else QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8 if activations == "u8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8,
                    per_channel=True, nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.MinMax)
    import os

    os.remove(pre)
    return excluded
