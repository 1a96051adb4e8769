"""The inference host's publishers: one topic per hosted task, rviz views, and the per-cloud
``InferenceStatus`` report the simplex decides on (with where the cloud's time went)."""

from __future__ import annotations

import time

import rospy
from nav_msgs.msg import OccupancyGrid
from rospy.numpy_msg import numpy_msg
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from airside_perception import classes
from airside_perception.msg import Detection3DArray, InferenceStatus, ModelStatus, ModelStatusArray, SemanticPointCloud
from airside_perception.pipelines.host import FrameResult, PerceptionHost
from airside_perception.ros import markers, messages
from airside_perception.ros.cloud_worker import IntakeTimes
from airside_perception.stats import StageTimes

TASK_TOPICS = {"segmentation": ("perception/segmentation", numpy_msg(SemanticPointCloud)),
               "detection": ("perception/detections", Detection3DArray),
               "occupancy": ("perception/occupancy", numpy_msg(OccupancyGrid))}


def _age_ms(header: Header) -> float:
    return (rospy.Time.now() - header.stamp).to_sec() * 1e3


class HostOutputs:
    def __init__(self, host: PerceptionHost, publish_markers: bool, times: StageTimes):
        self.host, self.times = host, times
        # Names are relative: they resolve in the node's namespace (the contract's names at the root).
        self.pubs = {t: rospy.Publisher(topic, kind, queue_size=2) for t, (topic, kind) in TASK_TOPICS.items()
                     if t in host.tasks}
        self.pub_markers = rospy.Publisher("perception/markers", MarkerArray, queue_size=2) \
            if publish_markers and "detection" in host.tasks else None
        self.pub_seg_cloud = rospy.Publisher("perception/segmentation_cloud", PointCloud2, queue_size=1)
        self.pub_status = rospy.Publisher("inference_host/status", InferenceStatus, queue_size=5)
        self.pub_engines = rospy.Publisher("inference_host/engines", ModelStatusArray, queue_size=5, latch=True)
        self.topic_diags = {}  # task -> TopicDiagnostic, ticked on every publish

    def publish(self, in_header: Header, points, frame: FrameResult, intake: IntakeTimes) -> None:
        start = time.perf_counter()
        header = Header(stamp=in_header.stamp, frame_id=in_header.frame_id)
        seg, det, occ = (frame.results.get(t) for t in ("segmentation", "detection", "occupancy"))
        if seg is not None and "segmentation" in self.pubs:
            names = self.host.engine("segmentation").manifest.class_names
            self.pubs["segmentation"].publish(messages.semantic_msg(header, seg.labels, seg.scores, names,
                                                                    seg.version, _age_ms(header)))
            self._tick("segmentation", header)
        if det is not None and "detection" in self.pubs:
            names, b = classes.DETECTION_CLASS_NAMES, det.boxes
            self.pubs["detection"].publish(messages.detections_msg(header, "advanced", det.version, b.boxes, b.labels,
                                                                   b.scores, names, _age_ms(header)))
            self._tick("detection", header)
            if self.pub_markers:
                self.pub_markers.publish(markers.box_markers(header, "advanced", b.boxes, [names[i] for i in b.labels],
                                                             b.scores))
        if occ is not None and "occupancy" in self.pubs:
            g = occ.grid
            self.pubs["occupancy"].publish(messages.occupancy_msg(header, g.cells, g.resolution_m, g.origin_x_m,
                                                                  g.origin_y_m))
            self._tick("occupancy", header)
        latency_ms = _age_ms(header)
        self.times.add("end_to_end", latency_ms)
        publish_ms = (time.perf_counter() - start) * 1e3
        self.times.add("publish", publish_ms)
        self.pub_status.publish(self.report(header, frame, intake, latency_ms, publish_ms))
        if seg is not None and self.pub_seg_cloud.get_num_connections() > 0:  # rviz only, when watched
            names = self.host.engine("segmentation").manifest.class_names
            self.pub_seg_cloud.publish(messages.coloured_cloud(header, points, seg.labels, names))

    def _tick(self, task: str, header: Header) -> None:
        if task in self.topic_diags:
            self.topic_diags[task].tick(header.stamp)

    def report(self, header: Header, frame: FrameResult, intake: IntakeTimes, latency_ms: float,
               publish_ms: float) -> InferenceStatus:
        tasks = self.host.tasks
        trust = [frame.trust.get(t) for t in tasks]
        task_ms = [frame.results[t].inference_ms + frame.results[t].postprocess_ms if t in frame.results
                   else float("nan") for t in tasks]
        return InferenceStatus(
            header=header, tasks=tasks, versions=[frame.versions.get(t, "") for t in tasks],
            confidences=[frame.results[t].confidence if t in frame.results else 0.0 for t in tasks],
            errors=[frame.errors.get(t, "") for t in tasks], latency_ms=latency_ms,
            trust=[s.trust if s else 1.0 for s in trust], ood_scores=[s.score if s else 0.0 for s in trust],
            ood_worst=[s.worst if s else "" for s in trust], arrival_ms=intake.arrival_ms, queue_ms=intake.queue_ms,
            conditioning_ms=intake.conditioning_ms, encoding_ms=frame.preprocess_ms, task_ms=task_ms,
            publish_ms=publish_ms)

    def engines(self, statuses) -> None:
        models = [ModelStatus(task=s.task, active_version=s.active_version, fallback_version=s.fallback_version,
                              backend=s.backend, state=s.state, message=s.message) for s in statuses]
        self.pub_engines.publish(ModelStatusArray(header=Header(stamp=rospy.Time.now()), models=models))
