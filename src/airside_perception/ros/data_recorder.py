"""Data recorder node: the cycles the models did not know, recorded with context as ROS bags.

Listens to the graph (the input cloud, every output, the host's and the simplex's status),
keeps the last ``ring_clouds`` clouds in memory and records an event around each trigger
(``recording.triggers``): bags in ``recordings_dir`` (``.bag.active`` while written),
``index.jsonl``, a disk quota. ``/data_recorder/mark`` records on request.

Its own process, below the graph's priority; callbacks only file messages (big ones kept as
the serialized bytes they arrived in) and the writer thread takes recordings from a bounded
queue: a recording the queue has no room for is dropped and counted on ``/diagnostics``,
never waited for.
"""

from __future__ import annotations

import io
import math
import os
import queue
import threading
import time
from typing import Any, Dict, Optional

import rospy
from nav_msgs.msg import OccupancyGrid  # noqa: F401  (registers the type for AnyMsg decoding)

from airside_perception import node_configs
from airside_perception.errors import ConfigError
from airside_perception.msg import Detection3DArray, InferenceStatus, SimplexStatus
from airside_perception.recording.events import ContextParams, Event, EventAssembler
from airside_perception.recording.store import RecordingsDir
from airside_perception.recording.triggers import RateLimiter, TriggerParams, near_field_disagreement, status_trigger
from airside_perception.ros import common
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.simplex.cycles import boxes_of
from airside_perception.srv import MarkRecording, MarkRecordingResponse
from airside_perception.stats import ERROR, OK, WARN

NODE = "data_recorder"
WRITER_NICE = 19  # the writer thread's priority: below everything else
BAG_BYTES_PER_MESSAGE = 250  # rosbag's own records per message (index, connection), for the quota's estimate
#: Topics kept as the bytes they arrived in (decoded only when written).
RAW_TOPICS = ("perception/segmentation", "perception/occupancy", "baseline/segmentation", "baseline/occupancy",
              "perception/obstacles", "perception/safety_grid",
              # the simulator's ground truth, where a simulated drive publishes it (the data loop's labeller)
              "airside_av/ground_truth/labels", "airside_av/ground_truth/objects")
TYPED_TOPICS = {"perception/detections": Detection3DArray, "baseline/obstacles": Detection3DArray,
                "inference_host/status": InferenceStatus, "simplex/status": SimplexStatus}


def decoded(msg: Any) -> Any:
    """A typed message from an AnyMsg (its connection header names the type)."""
    if not isinstance(msg, rospy.AnyMsg):
        return msg
    from roslib.message import get_message_class

    cls = get_message_class(msg._connection_header["type"])
    return cls().deserialize(msg._buff)


class DataRecorderNode:
    def __init__(self):
        common.forward_core_logging()
        try:
            self.cfg = cfg = common.private_config(node_configs.DATA_RECORDER, NODE)
            self.triggers = TriggerParams(cfg["min_interval_s"], cfg["near_field_m"], cfg["min_recording_interval_s"])
            self.context = ContextParams(cfg["context_before"], cfg["context_after"], cfg["ring_clouds"],
                                         cfg["max_event_clouds"], cfg["flush_s"])
            self.store = RecordingsDir(cfg["recordings_dir"], cfg["max_bytes"], cfg["min_free_bytes"])
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, cfg)
        for name in self.store.remove_unfinished():
            rospy.logwarn(f"{NODE}: removed the unfinished recording {name} (the recorder stopped while writing it)")
        self.limiter = RateLimiter(self.triggers)
        self.assembler = EventAssembler(self.context)
        self.lock = threading.Lock()
        self.queue: "queue.Queue[Event]" = queue.Queue(maxsize=cfg["queue_events"])
        self.counts = {"recordings": 0, "dropped": 0, "write_errors": 0, "clouds": 0}
        self.last_error, self.last_file = "", ""
        self.newest_stamp_ns: Optional[int] = None
        input_topic = "airside_av/lidar/aggregated"  # remapped by the launch file's input_topic
        self.subs = [rospy.Subscriber(input_topic, rospy.AnyMsg, self._on_cloud, queue_size=2, buff_size=2 ** 25)]
        self.subs += [rospy.Subscriber(t, rospy.AnyMsg, self._on_raw, callback_args=t, queue_size=5,
                                       buff_size=2 ** 24) for t in RAW_TOPICS]
        self.subs += [rospy.Subscriber(t, kind, self._on_typed, callback_args=t, queue_size=10)
                      for t, kind in TYPED_TOPICS.items()]
        self.input_topic = rospy.resolve_name(input_topic)
        self.srv_mark = rospy.Service("data_recorder/mark", MarkRecording, self._on_mark)
        self.writer = threading.Thread(target=self._write_loop, name="recorder-writer", daemon=True)
        self.writer.start()
        self.timer = rospy.Timer(rospy.Duration(0.25), self._on_tick)
        self.diagnostics = NodeDiagnostics(cfg["diagnostics_period_s"])
        self.diagnostics.add("recording", self._status)
        self.diagnostics.add("cpu", self.cpu)
        rospy.loginfo(f"{NODE}: recording to {self.store.path} (quota {self.store.max_bytes / 1e9:.2f} GB)")

    # ------------------------------------------------------------------ intake (callbacks: file and return)
    def _on_cloud(self, msg: rospy.AnyMsg) -> None:
        stamp = common.header_of_raw(msg._buff)[0].to_nsec()
        with self.lock:
            self.counts["clouds"] += 1
            self.newest_stamp_ns = stamp
            self.assembler.add(stamp, self.input_topic, msg, time.monotonic())
            self._hand_over()

    def _on_raw(self, msg: rospy.AnyMsg, topic: str) -> None:
        with self.lock:
            stamp = common.header_of_raw(msg._buff)[0].to_nsec()
            self.assembler.add(stamp, rospy.resolve_name(topic), msg, time.monotonic(), is_cloud=False)
            self._hand_over()

    def _on_typed(self, msg: Any, topic: str) -> None:
        stamp = msg.header.stamp.to_nsec()
        now = time.monotonic()
        with self.lock:
            self.assembler.add(stamp, rospy.resolve_name(topic), msg, now, is_cloud=False)
            fired = []
            if topic == "simplex/status":
                trigger = status_trigger(msg.active, msg.reason)
                if trigger:
                    fired.append(trigger)
            elif topic in ("perception/detections", "baseline/obstacles"):
                fired += self._disagreement(stamp, topic)
            allowed = self.limiter.allow(fired, now, self.assembler.is_recording) if fired else []
            if allowed:
                self.assembler.trigger(stamp, allowed, now)
            self._hand_over()

    def _disagreement(self, stamp: int, topic: str):
        frame = self.assembler.frame(stamp)
        other = "baseline/obstacles" if topic == "perception/detections" else "perception/detections"
        if frame is None or frame.first(rospy.resolve_name(other)) is None:
            return []
        advanced = boxes_of(frame.first(rospy.resolve_name("perception/detections")))
        baseline = boxes_of(frame.first(rospy.resolve_name("baseline/obstacles")))
        return ["near_field_disagreement"] if near_field_disagreement(advanced, baseline,
                                                                      self.triggers.near_field_m) else []

    def _on_tick(self, _event) -> None:
        with self.lock:
            self.assembler.tick(time.monotonic())
            self._hand_over()

    def _hand_over(self) -> None:
        """Ready recordings to the writer; a full queue drops them (counted), never waits."""
        for event in self.assembler.pop_ready():
            # the messages as they are now, copied under the lock: the writer never reads the ring
            event.messages = [(topic, m) for f in event.frames for topic, items in f.parts.items() for m, _ in items]
            event.info = {"clouds": sum(1 for f in event.frames if self.input_topic in f.parts),
                          "start": event.frames[0].stamp_ns / 1e9 if event.frames else event.first_trigger_ns / 1e9,
                          "end": event.frames[-1].stamp_ns / 1e9 if event.frames else event.first_trigger_ns / 1e9,
                          **_versions_and_trust(event, rospy.resolve_name("inference_host/status"))}
            try:
                self.queue.put_nowait(event)
            except queue.Full:
                self.counts["dropped"] += 1

    def _on_mark(self, req) -> MarkRecordingResponse:
        duration = float(req.duration_s)
        if not (math.isfinite(duration) and 0.0 < duration <= self.cfg["max_mark_s"]):
            return MarkRecordingResponse(False, f"duration_s {req.duration_s} must be seconds in (0, "
                                                f"{self.cfg['max_mark_s']:g}] (max_mark_s)")
        if len(req.note) > 500:
            return MarkRecordingResponse(False, f"note has {len(req.note)} characters: keep it under 500")
        with self.lock:
            if self.newest_stamp_ns is None:
                return MarkRecordingResponse(False, f"no clouds on {self.input_topic} yet: nothing to record")
            if not self.limiter.allow(["mark"], time.monotonic()):
                wait_s = self.triggers.min_interval_s["mark"]
                return MarkRecordingResponse(False, f"a mark was taken less than {wait_s:g}"
                                                    " s ago (min_interval_s.mark): try again shortly")
            self.assembler.mark(self.newest_stamp_ns, int(duration * 1e9), req.note.strip(), time.monotonic())
        return MarkRecordingResponse(True, f"recording {self.context.before} clouds before and {duration:g} s from "
                                           f"now (at most {self.context.max_event_clouds} clouds in all: "
                                           f"max_event_clouds) into {self.store.path}")

    # ------------------------------------------------------------------ writer thread
    def _write_loop(self) -> None:
        try:  # the writer yields to every other thread on the machine, the graph's first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        except (AttributeError, OSError):
            pass
        while not rospy.is_shutdown():
            try:
                event = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._write(event)
            except Exception as exc:  # a full disk or a bad message must not stop the recorder
                self.counts["write_errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                rospy.logerr(f"{NODE}: a recording failed: {self.last_error}")

    def _write(self, event: Event) -> None:
        import rosbag

        messages = [(_stamp_of(m), topic, m) for topic, m in event.messages]
        expected = sum(_size(m) + BAG_BYTES_PER_MESSAGE for _, _, m in messages) + 64 * 1024
        if not self.store.reserve(expected):
            rospy.logwarn_throttle(10, f"{NODE}: a recording of {expected / 1e6:.1f} MB does not fit (quota "
                                       f"{self.store.max_bytes / 1e6:.0f} MB, min_free_bytes): not written")
            return
        first = event.first_trigger_ns / 1e9
        path = self.store.new_path(first, event.trigger_names())
        try:
            self._write_bag(rosbag, path, messages)
        except BaseException:
            self.store.discard(path)  # a failed write leaves no file behind to eat the quota
            raise
        entry = {"stamp": round(first, 6), "triggers": event.trigger_names(), "note": event.note,
                 "triggered": [[round(s / 1e9, 6), names] for s, names in sorted(event.triggers.items())],
                 "start": round(event.info["start"], 6), "end": round(event.info["end"], 6),
                 "clouds": event.info["clouds"], "versions": event.info["versions"], "trust": event.info["trust"]}
        entry = self.store.close(path, entry)
        self.counts["recordings"] += 1
        self.last_file = entry["file"]

    @staticmethod
    def _write_bag(rosbag, path: str, messages) -> None:
        with rosbag.Bag(path, "w") as bag:
            for stamp, topic, msg in sorted(messages, key=lambda x: x[0].to_nsec()):
                if isinstance(msg, rospy.AnyMsg):  # the bytes as they arrived: no decoding, no re-encoding
                    header = msg._connection_header
                    bag.write(topic, (header["type"], msg._buff, header["md5sum"], None,
                                      _message_class(header["type"])), stamp, raw=True)
                else:
                    bag.write(topic, msg, stamp)

    # ------------------------------------------------------------------ diagnostics
    def _status(self):
        used = self.store.used_bytes()
        c = self.counts
        values = {"recordings": c["recordings"], "dropped (writer busy)": c["dropped"],
                  "refused (quota or disk)": self.store.refused, "evicted (oldest first)": self.store.evicted,
                  "write errors": c["write_errors"], "bytes used": used, "quota (bytes)": self.store.max_bytes,
                  "clouds seen": c["clouds"], "queue": self.queue.qsize(), "last file": self.last_file,
                  "recordings_dir": self.store.path}
        values.update({f"triggers seen: {t}": n for t, n in self.limiter.seen.items() if n})
        values.update({f"held back by rate limit: {t}": n for t, n in self.limiter.held_back.items() if n})
        level, message = OK, f"{c['recordings']} recordings, {used / 1e6:.0f} of {self.store.max_bytes / 1e6:.0f} MB"
        if c["dropped"] or self.store.refused:
            level, message = WARN, f"{message}; {c['dropped']} dropped (writer busy), {self.store.refused} refused"
        if c["write_errors"]:
            level, message = ERROR, f"{message}; {c['write_errors']} failed to write: {self.last_error}"
        return common.status(f"{NODE}: recording", level, message, values)

    def close(self) -> None:
        self.timer.shutdown()


def _size(msg: Any) -> int:
    if isinstance(msg, rospy.AnyMsg):
        return len(msg._buff)
    buff = io.BytesIO()  # the typed ones are small (detections, statuses)
    msg.serialize(buff)
    return buff.tell()


def _stamp_of(msg: Any) -> rospy.Time:
    if isinstance(msg, rospy.AnyMsg):
        return common.header_of_raw(msg._buff)[0]
    return msg.header.stamp


_CLASSES: Dict[str, Any] = {}


def _message_class(type_name: str):
    if type_name not in _CLASSES:
        from roslib.message import get_message_class

        _CLASSES[type_name] = get_message_class(type_name)
    return _CLASSES[type_name]


def _versions_and_trust(event: Event, status_topic: str) -> Dict[str, Dict[str, Any]]:
    """Versions and trust per task from the host's report for the first triggered cloud (or any)."""
    order = sorted(event.frames, key=lambda f: (f.stamp_ns not in event.triggers, f.stamp_ns))
    for frame in order:
        status = frame.first(status_topic)
        if status is not None:
            return {"versions": dict(zip(status.tasks, status.versions)),
                    "trust": {t: round(float(v), 4) for t, v in zip(status.tasks, status.trust)}}
    return {"versions": {}, "trust": {}}


def main() -> None:
    rospy.init_node(NODE)
    node = DataRecorderNode()
    rospy.on_shutdown(node.close)
    rospy.spin()
