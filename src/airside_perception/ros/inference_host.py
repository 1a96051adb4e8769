"""Inference host node: clouds in, segmentation / detections / occupancy out, every cycle.

The subscriber callback only hands the message to a latest-only slot; one worker thread
converts, runs the hosted tasks concurrently, publishes, and reports on ``/diagnostics``.
Nothing a cloud contains can stop the worker.
"""

from __future__ import annotations

import time
from typing import Optional

import rospy
from std_msgs.msg import Header

from airside_perception import config, memory, node_configs
from airside_perception.cloud import CloudArray
from airside_perception.engines.active import ActiveVersions
from airside_perception.errors import ConfigError
from airside_perception.frames import IntensityScale
from airside_perception.ota import serving
from airside_perception.ota.swap import SwapController, SwapParams
from airside_perception.pipelines.frame_stats import FrameStats
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.ros import common
from airside_perception.ros import inference_host_status as status
from airside_perception.ros.cloud_worker import CloudWorker, IntakeParams, IntakeTimes
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.ros.inference_host_outputs import TASK_TOPICS, HostOutputs
from airside_perception.srv import LoadEngine, LoadEngineResponse, RollbackEngine, RollbackEngineResponse
from airside_perception.stats import StageTimes

NODE = "inference_host"


class InferenceHostNode:
    def __init__(self):
        common.forward_core_logging()
        self.name = NODE
        try:
            cfg = self.cfg = common.private_config(node_configs.INFERENCE_HOST, NODE)
            self.budget = common.load_budget()
            swap_cfg = config.parse(cfg["swap"], node_configs.INFERENCE_HOST_SWAP, f"{NODE}: swap")
            swap_params = SwapParams(cfg["backend"], cfg["intra_op_threads"], **swap_cfg)
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, cfg)  # before the engines start their pools
        self.engines_root = cfg["engines_dir"] or common.package_path("engines")
        self.active = ActiveVersions(cfg["state_file"] or common.ros_home_file(
            "airside_perception", "active_engines.yaml"), cfg["versions"])
        self.host = PerceptionHost([serving.open_serving(self.engines_root, t, self.active, cfg["versions"],
                                                         cfg["backend"], cfg["intra_op_threads"])
                                    for t in cfg["tasks"]], cfg["preprocessing_device"])
        if self.host.preprocessing.fallback_reason:
            rospy.logwarn(f"{NODE}: {self.host.preprocessing.fallback_reason}")
        times = StageTimes(cfg["stats_window"])
        self.stats = FrameStats(self.host.tasks, times)
        self.outputs = HostOutputs(self.host, cfg["publish_markers"], times)
        self.swaps = SwapController(self.host, self.active, self.engines_root, self.budget, swap_params,
                                    on_change=lambda: self.outputs.engines(self.swaps.status()))
        self.outputs.engines(self.swaps.status())
        self.srv_load = rospy.Service("inference_host/load_engine", LoadEngine, self._on_load_engine)
        self.srv_rollback = rospy.Service("inference_host/rollback_engine", RollbackEngine, self._on_rollback)
        start = time.perf_counter()
        warmed = serving.warm_up(self.host)
        rospy.loginfo(f"{NODE}: engines warmed up on {warmed} golden clouds in "
                      f"{(time.perf_counter() - start) * 1e3:.0f} ms")
        intake = IntakeParams(cfg["max_points"], cfg["max_input_age_ms"], cfg["target_frame"],
                              IntensityScale(cfg["intensity_max"], self.host.bev_spec.intensity_max),
                              cfg["max_future_ms"])
        self._diagnostics()  # before the first frame: publishing ticks the topic diagnostics
        self.worker = CloudWorker(NODE, self._process, intake, times)
        rospy.on_shutdown(self.close)
        rospy.loginfo(f"{NODE}: serving {', '.join(f'{t} {self.host.engine(t).version}' for t in self.host.tasks)}"
                      f" from {self.engines_root}")

    def _process(self, header: Header, cloud: CloudArray, intake: IntakeTimes) -> None:
        frame = self.host.process(cloud.points)
        self.outputs.publish(header, cloud.points, frame, intake)
        for task, error in self.stats.record(frame):
            rospy.logerr_throttle(5.0, f"{NODE}: {task}: {error}")
        for task in self.swaps.record(frame):
            rospy.logerr(f"{NODE}: {task} rolled back automatically: {self.swaps.tasks[task].message}")

    def _on_load_engine(self, req) -> LoadEngineResponse:
        rospy.loginfo(f"{NODE}: swap of {req.task} to {req.version_dir} requested")
        out = self.swaps.swap(req.task, req.version_dir)
        (rospy.loginfo if out.success else rospy.logwarn)(f"{NODE}: {out.message}")
        return LoadEngineResponse(out.success, out.message, out.active_version, out.previous_version, out.load_ms,
                                  out.validation_ms)

    def _on_rollback(self, req) -> RollbackEngineResponse:
        out = self.swaps.rollback(req.task, "requested by an operator")
        (rospy.loginfo if out.success else rospy.logwarn)(f"{NODE}: {out.message}")
        return RollbackEngineResponse(out.success, out.message, out.active_version)

    def _diagnostics(self) -> None:
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        for task in ([status.InputTask(self), status.PreprocessingTask(self)]
                     + [status.EngineTask(self, t) for t in self.host.tasks]
                     + [status.EndToEndTask(self), status.ShiftTask(self), status.PlatformTask(self)]):
            self.diagnostics.add_task(task)
        self.diagnostics.add("cpu", self.cpu)
        self.outputs.topic_diags = {t: self.diagnostics.topic(TASK_TOPICS[t][0], 10.0, self.budget.cycle_ms / 1e3)
                                    for t in self.outputs.pubs}

    def close(self) -> None:
        self.worker.close()
        self.host.close()


def main(argv: Optional[list] = None) -> None:
    memory.keep_frame_buffers()  # before any thread starts and the engines allocate anything
    rospy.init_node(NODE)
    InferenceHostNode()
    rospy.spin()
