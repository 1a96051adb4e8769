"""Latest-only cloud intake shared by the nodes that eat clouds.

The subscriber callback only stores the message; one worker thread takes the newest, checks
its age, converts it, moves it into the target frame (one 4x4 matrix from tf2), rescales its
intensity to the engines' range, and calls the node's ``process(header, cloud)`` with a header
that carries the cloud's stamp and the target frame. Anything ``process`` raises is counted
and reported, and the worker carries on with the next cloud.

The first hops of each cloud's time are measured here and handed to ``process`` as
``IntakeTimes``: stamp -> arrival (transport), arrival -> start of work (queueing behind the
previous cloud) and conditioning (reading the buffer, the frame transform, the intensity scale).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import numpy as np
import rospy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from airside_perception.cloud import CloudArray
from airside_perception.errors import AirsideError
from airside_perception.frames import IntensityScale, transform_points
from airside_perception.ros import common, convert
from airside_perception.ros.frames import TargetFrame, TransformMissing
from airside_perception.slot import LatestSlot
from airside_perception.stats import OK, WARN, StageTimes

INPUT_TOPIC = "/airside_av/lidar/aggregated"
CLOUD_BUFFER_BYTES = 1 << 25  # 32 MiB: a 300k-point cloud with extra fields fits whole
WARN_PERIOD_S = 5.0


@dataclass(frozen=True)
class IntakeParams:
    """What the worker does to every cloud before the node sees it.

    target_frame: frame of every output (clouds in another frame are transformed with tf2);
    intensity: the driver's and the engines' intensity ranges, or None to leave intensity as is.
    """

    max_points: int
    max_input_age_ms: float
    target_frame: str
    intensity: Optional[IntensityScale] = None


@dataclass(frozen=True)
class IntakeTimes:
    """The first hops of one cloud, milliseconds: ``arrival_ms`` stamp -> callback, ``queue_ms``
    callback -> start of work, ``conditioning_ms`` conversion, transform and intensity scale;
    ``start`` the ``time.perf_counter()`` at which work began."""

    arrival_ms: float
    queue_ms: float
    conditioning_ms: float
    start: float


class CloudWorker:
    """Calls ``process(header, cloud)`` for the newest cloud, on one worker thread; ``header``
    has the cloud's stamp and ``params.target_frame``, ``cloud`` is in that frame."""

    def __init__(self, node: str, process: Callable[[Header, CloudArray, IntakeTimes], None], params: IntakeParams,
                 times: StageTimes):
        self.node = node
        self.process = process
        self.params = params
        self.max_points = params.max_points
        self.max_input_age_ms = params.max_input_age_ms
        self.times = times
        self.frames = TargetFrame(params.target_frame)
        self.slot = LatestSlot()
        self.counts: Dict[str, int] = {"processed": 0, "rejected": 0, "stale": 0, "worker_errors": 0,
                                       "no_transform": 0, "transformed": 0, "intensity_out_of_range": 0}
        self.last_problem = ""
        self.intensity_problem = ""
        self._arrivals: List[float] = []
        self._lock = threading.Lock()
        self._running = True
        self.thread = threading.Thread(target=self._work, name=f"{node}_worker", daemon=True)
        self.thread.start()
        self.sub = rospy.Subscriber(INPUT_TOPIC, PointCloud2, self._on_cloud, queue_size=1,
                                    buff_size=CLOUD_BUFFER_BYTES, tcp_nodelay=True)

    def _on_cloud(self, msg: PointCloud2) -> None:
        self.slot.put((msg, rospy.Time.now()))

    def _work(self) -> None:
        while self._running and not rospy.is_shutdown():
            item = self.slot.take(timeout_s=0.5)
            if item is None:
                continue
            try:
                self._handle(*item)
            except Exception as exc:  # keep serving whatever happens; report it
                self.counts["worker_errors"] += 1
                self.last_problem = f"{type(exc).__name__}: {exc}"
                rospy.logerr_throttle(5.0, f"{self.node}: frame failed: {self.last_problem}")

    def _handle(self, msg: PointCloud2, arrival: rospy.Time) -> None:
        start = time.perf_counter()
        queue_ms = (rospy.Time.now() - arrival).to_sec() * 1e3
        self.times.add("queue", queue_ms)
        age_ms = (arrival - msg.header.stamp).to_sec() * 1e3
        self.times.add("input_age", age_ms)
        with self._lock:
            self._arrivals.append(time.monotonic())
        if age_ms > self.max_input_age_ms:
            self.counts["stale"] += 1
            self.last_problem = (f"cloud stamped {age_ms:.0f} ms before arrival (max_input_age_ms "
                                 f"{self.max_input_age_ms:.0f}): check the driver's clock, or play bags "
                                 "with --clock and use_sim_time")
            return
        try:
            cloud = convert.cloud_from_msg(msg, self.max_points)
        except AirsideError as exc:
            self.counts["rejected"] += 1
            self.last_problem = f"cloud rejected: {exc}"
            rospy.logwarn_throttle(5.0, f"{self.node}: cloud rejected: {exc}")
            return
        try:
            matrix = self.frames.matrix_for(msg.header)
        except TransformMissing as exc:
            self.counts["no_transform"] += 1
            self.last_problem = f"cloud dropped: {exc}"
            rospy.logwarn_throttle(WARN_PERIOD_S, f"{self.node}: cloud dropped: {exc}")
            return
        self._condition(cloud, matrix)
        intake = IntakeTimes(age_ms, queue_ms, (time.perf_counter() - start) * 1e3, start)
        self.times.add("intake", intake.conditioning_ms)
        self.process(Header(seq=msg.header.seq, stamp=msg.header.stamp, frame_id=self.params.target_frame), cloud,
                     intake)
        self.counts["processed"] += 1

    def _condition(self, cloud: CloudArray, matrix: Optional[np.ndarray]) -> None:
        """Moves ``cloud`` into the target frame and the engines' intensity range, in place."""
        start = time.perf_counter()
        if matrix is not None:
            transform_points(cloud.points, matrix)
            self.counts["transformed"] += 1
        scale = self.params.intensity
        if scale is not None and cloud.has_intensity:
            problem = scale.check(cloud.points[:, 3])
            if problem:
                self.counts["intensity_out_of_range"] += 1
                self.intensity_problem = problem
                rospy.logwarn_throttle(WARN_PERIOD_S, f"{self.node}: {problem}")
            scale.apply(cloud.points)
        self.times.add("conditioning", (time.perf_counter() - start) * 1e3)

    def rate_hz(self, window_s: float = 5.0) -> float:
        now = time.monotonic()
        with self._lock:
            self._arrivals = [t for t in self._arrivals if now - t < window_s]
            return len(self._arrivals) / window_s

    def input_status(self):
        rate = self.rate_hz()
        level = OK if rate > 0 else WARN
        if any(self.counts[k] for k in ("rejected", "stale", "worker_errors", "no_transform",
                                         "intensity_out_of_range")):
            level = WARN
        values = {"rate (Hz)": f"{rate:.1f}", "received": self.slot.received,
                  "dropped (not processed in time)": self.slot.dropped, "target frame": self.params.target_frame,
                  **self.counts}
        if self.params.intensity is not None:
            values["intensity_max"] = f"{self.params.intensity.intensity_max:g}"
        values.update(common.percentile_values("age on arrival", self.times.percentiles("input_age")))
        values.update(common.percentile_values("arrival to start of work", self.times.percentiles("queue")))
        values.update(common.percentile_values("frame and intensity", self.times.percentiles("conditioning")))
        values.update(common.percentile_values("conditioning", self.times.percentiles("intake")))
        if self.last_problem:
            values["last problem"] = self.last_problem
        if self.intensity_problem:
            values["intensity"] = self.intensity_problem
        return common.status(f"{self.node}: input", level, "no input" if rate == 0 else f"{rate:.1f} Hz", values)

    def close(self) -> None:
        self._running = False
        self.slot.close()
        self.sub.unregister()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=2.0)
