"""Baseline node: RANSAC ground, obstacle clusters and occupancy on every cloud, CPU only."""

from __future__ import annotations

import time

import numpy as np
import rospy
from nav_msgs.msg import OccupancyGrid
from rospy.numpy_msg import numpy_msg
from std_msgs.msg import Header

from airside_perception import config, memory, node_configs
from airside_perception.baseline.ground import GroundParams
from airside_perception.baseline.pipeline import BASELINE_CLASSES, BaselineParams, run_baseline
from airside_perception.cloud import CloudArray
from airside_perception.errors import ConfigError
from airside_perception.msg import Detection3DArray, SemanticPointCloud
from airside_perception.ros import common, messages
from airside_perception.ros.cloud_worker import CloudWorker, IntakeParams, IntakeTimes
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.stats import StageTimes, budget_level

NODE = "baseline"
MAX_INPUT_AGE_MS = 1000.0


def baseline_params(cfg) -> BaselineParams:
    where = f"{NODE} parameters (config/{NODE}.yaml)"
    g = config.parse(cfg["ground"], node_configs.BASELINE_GROUND, f"{where}: ground")
    c = config.parse(cfg["clusters"], node_configs.BASELINE_CLUSTERS, f"{where}: clusters")
    o = config.parse(cfg["occupancy"], node_configs.BASELINE_OCCUPANCY, f"{where}: occupancy")
    return BaselineParams(ground=GroundParams(**g), cluster_cell_m=c["cell_m"],
                          cluster_half_extent_m=c["half_extent_m"],
                          min_height_m=c["min_height_m"], max_height_m=c["max_height_m"],
                          min_cluster_points=c["min_points"], grid_resolution_m=o["resolution_m"],
                          grid_half_extent_m=o["half_extent_m"])


class BaselineNode:
    def __init__(self):
        common.forward_core_logging()
        try:
            self.cfg = common.private_config(node_configs.BASELINE, NODE)
            self.params = baseline_params(self.cfg)
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, self.cfg)
        self.times = StageTimes(self.cfg["stats_window"])
        self.pub_seg = rospy.Publisher("baseline/segmentation", numpy_msg(SemanticPointCloud), queue_size=2)
        self.pub_obs = rospy.Publisher("baseline/obstacles", Detection3DArray, queue_size=2)
        self.pub_occ = rospy.Publisher("baseline/occupancy", numpy_msg(OccupancyGrid), queue_size=2)
        intake = IntakeParams(self.cfg["max_points"], MAX_INPUT_AGE_MS, self.cfg["target_frame"],
                              max_future_ms=self.cfg["max_future_ms"])
        self.worker = CloudWorker(NODE, self._process, intake, self.times)
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        self.diagnostics.add("input", self.worker.input_status)
        self.diagnostics.add("processing", self._processing_status)
        self.diagnostics.add("cpu", self.cpu)
        self.topic_diag = self.diagnostics.topic("baseline/obstacles", 10.0, 0.1)
        rospy.on_shutdown(self.close)

    def _process(self, header: Header, cloud: CloudArray, intake: IntakeTimes) -> None:
        result = run_baseline(cloud.points, self.params)
        publish_start = time.perf_counter()
        latency_ms = (rospy.Time.now() - header.stamp).to_sec() * 1e3
        scores = np.where(result.labels == 255, 0.0, 1.0).astype(np.float32)
        self.pub_seg.publish(messages.semantic_msg(header, result.labels, scores, BASELINE_CLASSES, "ransac",
                                                   latency_ms))
        self.pub_obs.publish(messages.detections_msg(
            header, "baseline", "ransac", result.boxes, np.zeros(len(result.boxes), np.int64),
            np.ones(len(result.boxes), np.float32), ("unknown",), latency_ms))
        self.pub_occ.publish(messages.occupancy_msg(header, result.grid, result.grid_resolution_m,
                                                    result.grid_origin_m, result.grid_origin_m))
        for stage, value in result.timings_ms.items():
            self.times.add(stage, value)
        self.times.add("publish", (time.perf_counter() - publish_start) * 1e3)
        self.times.add("end_to_end", (rospy.Time.now() - header.stamp).to_sec() * 1e3)
        self.topic_diag.tick(header.stamp)

    def _processing_status(self):
        total = self.times.percentiles("total")
        budget = self.cfg["max_processing_time_ms"]
        level = budget_level(total.p99 if total else float("nan"), budget, 1.0, 1.5)
        values = {"budget (ms)": budget}
        for label, stage in (("stamp to arrival", "input_age"), ("arrival to start of work", "queue"),
                             ("conditioning", "intake"), ("ground", "ground"), ("clusters", "clusters"),
                             ("total", "total"), ("publish", "publish"), ("end_to_end", "end_to_end")):
            values.update(common.percentile_values(label, self.times.percentiles(stage)))
        message = "no frames yet" if total is None else f"P99 {total.p99:.1f} ms of {budget:.0f} ms"
        return common.status(f"{NODE}: processing", level, message, values)

    def close(self) -> None:
        self.worker.close()


def main() -> None:
    memory.keep_frame_buffers()  # before any thread starts
    rospy.init_node(NODE)
    BaselineNode()
    rospy.spin()
