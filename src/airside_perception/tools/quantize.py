"""Post-training quantization to a Q/DQ ONNX model: INT8 with ONNX Runtime's static quantizer,
FP8 (E4M3, for Hopper and Ada GPUs) with :func:`quantize_fp8`.

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


#: Largest finite FP8 E4M3 value (the "fn" variant TensorRT and ONNX use: no infinities).
FP8_E4M3_MAX = 448.0


def _to_fp8_bytes(values: np.ndarray) -> bytes:
    """float32 -> FP8 E4M3 bytes, round to nearest even (PyTorch's float8_e4m3fn cast)."""
    try:
        import torch
    except ImportError as exc:
        raise ConfigError("FP8 quantization casts with PyTorch, an offline-tool dependency: "
                          "pip install -r requirements-train.txt") from exc

    clipped = np.clip(values, -FP8_E4M3_MAX, FP8_E4M3_MAX).astype(np.float32)
    return torch.from_numpy(clipped).to(torch.float8_e4m3fn).view(torch.uint8).numpy().tobytes()


def quantize_fp8(model_path: str, out_path: str, calibration: CalibrationSet, input_names: Sequence[str],
                 output_names: Sequence[str], keep_float: Sequence[str] = ("heads",),
                 spec: Optional[BevSpec] = None) -> Dict[str, object]:
    """Writes an FP8 E4M3 Q/DQ model (opset 19) for TensorRT's FP8 build on Hopper / Ada.

    The scheme TensorRT's explicit FP8 quantization reads (and NVIDIA's ModelOpt writes): every
    Conv, Gemm and MatMul with a constant weight gets its input quantized per tensor (scale =
    calibrated absolute maximum / 448, zero point 0) and its weight stored as FP8 per output
    channel (scale = channel absolute maximum / 448). ONNX Runtime's own FP8 quantizer only
    offers a distribution-based scale that clips these networks' inputs, hence this writer.
    The calibration maxima come from running the float model in ONNX Runtime on the set.
    Returns the quantized and kept-float node names and the activation scales.
    """
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper, version_converter

    if not calibration.seeds:
        raise ConfigError("the calibration set is empty: widen the conditions or draw more scans")
    model = onnx.load(model_path)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 19:  # FP8 QuantizeLinear / DequantizeLinear need opset 19
        model = version_converter.convert_version(model, 19)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    excluded = set(head_nodes(model_path, output_names)) if "heads" in keep_float else set()
    excluded |= {k for k in keep_float if k != "heads"}
    targets = []  # (node, weight initializer name, per-channel axis of the weight)
    for node in graph.node:
        if node.name in excluded or node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        if node.input[1] not in inits:
            continue
        if node.op_type == "Gemm":
            axis = 0 if any(a.name == "transB" and a.i == 1 for a in node.attribute) else 1
        else:
            axis = 0 if node.op_type == "Conv" else 1  # MatMul B is (K, N): N output channels
        targets.append((node, node.input[1], axis))
    # calibration: the absolute maximum of every quantized node's input
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    act_names = sorted({n.input[0] for n, _, _ in targets} - known)
    probe.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in act_names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = [n.input[0] for n, _, _ in targets]
    amax = {n: 0.0 for n in wanted}
    reader = _Reader(calibration.seeds, input_names, spec or BevSpec())
    fetch = sorted(set(wanted))
    for feeds in iter(reader.get_next, None):
        for name, value in zip(fetch, session.run(fetch, feeds)):
            amax[name] = max(amax[name], float(np.nanmax(np.abs(value))) if value.size else 0.0)
    # rewrite: Q/DQ on each input, FP8 weights with a DequantizeLinear
    new_nodes, new_inits, act_scales, done_acts = [], [], {}, {}
    zero8 = helper.make_tensor("fp8_zero", TensorProto.FLOAT8E4M3FN, [], vals=b"\x00", raw=True)
    new_inits.append(zero8)
    for node, w_name, axis in targets:
        x = node.input[0]
        if x not in done_acts:
            scale = max(amax[x], 1e-12) / FP8_E4M3_MAX
            act_scales[x] = scale
            base = f"{x}_fp8"
            new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), base + "_scale"))
            new_nodes.append(helper.make_node("QuantizeLinear", [x, base + "_scale", "fp8_zero"], [base + "_q"],
                                              name=base + "_Q", saturate=1))
            new_nodes.append(helper.make_node("DequantizeLinear", [base + "_q", base + "_scale", "fp8_zero"],
                                              [base + "_dq"], name=base + "_DQ"))
            done_acts[x] = base + "_dq"
        w = numpy_helper.to_array(inits[w_name]).astype(np.float32)
        moved = np.moveaxis(w, axis, 0)
        w_amax = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
        w_scale = (np.maximum(w_amax, 1e-12) / FP8_E4M3_MAX).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = helper.make_tensor(w_name + "_fp8", TensorProto.FLOAT8E4M3FN, list(w.shape),
                               vals=_to_fp8_bytes(w / w_scale.reshape(shape)), raw=True)
        zeros = helper.make_tensor(w_name + "_fp8_zero", TensorProto.FLOAT8E4M3FN, [len(w_scale)],
                                   vals=bytes(len(w_scale)), raw=True)
        new_inits += [q, zeros, numpy_helper.from_array(w_scale, w_name + "_fp8_scale")]
        new_nodes.append(helper.make_node("DequantizeLinear", [q.name, w_name + "_fp8_scale", zeros.name],
                                          [w_name + "_fp8_dq"], name=w_name + "_fp8_DQ", axis=axis))
        node.input[0] = done_acts[x]
        node.input[1] = w_name + "_fp8_dq"
    still_used = {i for n in graph.node for i in n.input}
    kept_inits = [i for i in graph.initializer if i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + new_inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(new_nodes + nodes)  # Q/DQ of graph inputs and weights first, then the model
    _sort_topologically(graph)
    onnx.checker.check_model(model)
    onnx.save(model, out_path)
    return {"quantized": [n.name for n, _, _ in targets], "kept_float": sorted(excluded),
            "activation_scales": act_scales}


def _sort_topologically(graph) -> None:
    """Reorders ``graph.node`` so that every node follows the producers of its inputs."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ConfigError(f"cannot order the quantized graph: {pending[0].name} waits on a missing input")
        for n in ready:
            ordered.append(n)
            available.update(n.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)
