"""Where a frame's arrays live: the device interface of the frame loop, on CUDA or on the CPU.

:class:`CudaDevice` (CuPy) is the vehicle's: one CUDA context (the current device's primary
context, shared with TensorRT), one upload of the cloud from a pinned staging buffer, one
stream per task, CUDA events for the timing, and one read-back of every result through pinned
buffers. Buffers grow with the largest cloud seen and are reused: after the first frames of
the largest size the loop allocates nothing, device or host (CuPy's pools hand back the same
blocks).

:class:`HostDevice` is the same interface over NumPy arrays in host memory (streams are no-ops,
times from ``perf_counter``). It runs the frame loop's control flow on machines without CUDA,
which is how CI tests every device branch, and it is the reference the CUDA device is checked
against.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from airside_perception.ops import bev as bev_ops
from airside_perception.ops import detection, occupancy, segmentation


class _HostStream:
    ptr = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def wait(self, other: "_HostStream") -> None:
        pass


class _HostMarks:
    """Named moments of one frame, in milliseconds from the first."""

    def __init__(self):
        self._t: Dict[str, float] = {}

    def record(self, name: str, stream: Any = None) -> None:
        self._t[name] = time.perf_counter()

    def elapsed_ms(self, start: str, end: str) -> float:
        return (self._t[end] - self._t[start]) * 1e3


class _HostDecoder:
    """The NumPy decodes with the launch / collect split of the fused decoder."""

    def __init__(self, det: Optional[detection.DecodeParams], occ: Optional[Tuple[float, float, float, float]]):
        self.det, self.occ = det, occ
        self._boxes: Optional[detection.Boxes] = None

    def segmentation(self, logits, kept, n_input: int):
        labels, scores = segmentation.softmax_max(logits)
        return segmentation.scatter_labels(kept, labels, scores, n_input)

    def detection_launch(self, heat_logits, regression) -> None:
        self._boxes = detection.decode_centerpoint(heat_logits, regression, self.det)

    def detection_collect(self) -> detection.Boxes:
        return self._boxes

    def occupancy(self, logits) -> occupancy.OccupancyGrid2D:
        return occupancy.decode_occupancy(logits, *self.occ)


class HostDevice:
    """The frame device interface in host memory (NumPy): the reference, and CI's device."""

    name = "cpu (NumPy reference)"
    xp = np

    def __init__(self):
        self.main = _HostStream()

    def stream(self) -> _HostStream:
        return _HostStream()

    def marks(self) -> _HostMarks:
        return _HostMarks()

    def upload(self, points: np.ndarray):
        return np.ascontiguousarray(points, dtype=np.float32)

    def encoder(self, spec: bev_ops.BevSpec):
        return _HostEncoder(spec)

    def decoder(self, det: Optional[detection.DecodeParams], occ: Optional[Tuple[float, float, float, float]]):
        return _HostDecoder(det, occ)

    def read_back(self, arrays: Mapping[str, Any], before_sync=None) -> Dict[str, np.ndarray]:
        out = {name: np.array(value, copy=True) for name, value in arrays.items()}
        if before_sync is not None:
            before_sync()
        return out

    def to_host(self, array) -> np.ndarray:
        return np.asarray(array)

    def memory_in_use(self) -> Dict[str, int]:
        return {}


class _HostEncoder:
    def __init__(self, spec: bev_ops.BevSpec):
        self.spec = spec

    def encode(self, points) -> bev_ops.BevInput:
        return bev_ops.encode(points, self.spec)


class _CudaMarks:
    def __init__(self, cp, main):
        self.cp, self.main = cp, main
        self._e: Dict[str, Any] = {}

    def record(self, name: str, stream: Any = None) -> None:
        event = self.cp.cuda.Event()
        event.record(stream if stream is not None else self.main)
        self._e[name] = event

    def elapsed_ms(self, start: str, end: str) -> float:
        return float(self.cp.cuda.get_elapsed_time(self._e[start], self._e[end]))


class _CudaStream:
    """A non-blocking CUDA stream; ``with`` makes it CuPy's current stream."""

    def __init__(self, cp, stream=None):
        self.cp = cp
        self.stream = stream if stream is not None else cp.cuda.Stream(non_blocking=True)
        self.ptr = self.stream.ptr

    def __enter__(self):
        self.stream.__enter__()
        return self

    def __exit__(self, *exc):
        return self.stream.__exit__(*exc)

    def wait(self, other: "_CudaStream") -> None:
        """Work queued here from now on starts after everything queued on ``other`` so far."""
        event = self.cp.cuda.Event(disable_timing=True)
        event.record(other.stream)
        self.stream.wait_event(event)

    def synchronize(self) -> None:
        self.stream.synchronize()


class CudaDevice:
    """The frame device on the current CUDA device (CuPy). Raises ``ImportError`` without CuPy and
    CuPy's CUDA errors without a usable device."""

    xp = None

    def __init__(self):
        import cupy as cp

        self.cp = self.xp = cp
        cp.zeros(1).sum()  # a real kernel launch: the context exists and works
        self.name = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
        self.main = _CudaStream(cp)
        self._staging = None  # pinned (capacity, 4) float32
        self._points = None  # device (capacity, 4) float32
        self._pinned: Dict[str, Tuple[Any, np.ndarray]] = {}  # name -> (pinned memory, its array view)

    def stream(self) -> _CudaStream:
        return _CudaStream(self.cp)

    def marks(self) -> _CudaMarks:
        return _CudaMarks(self.cp, self.main.stream)

    def _grow(self, n: int) -> None:
        if self._points is not None and len(self._points) >= n:
            return
        cp = self.cp
        capacity = max(n, 1 << 17, 2 * (len(self._points) if self._points is not None else 0))
        memory = cp.cuda.alloc_pinned_memory(capacity * 16)
        self._staging = (memory, np.frombuffer(memory, np.float32, capacity * 4).reshape(capacity, 4))
        with self.main:
            self._points = cp.empty((capacity, 4), cp.float32)

    def upload(self, points: np.ndarray):
        """(N, 4) float32 host array -> the device copy, queued on the main stream: copied into the
        pinned staging buffer, then one asynchronous host-to-device copy."""
        n = len(points)
        self._grow(n)
        self.main.synchronize()  # the staging buffer's last upload has left it
        staging = self._staging[1][:n]
        np.copyto(staging, points, casting="same_kind")
        device = self._points[:n]
        self.cp.cuda.runtime.memcpyAsync(device.data.ptr, staging.ctypes.data, n * 16,
                                         self.cp.cuda.runtime.memcpyHostToDevice, self.main.ptr)
        return device

    def encoder(self, spec: bev_ops.BevSpec):
        from airside_perception.ops.gpu_encode import FusedEncoder

        return FusedEncoder(spec, reuse_outputs=True)

    def decoder(self, det: Optional[detection.DecodeParams], occ: Optional[Tuple[float, float, float, float]]):
        from airside_perception.ops.gpu_decode import FusedDecoder

        if det is None:  # the fused decoder takes both parameter sets; the unused one is a placeholder
            det = detection.DecodeParams(0.5, 1, 0.5, 51.2, 0.8)
        if occ is None:
            occ = (51.2, 0.4, 51.2, 0.5)
        return FusedDecoder(det, *occ)

    def _pinned_view(self, name: str, shape, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        held = self._pinned.get(name)
        if held is None or held[1].nbytes < nbytes or held[1].dtype != np.dtype(dtype):
            size = max(nbytes, np.dtype(dtype).itemsize) * (2 if held is not None else 1)
            memory = self.cp.cuda.alloc_pinned_memory(size)
            held = (memory, np.frombuffer(memory, np.dtype(dtype), size // np.dtype(dtype).itemsize))
            self._pinned[name] = held
        return held[1][:int(np.prod(shape))].reshape(shape)

    def read_back(self, arrays: Mapping[str, Any], before_sync=None) -> Dict[str, np.ndarray]:
        """Every array copied to host memory in one go: asynchronous copies on the main stream into
        pinned buffers, ``before_sync()`` (e.g. the frame's last event, queued behind the copies),
        one synchronisation, then host copies the caller may keep."""
        cp = self.cp
        views: List[Tuple[str, np.ndarray]] = []
        for name, array in arrays.items():
            array = cp.ascontiguousarray(array)
            view = self._pinned_view(name, array.shape, array.dtype)
            if array.nbytes:
                cp.cuda.runtime.memcpyAsync(view.ctypes.data, array.data.ptr, array.nbytes,
                                            cp.cuda.runtime.memcpyDeviceToHost, self.main.ptr)
            views.append((name, view))
        if before_sync is not None:
            before_sync()
        self.main.synchronize()
        return {name: view.copy() for name, view in views}

    def to_host(self, array) -> np.ndarray:
        return self.cp.asnumpy(array)

    def memory_in_use(self) -> Dict[str, int]:
        """Bytes the CuPy pools hold: constant from frame to frame once the loop is warm."""
        return {"device_pool_bytes": int(self.cp.get_default_memory_pool().total_bytes()),
                "pinned_bytes": sum(int(view.nbytes) for _, view in self._pinned.values())
                + (0 if self._staging is None else int(self._staging[1].nbytes))}
