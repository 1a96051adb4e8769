"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers where installed."""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from airside_perception.backends.base import Backend, load_error
from airside_perception.engines.manifest import TensorSpec, signature_differences
from airside_perception.errors import ModelLoadError

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def _spec_of(arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else str(d) for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeBackend(Backend):
    """Runs an ``.onnx`` model in an ``InferenceSession``.

    ``intra_op_threads`` bounds the threads of this one engine, so that several engines in one
    process share the cores; ``use_gpu`` takes the GPU providers when ``onnxruntime-gpu`` has them;
    ``optimization`` "all" (default) or "basic": FP8 Q/DQ models need "basic", because ONNX
    Runtime's extended (QDQ) rewrites assume integer Q/DQ and compute FP8 graphs wrongly on the CPU
    (logits off by 100 where basic and unoptimised agree to FP8 rounding).
    """

    name = "onnxruntime"

    def __init__(self, model_path: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 intra_op_threads: int = 1, use_gpu: bool = True, optimization: str = "all"):
        super().__init__(model_path, inputs, outputs)
        if optimization not in ("all", "basic"):
            raise ValueError(f"optimization '{optimization}' must be all or basic")
        self.optimization = optimization
        self.intra_op_threads = intra_op_threads
        self.use_gpu = use_gpu
        self._session = None
        self.providers: List[str] = []

    def _activate(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        # Idle pool threads sleep instead of spinning: the cores are shared with the other
        # engines and nodes, and a spinning thread takes a core from them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if self.optimization == "all"
                                            else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
        available = ort.get_available_providers()
        wanted = [p for p in GPU_PROVIDERS if self.use_gpu and p in available] + ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(self.model_path, options, providers=wanted)
        except Exception as exc:
            raise load_error(self.model_path, exc, "The file is not a loadable ONNX model: re-copy it or "
                             "re-export it with 'engine_tool export'") from exc
        self.providers = list(self._session.get_providers())
        diffs = signature_differences(self.inputs, [_spec_of(a) for a in self._session.get_inputs()], "input")
        diffs += signature_differences(self.outputs, [_spec_of(a) for a in self._session.get_outputs()], "output")
        if diffs:
            self._session = None
            raise ModelLoadError(f"{self.model_path} does not match its manifest: " + "; ".join(diffs))

    def _deactivate(self) -> None:
        self._session = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        names = [t.name for t in self.outputs]
        values = self._session.run(names, dict(feeds))
        return dict(zip(names, values))


def gpu_available() -> Optional[str]:
    """The first GPU execution provider ONNX Runtime offers here, if any."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return next((p for p in GPU_PROVIDERS if p in available), None)
