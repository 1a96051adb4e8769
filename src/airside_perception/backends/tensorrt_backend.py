"""TensorRT backend (8.5+ name-based I/O). Imported lazily: the package runs without TensorRT.

Device buffers and the stream come from CuPy, or from pycuda on the primary CUDA context where
a Jetson image has pycuda but no CuPy. This path cannot be executed on machines without
TensorRT; it follows the TensorRT Python API: ``deserialize_cuda_engine``,
``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_mode``, ``set_input_shape``,
``set_tensor_address`` and ``execute_async_v3``.

Two ways in: ``infer`` takes host arrays (copied in and out on the backend's stream);
``infer_device`` takes arrays already on the GPU (anything with ``__cuda_array_interface__``:
CuPy, PyTorch CUDA tensors, Numba) and binds their own device pointers, leaves the outputs on
the device as CuPy arrays and runs on the caller's stream: the GPU path's encoded cloud goes
from the encoding kernels to the engines and on to the decode kernels without a host round
trip. ``device_address`` (the checks and the pointer) runs without TensorRT;
``scripts/check_gpu_ops.py`` exercises ``infer_device`` with CuPy arrays through a stand-in
for the engine.
"""

from __future__ import annotations

import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from airside_perception.backends.base import Backend, load_error
from airside_perception.engines.manifest import TensorSpec
from airside_perception.errors import InferenceError, ModelLoadError


class _CupyMemory:
    def __init__(self):
        import cupy

        self.cp = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stream_handle = self.stream.ptr

    def to_device(self, array: np.ndarray):
        with self.stream:
            buf = self.cp.asarray(np.ascontiguousarray(array))
        return buf, buf.data.ptr

    def empty(self, shape, dtype):
        with self.stream:
            buf = self.cp.empty(shape, dtype)
        return buf, buf.data.ptr

    def to_host(self, buf) -> np.ndarray:
        return buf.get(stream=self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.stream = None


class _PycudaMemory:
    """pycuda on the device's primary context (shared with anything else in the process)."""

    def __init__(self):
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(0).retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()
        self.stream_handle = self.stream.handle

    def to_device(self, array: np.ndarray):
        host = np.ascontiguousarray(array)
        buf = self.cuda.mem_alloc(max(host.nbytes, 1))
        self.cuda.memcpy_htod_async(buf, host, self.stream)
        return (buf, host), int(buf)

    def empty(self, shape, dtype):
        host = self.cuda.pagelocked_empty(tuple(shape), dtype)
        buf = self.cuda.mem_alloc(max(host.nbytes, 1))
        return (buf, host), int(buf)

    def to_host(self, handle) -> np.ndarray:
        buf, host = handle
        self.cuda.memcpy_dtoh_async(host, buf, self.stream)
        return host

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        self.context.pop()


def _device_memory():
    try:
        return _CupyMemory()
    except ImportError:
        return _PycudaMemory()


def _contiguous_strides(shape: Sequence[int], itemsize: int) -> Tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= max(int(n), 1)
    return tuple(reversed(strides))


def device_address(name: str, array: Any, dtype, profile) -> Tuple[int, Tuple[int, ...]]:
    """(device pointer, shape) of a GPU array for the binding ``name``: checks that it is a CUDA
    array of ``dtype``, C-contiguous, with a shape inside ``profile`` = (min, opt, max)."""
    iface = getattr(array, "__cuda_array_interface__", None)
    if iface is None:
        raise InferenceError(f"input '{name}' ({type(array).__name__}) is not a GPU array: pass CuPy or PyTorch "
                             f"CUDA arrays to infer_device, host arrays to infer")
    shape = tuple(int(n) for n in iface["shape"])
    got = np.dtype(iface["typestr"])
    if got != np.dtype(dtype):
        raise InferenceError(f"input '{name}' is {got}, the engine takes {np.dtype(dtype)}")
    strides = iface.get("strides")
    if strides is not None and tuple(strides) != _contiguous_strides(shape, got.itemsize):
        raise InferenceError(f"input '{name}' is not C-contiguous (strides {list(strides)}): "
                             f"make it contiguous on the device first (cupy.ascontiguousarray)")
    _check_profile(name, shape, profile)
    return int(iface["data"][0]), shape


def _check_profile(name: str, shape: Sequence[int], profile) -> None:
    """Raises unless ``shape`` lies within the binding's optimisation profile (min, opt, max)."""
    lo, _, hi = profile
    if len(shape) != len(lo) or any(n < a or n > b for n, a, b in zip(shape, lo, hi)):
        raise InferenceError(f"input '{name}' shape {list(shape)} is outside the engine's profile "
                             f"{list(lo)}..{list(hi)}: rebuild with a wider profile")


class TensorRTBackend(Backend):
    """Runs a serialized ``.engine``; dynamic dimensions must lie within profile 0."""

    name = "tensorrt"
    supports_device_buffers = True

    def __init__(self, engine_path: str, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        super().__init__(engine_path, inputs, outputs)
        self._trt = None
        self._engine = None
        self._context = None
        self._memory = None
        # One execution context, bound and enqueued by one caller at a time: the frame loop and a
        # validation or shadow run in another thread must not rebind its addresses mid-enqueue.
        self._context_lock = threading.Lock()

    def _activate(self) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise ModelLoadError(f"TensorRT is not installed here ({exc}): use backend 'onnxruntime'") from exc
        self._trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        with open(self.model_path, "rb") as fh:
            blob = fh.read()
        self._engine = trt.Runtime(logger).deserialize_cuda_engine(blob)
        if self._engine is None:
            raise load_error(self.model_path, RuntimeError("deserialize_cuda_engine returned None"),
                             "The engine was built for another TensorRT version or GPU: rebuild it on this vehicle")
        names = {self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)}
        expected = {t.name for t in self.inputs + self.outputs}
        if names != expected:
            raise ModelLoadError(f"{self.model_path}: engine tensors {sorted(names)} differ from the manifest's "
                                 f"{sorted(expected)}: rebuild it from this version's model")
        self._context = self._engine.create_execution_context()
        self._memory = _device_memory()

    def _deactivate(self) -> None:
        if self._memory is not None:
            self._memory.close()
        self._context = None
        self._engine = None
        self._memory = None

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with self._context_lock:
            return self._infer_locked(feeds)

    def _infer_locked(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        keep_alive = []
        for spec in self.inputs:
            array = feeds[spec.name]
            _check_profile(spec.name, array.shape, self._engine.get_tensor_profile_shape(spec.name, 0))
            self._context.set_input_shape(spec.name, tuple(array.shape))
            handle, ptr = self._memory.to_device(array)
            keep_alive.append(handle)
            self._context.set_tensor_address(spec.name, ptr)
        out_handles = {}
        for spec in self.outputs:
            handle, ptr = self._memory.empty(*self._output_layout(spec.name))
            out_handles[spec.name] = handle
            self._context.set_tensor_address(spec.name, ptr)
        self._execute(self._memory.stream_handle)
        results = {name: self._memory.to_host(h) for name, h in out_handles.items()}
        self._memory.synchronize()
        return results

    def infer_device(self, feeds: Mapping[str, Any], stream_handle: Optional[int] = None) -> Dict[str, Any]:
        """Runs on GPU arrays without a host round trip; returns CuPy arrays on the device.

        The inputs' own device pointers are bound (no copy); the engine runs on the CUDA stream
        ``stream_handle`` (a ``cudaStream_t`` as an integer, 0 the legacy default stream; None: the
        backend's stream), on which the inputs must be ready;
        the outputs are ready once that stream reaches this point. Needs CuPy for the outputs.
        """
        if not self.is_active:
            raise InferenceError(f"{self.name} backend for {self.model_path} is not active: call activate() first")
        if not isinstance(self._memory, _CupyMemory):
            raise InferenceError("infer_device needs CuPy for its output arrays; this process has pycuda only")
        expected = {t.name for t in self.inputs}
        if set(feeds) != expected:
            raise InferenceError(f"feeds {sorted(feeds)} do not match the engine's inputs {sorted(expected)}")
        with self._context_lock:
            return self._infer_device_locked(feeds, stream_handle)

    def _infer_device_locked(self, feeds: Mapping[str, Any], stream_handle: Optional[int]) -> Dict[str, Any]:
        for spec in self.inputs:
            ptr, shape = device_address(spec.name, feeds[spec.name], self._trt.nptype(
                self._engine.get_tensor_dtype(spec.name)), self._engine.get_tensor_profile_shape(spec.name, 0))
            self._context.set_input_shape(spec.name, shape)
            self._context.set_tensor_address(spec.name, ptr)
        outputs = {}
        cp = self._memory.cp
        for spec in self.outputs:
            shape, dtype = self._output_layout(spec.name)
            outputs[spec.name] = cp.empty(shape, dtype)
            self._context.set_tensor_address(spec.name, outputs[spec.name].data.ptr)
        self._execute(self._memory.stream_handle if stream_handle is None else stream_handle)
        return outputs

    def _output_layout(self, name: str):
        shape = tuple(self._context.get_tensor_shape(name))
        if any(n < 0 for n in shape):
            raise InferenceError(f"output '{name}' shape {list(shape)} is not known after the inputs were set")
        return shape, self._trt.nptype(self._engine.get_tensor_dtype(name))

    def _execute(self, stream_handle: int) -> None:
        if not self._context.execute_async_v3(stream_handle):
            raise InferenceError(f"execute_async_v3 failed on {self.model_path}")


def runtime_identity():
    """(TensorRT version, compute capability "M.m") of this machine; ImportError without TensorRT."""
    import tensorrt as trt

    try:
        import cupy

        major, minor = cupy.cuda.Device(0).compute_capability[:-1], cupy.cuda.Device(0).compute_capability[-1]
    except ImportError:
        import pycuda.driver as cuda

        cuda.init()
        major, minor = (str(v) for v in cuda.Device(0).compute_capability())
    return trt.__version__, f"{major}.{minor}"
