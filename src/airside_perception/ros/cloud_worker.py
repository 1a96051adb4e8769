"""Latest-only cloud intake shared by the nodes that eat clouds.

The subscriber callback only stores the message; one worker thread takes the newest, checks
its stamp, converts it, moves it into the target frame (one 4x4 matrix from tf2), rescales its
intensity to the engines' range, and calls the node's ``process(header, cloud, intake)`` with a
header that carries the cloud's stamp and the target frame. Anything ``process`` raises is
counted and reported, and the worker carries on with the next cloud.

Time is an input: a cloud stamped more than ``max_input_age_ms`` before its arrival is stale, one
stamped more than ``max_future_ms`` after it is from the future (a driver's clock ahead, or a
replay with the wrong clock); both are refused, counted and named in a WARN with the offset. A
ROS clock that jumps back (sim time replayed or looped) restarts the statistics windows. Every
refused cloud is announced on ``<node>/refused`` (``CloudRefused``) so that the simplex can say
why a path has no result for it. Problems are counted over the last ``WINDOW_S`` seconds (totals
beside them): a WARN clears once its cause has passed.

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
from airside_perception.msg import CloudRefused
from airside_perception.ros import common, convert
from airside_perception.ros.frames import TargetFrame, TransformMissing
from airside_perception.slot import LatestSlot
from airside_perception.stats import CLOCK_JUMP_S, OK, WARN, StageTimes, WindowedCounts

#: Relative: resolves in the node's namespace (``/airside_av/lidar/aggregated`` at the root).
INPUT_TOPIC = "airside_av/lidar/aggregated"
CLOUD_BUFFER_BYTES = 1 << 25  # 32 MiB: a 300k-point cloud with extra fields fits whole
WARN_PERIOD_S = 5.0
WINDOW_S = 10.0  # problems older than this no longer hold the input status at WARN
PROBLEMS = ("rejected", "stale", "future", "worker_errors", "no_transform", "intensity_out_of_range", "no_intensity")
#: What a cloud without an intensity field costs, measured on the KITTI scans (README, "Real sensors").
NO_INTENSITY_COST = ("the engines see intensity 0 everywhere (segmentation agreed with the with-intensity result "
                     "on 51-69 % of the points of three real KITTI scans): publish the driver's intensity field")


@dataclass(frozen=True)
class IntakeParams:
    """What the worker does to every cloud before the node sees it.

    target_frame: frame of every output (clouds in another frame are transformed with tf2);
    intensity: the driver's and the engines' intensity ranges, or None to leave intensity as is;
    max_future_ms: clouds stamped further ahead of this node's clock are refused.
    """

    max_points: int
    max_input_age_ms: float
    target_frame: str
    intensity: Optional[IntensityScale] = None
    max_future_ms: float = 100.0


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
    """Calls ``process(header, cloud, intake)`` for the newest cloud, on one worker thread;
    ``header`` has the cloud's stamp and ``params.target_frame``, ``cloud`` is in that frame."""

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
        self.problems = WindowedCounts(WINDOW_S)
        self.warned: Dict[str, float] = {}  # refusal reason -> monotonic time of its last WARN
        self.counts = {"processed": 0, "transformed": 0}
        self.clock_jumps = 0
        self._last_arrival: Optional[rospy.Time] = None
        self._arrivals: List[float] = []
        self._lock = threading.Lock()
        self._running = True
        self.pub_refused = rospy.Publisher(f"{node}/refused", CloudRefused, queue_size=5)
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
                self._refuse(item[0].header, "worker_errors", f"{type(exc).__name__}: {exc}", log=False)
                rospy.logerr_throttle(5.0, f"{self.node}: frame failed: {type(exc).__name__}: {exc}")

    def _refuse(self, header: Header, kind: str, detail: str, log: bool = True) -> None:
        self.problems.add(kind, detail)
        now = time.monotonic()
        if log and now - self.warned.get(kind, -1e9) >= WARN_PERIOD_S:  # per reason: one never hides another
            self.warned[kind] = now
            rospy.logwarn(f"{self.node}: cloud refused ({kind}): {detail}")
        try:
            self.pub_refused.publish(CloudRefused(header=Header(seq=header.seq, stamp=header.stamp,
                                                                frame_id=header.frame_id),
                                                  node=self.node, reason=kind, detail=detail))
        except rospy.ROSException:  # shutting down
            pass

    def _watch_clock(self, arrival: rospy.Time) -> None:
        if self._last_arrival is not None and (self._last_arrival - arrival).to_sec() > CLOCK_JUMP_S:
            self.clock_jumps += 1
            self.times.clear()
            rospy.logwarn(f"{self.node}: the ROS clock jumped back {(self._last_arrival - arrival).to_sec():.1f} s "
                          "(sim time replayed or looped): statistics restarted, serving on")
        self._last_arrival = arrival

    def _handle(self, msg: PointCloud2, arrival: rospy.Time) -> None:
        start = time.perf_counter()
        self._watch_clock(arrival)
        queue_ms = (rospy.Time.now() - arrival).to_sec() * 1e3
        age_ms = (arrival - msg.header.stamp).to_sec() * 1e3
        with self._lock:
            self._arrivals.append(time.monotonic())
        if age_ms > self.max_input_age_ms:
            self._refuse(msg.header, "stale", f"cloud stamped {age_ms:.0f} ms before arrival (max_input_age_ms "
                                              f"{self.max_input_age_ms:.0f}): check the driver's clock, or play "
                                              "bags with --clock and use_sim_time")
            return
        if -age_ms > self.params.max_future_ms:
            self._refuse(msg.header, "future", f"cloud stamped {-age_ms:.0f} ms after its arrival (max_future_ms "
                                               f"{self.params.max_future_ms:.0f}): the driver's clock is ahead of "
                                               "this node's; synchronise them (PTP / chrony)")
            return
        self.times.add("queue", queue_ms)
        self.times.add("input_age", age_ms)
        try:
            cloud = convert.cloud_from_msg(msg, self.max_points)
        except AirsideError as exc:
            self._refuse(msg.header, "rejected", f"cloud rejected: {exc}")
            return
        try:
            matrix = self.frames.matrix_for(msg.header)
        except TransformMissing as exc:
            self._refuse(msg.header, "no_transform", str(exc))
            return
        self._condition(msg.header, cloud, matrix)
        intake = IntakeTimes(age_ms, queue_ms, (time.perf_counter() - start) * 1e3, start)
        self.times.add("intake", intake.conditioning_ms)
        self.process(Header(seq=msg.header.seq, stamp=msg.header.stamp, frame_id=self.params.target_frame), cloud,
                     intake)
        self.counts["processed"] += 1

    def _condition(self, header: Header, cloud: CloudArray, matrix: Optional[np.ndarray]) -> None:
        """Moves ``cloud`` into the target frame and the engines' intensity range, in place."""
        start = time.perf_counter()
        if matrix is not None:
            transform_points(cloud.points, matrix)
            self.counts["transformed"] += 1
        scale = self.params.intensity
        if scale is not None and not cloud.has_intensity:
            self.problems.add("no_intensity", f"cloud without an intensity field: {NO_INTENSITY_COST}")
            rospy.logwarn_throttle(WARN_PERIOD_S, f"{self.node}: cloud without an intensity field: "
                                                  f"{NO_INTENSITY_COST}")
        elif scale is not None:
            problem = scale.check(cloud.points[:, 3])
            if problem:
                self.problems.add("intensity_out_of_range", problem)
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
        recent = self.problems.recent()
        level = OK if rate > 0 and not any(recent.get(k) for k in PROBLEMS) else WARN
        values = {"rate (Hz)": f"{rate:.1f}", "received": self.slot.received,
                  "dropped (not processed in time)": self.slot.dropped, "target frame": self.params.target_frame,
                  "clock jumps back": self.clock_jumps, **self.counts}
        for kind in PROBLEMS:
            values[f"{kind} (last {WINDOW_S:.0f} s)"] = recent.get(kind, 0)
            values[f"{kind} (total)"] = self.problems.totals.get(kind, 0)
        if self.params.intensity is not None:
            values["intensity_max"] = f"{self.params.intensity.intensity_max:g}"
        values.update(common.percentile_values("age on arrival", self.times.percentiles("input_age")))
        values.update(common.percentile_values("arrival to start of work", self.times.percentiles("queue")))
        values.update(common.percentile_values("frame and intensity", self.times.percentiles("conditioning")))
        values.update(common.percentile_values("conditioning", self.times.percentiles("intake")))
        messages = self.problems.recent_messages()
        for kind, text in messages.items():
            values[f"last {kind}"] = text
        if rate == 0:
            message = "no input"
        elif messages:
            message = f"{rate:.1f} Hz; " + "; ".join(f"{k}: {recent.get(k, 0)} in {WINDOW_S:.0f} s"
                                                     for k in messages)
        else:
            message = f"{rate:.1f} Hz"
        return common.status(f"{self.node}: input", level, message, values)

    def close(self) -> None:
        self._running = False
        self.slot.close()
        self.sub.unregister()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=2.0)
