"""A stand-in for the TensorRT Python API (TensorRT cannot be installed on these machines).

It implements exactly the calls :class:`airside_perception.backends.tensorrt_backend.TensorRTBackend`
makes (``Logger``, ``Runtime.deserialize_cuda_engine``, ``num_io_tensors``, ``get_tensor_name``,
``get_tensor_dtype``, ``get_tensor_profile_shape``, ``create_execution_context``,
``set_input_shape``, ``set_tensor_address``, ``get_tensor_shape``, ``execute_async_v3``,
``nptype``) over PyTorch networks on the GPU, so the backend's real code path runs: the engine
reads its inputs at the device addresses bound with ``set_tensor_address`` and writes its
outputs to theirs, on the stream it is given (a wrong or copied address gives wrong outputs).

Like an engine built once for a shape profile, each network is captured as a CUDA graph over
the profile's largest shape (segmentation's points padded to ``capacity``; its network gathers
per point, so padding changes no real point's output); a run copies the bound inputs in,
replays the graph and copies the outputs out. ``fail_next`` makes the next ``execute_async_v3``
report failure, as TensorRT does on a CUDA error.

    sys.modules["tensorrt"] = StandInTensorRT(); stand_in.add(blob, StandInEngine(...))
"""

import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np


class StandInEngine:
    """One "engine": ``net`` with inputs ``{name: (shape, dtype)}`` (``-1``: the dynamic point
    dimension, up to ``capacity``) and outputs named in order."""

    def __init__(self, torch, net, inputs: Dict[str, Tuple[Tuple[int, ...], type]], outputs: Sequence[str],
                 capacity: int):
        self.torch, self.net = torch, net
        self.inputs, self.output_names, self.capacity = dict(inputs), list(outputs), int(capacity)
        dev = torch.device("cuda")
        self.static = {n: torch.zeros(tuple(capacity if d == -1 else d for d in shape), device=dev,
                                      dtype=torch.from_numpy(np.zeros(0, dtype)).dtype)
                       for n, (shape, dtype) in self.inputs.items()}
        self.fail_next = False
        self.cpu_s = 0.0  # time the calling thread spent in execute_async_v3 (the stand-in's own overhead)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad():
            with torch.cuda.stream(side):
                for _ in range(3):
                    self._call()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = self._call()
        self.out_dtypes = {n: np.dtype(str(t.dtype).replace("torch.", "")) for n, t in zip(self.output_names, self.out)}

    def _call(self):
        result = self.net(*self.static.values())
        return list(result) if isinstance(result, (tuple, list)) else [result]

    # ICudaEngine
    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.output_names)

    def get_tensor_name(self, i: int) -> str:
        return (list(self.inputs) + self.output_names)[i]

    def get_tensor_dtype(self, name: str):
        return self.inputs[name][1] if name in self.inputs else self.out_dtypes[name]

    def get_tensor_profile_shape(self, name: str, profile: int):
        shape = self.inputs[name][0]
        return (tuple(1 if d == -1 else d for d in shape), tuple(self.capacity // 2 if d == -1 else d for d in shape),
                tuple(self.capacity if d == -1 else d for d in shape))

    def create_execution_context(self) -> "_Context":
        return _Context(self)


class _Context:
    """IExecutionContext."""

    def __init__(self, engine: StandInEngine):
        self.e = engine
        self.shapes: Dict[str, Tuple[int, ...]] = {}
        self.bound: Dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        self.shapes[name] = tuple(int(n) for n in shape)
        return True

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.bound[name] = int(ptr)
        return True

    def _points(self) -> Optional[int]:
        for name, (shape, _) in self.e.inputs.items():
            if -1 in shape and name in self.shapes:
                return self.shapes[name][shape.index(-1)]
        return None

    def get_tensor_shape(self, name: str):
        if name in self.e.inputs:
            return self.shapes[name]
        shape = list(self.e.out[self.e.output_names.index(name)].shape)
        k = self._points()
        if k is not None and shape and shape[0] == self.e.capacity:
            shape[0] = k
        return tuple(shape)

    def _view(self, name: str, shape, dtype):
        import cupy as cp

        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        memory = cp.cuda.UnownedMemory(self.bound[name], max(nbytes, 1), owner=None)
        return self.e.torch.from_dlpack(cp.ndarray(shape, dtype, cp.cuda.MemoryPointer(memory, 0)))

    def execute_async_v3(self, stream_handle: int) -> bool:
        e = self.e
        if e.fail_next:
            e.fail_next = False
            return False
        start = time.perf_counter()
        try:
            self._execute(stream_handle)
        finally:
            e.cpu_s += time.perf_counter() - start
        return True

    def _execute(self, stream_handle: int) -> None:
        e, torch = self.e, self.e.torch
        with torch.cuda.stream(torch.cuda.ExternalStream(stream_handle)), torch.no_grad():
            for name, (shape, dtype) in e.inputs.items():
                got = self.shapes[name]
                e.static[name][:got[0]].copy_(self._view(name, got, dtype))
                if -1 in shape:
                    e.static[name][got[0]:].zero_()
            e.graph.replay()
            for name, value in zip(e.output_names, e.out):
                shape = self.get_tensor_shape(name)
                self._view(name, shape, e.out_dtypes[name]).copy_(value[:shape[0]])


class StandInTensorRT:
    """The ``tensorrt`` module's surface: engines are looked up by their file's bytes."""

    __version__ = "stand-in"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    def __init__(self):
        self.engines: Dict[bytes, StandInEngine] = {}
        stand_in = self

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, blob: bytes):
                return stand_in.engines.get(bytes(blob))

        self.Runtime = Runtime

    def add(self, blob: bytes, engine: StandInEngine) -> None:
        self.engines[bytes(blob)] = engine

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype).type
