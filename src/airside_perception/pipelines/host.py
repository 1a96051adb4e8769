"""The inference host core: one cloud in, every configured task out, preprocessing shared.

Tasks run concurrently on a thread pool (ONNX Runtime and TensorRT release the GIL while they
run). Each task's engine sits in a slot that a swap replaces between two frames.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Deque, Dict, Optional, Sequence

import numpy as np

from airside_perception.errors import AirsideError, ConfigError
from airside_perception.ops.bev import BevInput, BevSpec
from airside_perception.ops.gpu import PreprocessingDevice
from airside_perception.pipelines.device_loop import DeviceFrameError, DeviceFrameLoop, supports_device
from airside_perception.pipelines.tasks import TaskEngine, TaskResult
from airside_perception.pipelines.trust import TrustScore, input_features

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameResult:
    """Every task's result for one cloud, or its error. Times in milliseconds."""

    results: Dict[str, TaskResult]
    errors: Dict[str, str]
    preprocess_ms: float
    total_ms: float
    n_points: int
    n_encoded: int
    overflow_points: int
    versions: Dict[str, str] = field(default_factory=dict)
    input_features: Dict[str, float] = field(default_factory=dict)  # trust monitor statistics of the cloud
    trust: Dict[str, TrustScore] = field(default_factory=dict)  # per task with a calibrated monitor
    monitor_ms: float = 0.0
    parts: Dict[str, float] = field(default_factory=dict)  # device frames: upload, encode, per task, read-back
    frame_loop: str = "host"  # "device": upload, engines and decodes on the device, one read-back

    def features(self, task: str) -> Dict[str, float]:
        """Every monitor statistic of ``task`` for this cloud (input and the task's outputs)."""
        result = self.results.get(task)
        return {**self.input_features, **(result.features if result is not None else {})}


@dataclass(frozen=True)
class LatestFrame:
    """The newest frame's encoded input and results, for work beside the frames (shadow runs)."""

    number: int
    bev: Optional[BevInput]  # None for a device frame unless ``keep_host_input`` was set
    results: Dict[str, TaskResult]
    total_ms: float


class EngineSlot:
    """Holds the serving engine of one task; ``exchange`` swaps it atomically between frames."""

    def __init__(self, engine: TaskEngine):
        self._engine = engine
        self._lock = threading.Lock()

    def get(self) -> TaskEngine:
        with self._lock:
            return self._engine

    def exchange(self, engine: TaskEngine) -> TaskEngine:
        """Puts ``engine`` in service and returns the one it replaced (still loaded)."""
        with self._lock:
            old, self._engine = self._engine, engine
        return old


class PerceptionHost:
    """Runs the configured tasks on each cloud; never raises on a task's failure."""

    def __init__(self, engines: Sequence[TaskEngine], preprocessing_device: str = "cpu", frame_device=None):
        """``preprocessing_device`` ``gpu``: frames run on the device loop (``pipelines.device_loop``)
        while every serving engine takes device buffers, else the encoding alone runs there.
        ``frame_device``: the device of that loop (default: the CUDA device when ``gpu``)."""
        if not engines:
            raise ConfigError("no task configured: set 'tasks' to one or more of segmentation, detection, occupancy")
        specs = {e.task: e.bev_spec for e in engines}
        self.bev_spec: BevSpec = next(iter(specs.values()))
        for task, spec in specs.items():
            if spec != self.bev_spec:
                raise ConfigError(f"engine '{task}' needs preprocessing {spec}, the others {self.bev_spec}: "
                                  "all hosted engines must share one BEV grid")
        self.slots: Dict[str, EngineSlot] = {e.task: EngineSlot(e) for e in engines}
        self.preprocessing = PreprocessingDevice(preprocessing_device)
        self.keep_host_input = False  # device frames also read their encoded input back (shadow runs)
        self._device_loop: Optional[DeviceFrameLoop] = None
        self._device_failed = False
        self.frame_loop_reason = "preprocessing_device is cpu"
        if frame_device is None and self.preprocessing.device == "gpu":
            try:
                from airside_perception.ops.device import CudaDevice

                frame_device = CudaDevice()
            except Exception as exc:  # no CuPy or no usable device: the host path
                self.frame_loop_reason = f"no CUDA frame device ({type(exc).__name__}: {exc})"
        elif self.preprocessing.device != "gpu" and frame_device is None:
            self.frame_loop_reason = self.preprocessing.fallback_reason or "preprocessing_device is cpu"
        if frame_device is not None:
            self._device_loop = DeviceFrameLoop(frame_device, self.bev_spec)
            self.frame_loop_reason = ""
        self._pool = ThreadPoolExecutor(max_workers=len(engines), thread_name_prefix="task")
        self._idle = threading.Event()  # set between frames
        self._idle.set()
        self._frame_end = threading.Condition()
        self._frames_done = 0
        self._last_frame_end = float("-inf")  # time.monotonic()
        self._latest: Optional[LatestFrame] = None
        self._starts: Deque[float] = collections.deque(maxlen=21)  # monotonic starts of the last frames

    def wait_between_frames(self, timeout_s: float = 0.25) -> None:
        """Blocks until no frame is being processed (at most ``timeout_s``): background work such
        as a swap candidate's validation runs in the gaps between frames."""
        self._idle.wait(timeout_s)

    def wait_for_gap(self, timeout_s: float = 0.25, idle_after_s: float = 0.5) -> None:
        """Blocks until a frame has just finished, the start of the longest gap before the next
        cloud (at most ``timeout_s``); returns at once when no frame has finished for
        ``idle_after_s`` and none is running (no clouds coming: nothing to make room for).
        Background work that takes the cores, one piece per gap, goes there."""
        with self._frame_end:
            if self._idle.is_set() and time.monotonic() - self._last_frame_end > idle_after_s:
                return
            seen = self._frames_done
            self._frame_end.wait_for(lambda: self._frames_done != seen, timeout_s)

    def time_to_next_frame(self) -> Optional[float]:
        """Seconds until the next frame is expected to start (the median period of the last ones
        after the newest start), or None before enough frames."""
        starts = list(self._starts)
        if len(starts) < 5:
            return None
        period = float(np.median(np.diff(starts)))
        return starts[-1] + period - time.monotonic()

    def latest_frame(self) -> Optional[LatestFrame]:
        """The newest finished frame (its input and results; None before the first)."""
        return self._latest

    @property
    def tasks(self):
        return list(self.slots)

    def process(self, points: np.ndarray) -> FrameResult:
        """points (N, 4) float32 x, y, z, intensity, base_link (NaN rows allowed)."""
        self._idle.clear()
        self._starts.append(time.monotonic())
        try:
            return self._process(points)
        finally:
            self._idle.set()
            with self._frame_end:
                self._frames_done += 1
                self._last_frame_end = time.monotonic()
                self._frame_end.notify_all()

    @property
    def device_loop_failed(self) -> bool:
        """The device failed a frame and every later one runs on the host path."""
        return self._device_failed

    def frame_loop(self) -> str:
        """Where frames run now, in words (for diagnostics)."""
        loop = self._device_loop  # one read: the frame thread may clear it meanwhile
        if loop is not None:
            engines = {task: slot.get() for task, slot in self.slots.items()}
            if supports_device(engines):
                return f"device ({loop.device.name})"
            hosts = sorted(t for t, e in engines.items() if not getattr(e.backend, "supports_device_buffers", False))
            return f"host: {', '.join(hosts)} take host arrays only"
        return f"host: {self.frame_loop_reason}"

    def _process(self, points: np.ndarray) -> FrameResult:
        start = time.perf_counter()
        engines = {task: slot.get() for task, slot in self.slots.items()}
        if self._device_loop is not None and supports_device(engines):
            return self._process_on_device(points, engines, start)
        bev: BevInput = self.preprocessing.encode(points, self.bev_spec)
        pre_ms = (time.perf_counter() - start) * 1e3
        futures = {task: self._pool.submit(engine.run, bev) for task, engine in engines.items()}
        monitor_start = time.perf_counter()
        stats = input_features(bev, self.bev_spec)  # while the engines run: off the frame's critical path
        monitor_ms = (time.perf_counter() - monitor_start) * 1e3
        results: Dict[str, TaskResult] = {}
        errors: Dict[str, str] = {}
        for task, future in futures.items():
            try:
                results[task] = future.result()
            except AirsideError as exc:
                errors[task] = str(exc)
            except Exception as exc:  # an engine bug must not stop the other tasks
                LOG.exception("task %s failed", task)
                errors[task] = f"{type(exc).__name__}: {exc}"
        scoring_start = time.perf_counter()
        trust = {task: engines[task].monitor.score({**stats, **result.features})
                 for task, result in results.items() if engines[task].monitor is not None}
        end = time.perf_counter()
        self._latest = LatestFrame(self._frames_done + 1, bev, results, (end - start) * 1e3)
        return FrameResult(results, errors, pre_ms, (end - start) * 1e3, len(points), len(bev.kept),
                           bev.overflow_points, {t: e.version for t, e in engines.items()}, stats, trust,
                           monitor_ms + (end - scoring_start) * 1e3)

    def _process_on_device(self, points: np.ndarray, engines: Dict[str, TaskEngine], start: float) -> FrameResult:
        versions = {t: e.version for t, e in engines.items()}
        try:
            frame = self._device_loop.run(np.ascontiguousarray(points, dtype=np.float32), engines,
                                          keep_input=self.keep_host_input)
        except DeviceFrameError as exc:  # the device is gone for this process: every later frame on the host
            self._device_loop = None
            self._device_failed = True
            self.frame_loop_reason = f"{exc}; frames run on the host path since (restart the node once the GPU is " \
                                     "fixed: a sticky CUDA error leaves the context unusable)"
            LOG.error("%s", self.frame_loop_reason)
            total_ms = (time.perf_counter() - start) * 1e3
            return FrameResult({}, {t: str(exc) for t in engines}, 0.0, total_ms, len(points), 0, 0, versions,
                               frame_loop="device")
        scoring_start = time.perf_counter()
        trust = {task: engines[task].monitor.score({**frame.input_features, **result.features})
                 for task, result in frame.results.items() if engines[task].monitor is not None}
        end = time.perf_counter()
        total_ms = (end - start) * 1e3
        self._latest = LatestFrame(self._frames_done + 1, frame.host_bev, frame.results, total_ms)
        pre_ms = frame.parts["upload_ms"] + frame.parts["encode_ms"]
        return FrameResult(frame.results, frame.errors, pre_ms, total_ms, len(points), len(frame.bev.kept),
                           frame.bev.overflow_points, versions, frame.input_features, trust,
                           (end - scoring_start) * 1e3, frame.parts, "device")

    def take_down(self, task: str) -> None:
        """Stops running ``task``; its engine is released once the frame in flight is done."""
        slots = dict(self.slots)
        slot = slots.pop(task, None)
        self.slots = slots  # one reference swap: a frame reads either the old or the new set
        if slot is not None:
            self.wait_between_frames()
            slot.get().close()

    def engine(self, task: str) -> Optional[TaskEngine]:
        slot = self.slots.get(task)
        return slot.get() if slot else None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for slot in self.slots.values():
            slot.get().close()
