"""The inference host's frame loop on the device: one upload, the engines on streams, one read-back.

For one cloud (host memory in, host memory out):

1. upload: the cloud copied into a pinned staging buffer and sent to the device once;
2. encode: the fused encoding kernels (their two output sizes are read back: the segmentation
   engine's input shape needs the number of encoded points);
3. each task on its own CUDA stream: its engine's ``infer_device`` on the encoded arrays
   (device pointers bound, no copy), then its decode kernels and its trust statistics on the
   engine's device outputs;
4. the input statistics of the trust monitor on the main stream meanwhile;
5. one read-back: every task's labels, scores, grid, boxes and statistics through pinned
   buffers, one synchronisation.

The results equal :meth:`TaskEngine.run`'s on the same engine outputs (labels, boxes and grid
cells exactly; scores and statistics to float rounding). A task whose launch fails (a CUDA
error, an engine that refuses its inputs) reports its error for the frame and the other tasks
go on; an error at the read-back fails every task of the frame, and :class:`DeviceFrameError`
tells the host to leave the device path.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np

from airside_perception.ops.bev import BevInput, BevSpec
from airside_perception.ops.detection import Boxes
from airside_perception.ops.occupancy import OccupancyGrid2D
from airside_perception.pipelines import trust
from airside_perception.pipelines.tasks import TaskEngine, TaskResult

LOG = logging.getLogger(__name__)
UNLABELLED = 255


class DeviceFrameError(RuntimeError):
    """The device failed the whole frame (at the read-back): the host leaves the device path."""


def supports_device(engines: Dict[str, TaskEngine]) -> bool:
    """Whether every engine takes device buffers (``infer_device``): the frame stays on the device."""
    return all(getattr(e.backend, "supports_device_buffers", False) for e in engines.values())


@dataclass
class DeviceFrame:
    """One frame's results in host memory, the encoded input (device arrays) and its parts (ms)."""

    results: Dict[str, TaskResult]
    errors: Dict[str, str]
    bev: BevInput
    input_features: Dict[str, float]
    parts: Dict[str, float] = field(default_factory=dict)
    host_bev: Optional[BevInput] = None  # only when asked for (shadow runs read it)


@dataclass
class _Launched:
    engine: TaskEngine
    arrays: Dict[str, Any]  # device arrays to read back
    finite: Dict[str, Any]  # output name -> 0-d device bool
    features: Dict[str, Any]  # name -> 0-d device value
    confidence: Any
    decoder: Any = None  # detection: the decoder holding its read-back; occupancy: the device grid


class DeviceFrameLoop:
    """Runs frames on ``device`` (:class:`ops.device.CudaDevice` on the vehicle) for one BEV grid."""

    def __init__(self, device, spec: BevSpec):
        self.device = device
        self.spec = spec
        self.encoder = device.encoder(spec)
        self._streams: Dict[str, Any] = {}
        self._decoders: Dict[Tuple[str, Any], Any] = {}
        self._pillar_geometry = None

    def _stream(self, task: str):
        if task not in self._streams:
            self._streams[task] = self.device.stream()
        return self._streams[task]

    def _decoder(self, engine: TaskEngine):
        det = engine.decode if engine.task == "detection" else None
        occ = ((engine.bev_spec.half_extent_m, engine.bev_spec.resolution_m, engine.occ_half_extent_m,
                engine.occ_threshold) if engine.task == "occupancy" else None)
        key = (engine.task, det, occ)
        if key not in self._decoders:
            self._decoders[key] = self.device.decoder(det, occ)
        return self._decoders[key]

    def run(self, points: np.ndarray, engines: Dict[str, TaskEngine], keep_input: bool = False) -> DeviceFrame:
        """points (N, 4) float32, base_link, host memory. A task's failure is that task's error in
        the frame; any other failure (upload, encode, statistics, read-back) raises
        :class:`DeviceFrameError`."""
        try:
            return self._run(points, engines, keep_input)
        except DeviceFrameError:
            raise
        except Exception as exc:  # the device itself failed: a sticky CUDA error shows up anywhere
            raise DeviceFrameError(f"the device failed the frame: {type(exc).__name__}: {exc}") from exc

    def _run(self, points: np.ndarray, engines: Dict[str, TaskEngine], keep_input: bool) -> DeviceFrame:
        d, xp = self.device, self.device.xp
        marks = d.marks()
        cpu = [("start", time.perf_counter())]  # where the issuing thread's time goes
        marks.record("start")
        with d.main:
            cloud = d.upload(points)
            marks.record("upload")
            cpu.append(("upload", time.perf_counter()))
            bev = self.encoder.encode(cloud)
            marks.record("encode")
            cpu.append(("encode", time.perf_counter()))
        launched: Dict[str, _Launched] = {}
        errors: Dict[str, str] = {}
        try:
            for task, engine in engines.items():
                stream = self._stream(task)
                stream.wait(d.main)
                try:
                    with stream:
                        launched[task] = self._launch(engine, bev, stream, marks)
                        marks.record(f"{task}.decoded", stream)
                except Exception as exc:  # this task's failure, reported; the others go on
                    errors[task] = f"{type(exc).__name__}: {exc}"
                    LOG.warning("task %s failed on the device: %s", task, errors[task])
                cpu.append((task, time.perf_counter()))
        finally:  # whatever a task queued before it failed ends before the next frame reuses the buffers
            for task in engines:
                if task in self._streams:
                    d.main.wait(self._streams[task])
        with d.main:
            stats = trust.input_features_on_device(bev, self.spec, xp, self._geometry())
            cpu.append(("input_statistics", time.perf_counter()))
            arrays = {"input": xp.stack([xp.asarray(v, dtype=xp.float64) for v in stats.values()])}
            for task, item in launched.items():
                arrays.update({f"{task}.{k}": v for k, v in item.arrays.items()})
                scalars = [item.confidence, *item.features.values(), *item.finite.values()]
                arrays[f"{task}.scalars"] = xp.stack([xp.asarray(v, dtype=xp.float64) for v in scalars])
            if keep_input:
                arrays.update({"bev.bev": bev.bev, "bev.kept": bev.kept, "bev.point_cells": bev.point_cells,
                               "bev.point_features": bev.point_features})
            cpu.append(("gather", time.perf_counter()))
            try:
                host = d.read_back(arrays, lambda: marks.record("end"))
            except Exception as exc:
                raise DeviceFrameError(f"the device failed the frame at the read-back: {type(exc).__name__}: {exc}") \
                    from exc
        cpu.append(("read_back", time.perf_counter()))
        frame = DeviceFrame({}, errors, bev, dict(zip(stats, (float(v) for v in host["input"]))))
        frame.parts = self._parts(marks, launched)
        frame.parts.update({f"cpu.{name}_ms": (t - cpu[k][1]) * 1e3 for k, (name, t) in enumerate(cpu[1:])})
        for task, item in launched.items():
            self._finish(task, item, host, frame)
        if keep_input:
            frame.host_bev = BevInput(host["bev.bev"], host["bev.kept"], host["bev.point_cells"],
                                      host["bev.point_features"], bev.n_input, bev.overflow_points,
                                      bev.overflow_pillars)
        return frame

    def _geometry(self):
        """The pillar centres and the ground ring on the device, uploaded once."""
        if self._pillar_geometry is None:
            self._pillar_geometry = tuple(self.device.xp.asarray(a) for a in trust.pillar_geometry(self.spec))
        return self._pillar_geometry

    def _launch(self, engine: TaskEngine, bev: BevInput, stream, marks) -> _Launched:
        xp, task = self.device.xp, engine.task
        decoder = self._decoder(engine)
        if task == "segmentation":
            n_classes = len(engine.manifest.class_names)
            if len(bev.kept) == 0:
                outputs = {"point_logits": xp.zeros((0, n_classes), xp.float32)}
            else:
                outputs = engine.backend.infer_device(engine.feeds(bev), stream_handle=stream.ptr)
        else:
            outputs = engine.backend.infer_device(engine.feeds(bev), stream_handle=stream.ptr)
        marks.record(f"{task}.inferred", stream)
        finite = {name: xp.isfinite(v).all() for name, v in outputs.items() if v.dtype.kind == "f"}
        scalar = _keep
        if task == "segmentation":
            logits = outputs["point_logits"]
            labels, scores = decoder.segmentation(logits, bev.kept, bev.n_input)
            kept_scores = scores[bev.kept]
            confidence = kept_scores.mean() if len(kept_scores) else xp.float64(1.0)
            features = trust.segmentation_features(logits.max(axis=1) if len(logits) else logits[:, 0],
                                                   kept_scores, scalar=scalar)
            return _Launched(engine, {"labels": labels, "scores": scores}, finite, features, confidence)
        if task == "detection":
            heat = outputs["heatmap"]
            p = 1.0 / (1.0 + xp.exp(-heat))
            peaks = xp.sort(heat.reshape(-1))[-trust.DETECTION_PEAKS:]
            features = trust.cell_features("det", p.max(axis=1), peaks, scalar=scalar)
            decoder.detection_launch(heat, outputs["regression"])
            return _Launched(engine, {}, finite, features, xp.maximum(p, 1 - p).mean(), decoder)
        grid = decoder.occupancy(outputs["occupancy_logits"])
        p = grid.probability
        features = trust.cell_features("occ", p, scalar=scalar)
        return _Launched(engine, {"cells": grid.cells, "probability": p}, finite, features,
                         xp.maximum(p, 1 - p).mean(), grid)

    def _finish(self, task: str, item: _Launched, host: Dict[str, np.ndarray], frame: DeviceFrame) -> None:
        scalars = host[f"{task}.scalars"]
        n_features = len(item.features)
        finite = dict(zip(item.finite, scalars[1 + n_features:]))
        bad = [name for name, ok in finite.items() if not ok]
        if bad:
            m = item.engine.manifest
            frame.errors[task] = f"{m.task} {m.version}: output '{bad[0]}' has non-finite values"
            return
        features = {k: float(v) for k, v in zip(item.features, scalars[1:1 + n_features])}
        fields: Dict[str, Any] = {"confidence": float(scalars[0]), "features": features}
        if task == "segmentation":
            fields.update(labels=host[f"{task}.labels"], scores=host[f"{task}.scores"])
        elif task == "detection":
            boxes: Boxes = item.decoder.detection_collect()
            fields["boxes"] = boxes
        else:
            grid = item.decoder  # the device grid: its geometry, host floats
            fields["grid"] = OccupancyGrid2D(host[f"{task}.cells"], host[f"{task}.probability"], grid.resolution_m,
                                             grid.origin_x_m, grid.origin_y_m)
        inference_ms = frame.parts.get(f"{task}.inference_ms", 0.0)
        frame.results[task] = TaskResult(task, item.engine.version, inference_ms=inference_ms,
                                         postprocess_ms=frame.parts.get(f"{task}.decode_ms", 0.0), **fields)

    @staticmethod
    def _parts(marks, launched: Dict[str, _Launched]) -> Dict[str, float]:
        parts = {"upload_ms": marks.elapsed_ms("start", "upload"), "encode_ms": marks.elapsed_ms("upload", "encode")}
        for task in launched:
            parts[f"{task}.inference_ms"] = marks.elapsed_ms("encode", f"{task}.inferred")
            parts[f"{task}.decode_ms"] = marks.elapsed_ms(f"{task}.inferred", f"{task}.decoded")
        last = max((marks.elapsed_ms("start", f"{t}.decoded") for t in launched), default=parts["upload_ms"]
                   + parts["encode_ms"])
        parts["read_back_ms"] = max(marks.elapsed_ms("start", "end") - last, 0.0)
        parts["device_total_ms"] = marks.elapsed_ms("start", "end")
        return parts


def _keep(value):
    return value
