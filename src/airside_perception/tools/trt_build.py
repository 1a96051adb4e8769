"""Applies a :class:`BuildPlan` through the TensorRT Python API (8.5+). Runs on the vehicle only.

Nothing here can execute without TensorRT; the plan it applies is unit-tested.
"""

from __future__ import annotations

import json
import os
from typing import Iterator, List, Optional

import numpy as np

from airside_perception.backends.trt_plan import BuildPlan
from airside_perception.engines import cache_key
from airside_perception.errors import ModelLoadError


def _calibrator(trt, plan: BuildPlan, batches: Iterator[dict]):
    """An entropy calibrator over ``batches`` of feeds, with a calibration cache."""
    import cupy

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self._batches = batches
            self._keep: List = []

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            feeds = next(self._batches, None)
            if feeds is None:
                return None
            self._keep = [cupy.asarray(np.ascontiguousarray(feeds[n])) for n in names]
            return [int(a.data.ptr) for a in self._keep]

        def read_calibration_cache(self):
            path = plan.calibration_cache_path
            if path and os.path.isfile(path):
                with open(path, "rb") as fh:
                    return fh.read()
            return None

        def write_calibration_cache(self, cache) -> None:
            with open(plan.calibration_cache_path, "wb") as fh:
                fh.write(bytes(cache))

    return Calibrator()


def apply_plan(plan: BuildPlan, calibration_batches: Optional[Iterator[dict]] = None) -> str:
    """Builds and writes the engine, its timing cache, layer information and sidecar."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise ModelLoadError(f"TensorRT is not installed here ({exc}): run this build on the vehicle, or use "
                             "the trtexec line the tool printed") from exc
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    with open(plan.onnx_path, "rb") as fh:
        if not parser.parse(fh.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise ModelLoadError(f"TensorRT cannot parse {plan.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if plan.precision in ("fp16", "int8", "fp8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.precision == "fp8":  # explicit FP8 Q/DQ (TensorRT 8.6+, compute capability 8.9+)
        config.set_flag(trt.BuilderFlag.FP8)
    if plan.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if not plan.explicit_quantization:
            if calibration_batches is None and not (plan.calibration_cache_path and
                                                    os.path.isfile(plan.calibration_cache_path)):
                raise ModelLoadError("implicit INT8 needs calibration batches or a calibration cache")
            config.int8_calibrator = _calibrator(trt, plan, calibration_batches or iter(()))
    if plan.sparse_weights:  # 2:4 weights (Ampere and later, Orin): sparse tensor-core tactics
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    if plan.dla_core >= 0:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in plan.profiles.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_bytes = b""
    if os.path.isfile(plan.timing_cache_path):
        with open(plan.timing_cache_path, "rb") as fh:
            cache_bytes = fh.read()
    timing_cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"TensorRT could not build {plan.onnx_path}: see the log above")
    with open(plan.engine_path, "wb") as fh:
        fh.write(serialized)
    with open(plan.timing_cache_path, "wb") as fh:
        fh.write(config.get_timing_cache().serialize())
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    inspector = engine.create_engine_inspector()
    with open(plan.layer_info_path, "w") as fh:
        fh.write(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    cache_key.write_sidecar(plan.engine_path, plan.key, {"profiles": {k: [list(s) for s in v]
                                                                      for k, v in plan.profiles.items()},
                                                         "notes": plan.notes})
    return plan.engine_path


def plan_summary(plan: BuildPlan) -> str:
    return json.dumps({"engine": plan.engine_path, "precision": plan.precision, "dla_core": plan.dla_core,
                       "profiles": {k: [list(s) for s in v] for k, v in plan.profiles.items()},
                       "key": plan.key.__dict__, "notes": plan.notes}, indent=2)
