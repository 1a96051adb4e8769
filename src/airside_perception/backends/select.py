"""Picks a backend for a manifest: ``auto`` | ``onnxruntime`` | ``tensorrt``."""

from __future__ import annotations

import logging

from airside_perception.backends.base import Backend
from airside_perception.backends.onnxruntime_backend import OnnxRuntimeBackend
from airside_perception.engines import cache_key
from airside_perception.engines.manifest import Manifest
from airside_perception.errors import CapabilityError, ConfigError

LOG = logging.getLogger(__name__)
BACKENDS = ("auto", "onnxruntime", "tensorrt")


def _tensorrt_engine_for(manifest: Manifest):
    """A TensorRT engine of this version built for this GPU, or (None, why not)."""
    try:
        from airside_perception.backends.tensorrt_backend import runtime_identity

        trt_version, capability = runtime_identity()
    except ImportError as exc:
        return None, f"TensorRT is not importable ({exc})"
    engines = cache_key.matching_engines(manifest.directory, manifest.sha256, trt_version, capability)
    if not engines:
        return None, (f"no engine in {manifest.directory} built for TensorRT {trt_version} on compute "
                      f"capability {capability}: run 'engine_tool build' on this vehicle")
    return engines[0], ""


def create_backend(manifest: Manifest, preference: str, intra_op_threads: int = 1) -> Backend:
    """An inactive backend for ``manifest``; call ``activate()`` on it."""
    if preference not in BACKENDS:
        raise ConfigError(f"backend '{preference}' is not one of {BACKENDS}")
    if preference in ("auto", "tensorrt"):
        engine, why_not = _tensorrt_engine_for(manifest)
        if engine:
            from airside_perception.backends.tensorrt_backend import TensorRTBackend

            return TensorRTBackend(engine, manifest.inputs, manifest.outputs)
        if preference == "tensorrt":  # this machine lacks it: a capability, not a bad request
            raise CapabilityError(f"{manifest.task} {manifest.version}: backend 'tensorrt' asked for, but {why_not}")
        LOG.info("%s %s: ONNX Runtime (%s)", manifest.task, manifest.version, why_not)
    return OnnxRuntimeBackend(manifest.model_path, manifest.inputs, manifest.outputs, intra_op_threads,
                              optimization="basic" if manifest.precision == "fp8" else "all")
