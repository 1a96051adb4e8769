"""TensorRT build plans: everything about an engine build decided without TensorRT.

A plan fixes the precision flags, the dynamic-shape profile (min / opt / max), the DLA core
with GPU fallback, the workspace, the timing and calibration caches, the layer-information
dump and the cache key that names the engine. ``trtexec_command`` gives the same build as a
``trtexec`` line for the vehicle; :mod:`trt_build` applies a plan through the TensorRT API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from airside_perception.engines import cache_key
from airside_perception.engines.manifest import Manifest
from airside_perception.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
Shape = Tuple[int, ...]


@dataclass(frozen=True)
class BuildPlan:
    onnx_path: str
    engine_path: str
    precision: str
    explicit_quantization: bool  # Q/DQ nodes in the model carry the INT8 scales
    dla_core: int  # -1: GPU only
    gpu_fallback: bool
    profiles: Dict[str, Tuple[Shape, Shape, Shape]]
    workspace_mb: int
    timing_cache_path: str
    calibration_cache_path: Optional[str]
    layer_info_path: str
    key: cache_key.EngineKey
    notes: List[str] = field(default_factory=list)
    sparse_weights: bool = False  # 2:4 weights found: let TensorRT pick sparse tensor-core kernels


def _profile(manifest: Manifest, points: Tuple[int, int, int]) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    """Min / opt / max of every input; dynamic dimensions take the point counts."""
    lo, opt, hi = points
    if not lo <= opt <= hi or lo <= 0:
        raise ConfigError(f"point profile {points} must satisfy 0 < min <= opt <= max")
    out = {}
    for spec in manifest.inputs:
        def shape(n, dims=spec.shape):
            return tuple(n if isinstance(d, str) else d for d in dims)
        out[spec.name] = (shape(lo), shape(opt), shape(hi))
    return out


def make_plan(manifest: Manifest, precision: str, tensorrt_version: str, compute_capability: str,
              dla_core: int = -1, points: Tuple[int, int, int] = (30_000, 100_000, 200_000),
              workspace_mb: int = 1024, out_dir: Optional[str] = None) -> BuildPlan:
    """The build of ``manifest``'s model for one GPU / TensorRT / DLA / precision."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not one of {PRECISIONS}")
    if dla_core < -1:
        raise ConfigError(f"dla_core {dla_core}: -1 (GPU) or a DLA core index (0 or 1 on Orin)")
    if workspace_mb <= 0:
        raise ConfigError(f"workspace_mb {workspace_mb} must be positive")
    profiles = _profile(manifest, points)
    explicit = manifest.precision in ("int8", "fp8")
    if explicit and precision != manifest.precision:
        raise ConfigError(f"{manifest.directory} holds a Q/DQ {manifest.precision.upper()} model: build it with "
                          f"precision {manifest.precision}")
    if precision == "fp8" and not explicit:
        raise ConfigError("FP8 builds take an FP8 Q/DQ model: make one with 'engine_tool quantize --precision fp8'")
    if precision == "fp8" and (dla_core >= 0 or _capability(compute_capability) < (8, 9)):
        raise ConfigError(f"FP8 needs the tensor cores of compute capability 8.9 or later (Ada, Hopper) and no "
                          f"DLA; this plan is for {compute_capability}{' DLA' if dla_core >= 0 else ''}: "
                          f"build the INT8 or FP16 version there")
    key = cache_key.EngineKey(manifest.sha256, tensorrt_version, compute_capability, dla_core, precision,
                              cache_key.profile_digest(profiles))
    folder = out_dir or manifest.directory
    engine_path = os.path.join(folder, key.file_name())
    stem = engine_path[: -len(cache_key.ENGINE_SUFFIX)]
    notes = []
    if dla_core >= 0 and precision == "fp32":
        notes.append("DLA runs FP16 or INT8 only: FP32 layers fall back to the GPU")
    if dla_core >= 0 and any(isinstance(d, str) for s in manifest.inputs for d in s.shape):
        notes.append("DLA needs static shapes: layers on the dynamic point axis run on the GPU")
    calib = None if explicit or precision != "int8" else os.path.join(folder, f"{manifest.sha256[:12]}.calib")
    sparse = two_four_layers(manifest.model_path)
    if sparse:
        notes.append(f"{len(sparse)} layers hold 2:4 sparse weights: built with sparse weights enabled")
    return BuildPlan(onnx_path=manifest.model_path, engine_path=engine_path, precision=precision,
                     explicit_quantization=explicit, dla_core=dla_core, gpu_fallback=dla_core >= 0,
                     profiles=profiles, workspace_mb=workspace_mb,
                     timing_cache_path=os.path.join(folder, f"timing_trt{tensorrt_version}_sm"
                                                    f"{compute_capability.replace('.', '')}.cache"),
                     calibration_cache_path=calib, layer_info_path=stem + ".layers.json", key=key, notes=notes,
                     sparse_weights=bool(sparse))


def _capability(text: str):
    try:
        major, minor = (int(v) for v in text.split("."))
    except ValueError:
        raise ConfigError(f"compute capability '{text}' must read MAJOR.MINOR, e.g. 8.7") from None
    return major, minor


def two_four_report(onnx_path: str, min_size: int = 64) -> Dict[str, bool]:
    """Per weight initializer of a Conv / Gemm / MatMul node (at least ``min_size`` values):
    does every group of four input channels hold at most two non-zeros (the pattern of
    ``compression.sparsity``)? Linear weights export transposed for MatMul: checked both ways."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    weights = {n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1}
    report = {}
    for init in model.graph.initializer:
        if init.name not in weights:
            continue
        w = numpy_helper.to_array(init)
        if w.size < min_size or w.ndim not in (2, 4):
            continue
        report[init.name] = False
        for cand in ((w,) if w.ndim == 4 else (w, w.T)):
            g = np.moveaxis(cand, 1, -1) if cand.ndim == 4 else cand
            if g.shape[-1] % 4 == 0 and ((g.reshape(-1, 4) != 0).sum(1) <= 2).all():
                report[init.name] = True
                break
    return report


def two_four_layers(onnx_path: str, min_size: int = 64) -> List[str]:
    """The weight initializers that hold the 2:4 pattern (:func:`two_four_report`)."""
    return [name for name, ok in two_four_report(onnx_path, min_size).items() if ok]


def _shape_arg(profiles, index: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[index])}" for name, shapes in profiles.items())


def trtexec_command(plan: BuildPlan) -> List[str]:
    """The ``trtexec`` line that performs ``plan`` on the vehicle."""
    cmd = ["trtexec", f"--onnx={plan.onnx_path}", f"--saveEngine={plan.engine_path}",
           f"--memPoolSize=workspace:{plan.workspace_mb}M", f"--timingCacheFile={plan.timing_cache_path}",
           f"--exportLayerInfo={plan.layer_info_path}", "--profilingVerbosity=detailed"]
    dynamic = any(lo != hi for lo, _, hi in plan.profiles.values())
    if dynamic:
        cmd += [f"--minShapes={_shape_arg(plan.profiles, 0)}", f"--optShapes={_shape_arg(plan.profiles, 1)}",
                f"--maxShapes={_shape_arg(plan.profiles, 2)}"]
    if plan.precision in ("fp16", "int8", "fp8"):
        cmd.append("--fp16")  # INT8 / FP8 builds keep FP16 for the layers that stay in float
    if plan.precision == "int8":
        cmd.append("--int8")
        if plan.calibration_cache_path:
            cmd.append(f"--calib={plan.calibration_cache_path}")
    if plan.precision == "fp8":
        cmd.append("--fp8")
    if plan.sparse_weights:
        cmd.append("--sparsity=enable")
    if plan.dla_core >= 0:
        cmd.append(f"--useDLACore={plan.dla_core}")
        if plan.gpu_fallback:
            cmd.append("--allowGPUFallback")
    return cmd
