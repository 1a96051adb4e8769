"""Inference host node: clouds in, segmentation / detections / occupancy out, every cycle.

The subscriber callback only hands the message to a latest-only slot; one worker thread
converts, runs the hosted tasks concurrently, publishes, and reports on ``/diagnostics``.
Nothing a cloud contains can stop the worker.
"""

from __future__ import annotations

import os
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
from airside_perception.ota.swap import SwapController, SwapParams, is_downgrade
from airside_perception.pipelines.frame_stats import FrameStats
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.ros import common, shadow_door, trust_door
from airside_perception.ros import inference_host_status as status
from airside_perception.ros.cloud_worker import CloudWorker, IntakeParams, IntakeTimes
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.ros.inference_host_outputs import TASK_TOPICS, HostOutputs
from airside_perception.srv import LoadEngine, LoadEngineResponse, RollbackEngine, RollbackEngineResponse, ShadowEngine
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
        self.active = ActiveVersions(trust_door.state_file_of(cfg), cfg["versions"])
        self.policy, self.audit = trust_door.policy_of(cfg), trust_door.audit_log_of(cfg)
        self.trust = trust_door.TrustTask(NODE, self.policy, self.engines_root)
        self.host = PerceptionHost(self._start_engines(), cfg["preprocessing_device"])
        if self.host.preprocessing.fallback_reason:
            rospy.logwarn(f"{NODE}: {self.host.preprocessing.fallback_reason}")
        times = StageTimes(cfg["stats_window"])
        self.stats = FrameStats(self.host.tasks, times)
        self.outputs = HostOutputs(self.host, cfg["publish_markers"], times)
        self.swaps = SwapController(self.host, self.active, self.engines_root, self.budget, swap_params,
                                    on_change=self._engines_changed, trust=self.policy)
        self.swaps.down.update({c.task: "no version verifies" for c in self.startup if c.engine is None})
        self.outputs.engines(self.swaps.status())
        self.srv_load = rospy.Service("inference_host/load_engine", LoadEngine, self._on_load_engine)
        self.srv_rollback = rospy.Service("inference_host/rollback_engine", RollbackEngine, self._on_rollback)
        self.srv_shadow = rospy.Service(shadow_door.HOST_SHADOW, ShadowEngine, shadow_door.host_handler(self))
        start = time.perf_counter()
        warmed = serving.warm_up(self.host)
        rospy.loginfo(f"{NODE}: engines warmed up on {warmed} golden clouds in "
                      f"{(time.perf_counter() - start) * 1e3:.0f} ms")
        intake = IntakeParams(cfg["max_points"], cfg["max_input_age_ms"], cfg["target_frame"],
                              IntensityScale(cfg["intensity_max"], self.host.bev_spec.intensity_max),
                              cfg["max_future_ms"])
        self._diagnostics()  # before the first frame: publishing ticks the topic diagnostics
        self.worker = CloudWorker(NODE, self._process, intake, times)
        self.watch = trust_door.RevocationWatch(NODE, self.swaps, self.policy, self.audit, self._engines_changed)
        rospy.on_shutdown(self.close)
        rospy.loginfo(f"{NODE}: serving {', '.join(f'{t} {self.host.engine(t).version}' for t in self.host.tasks)}"
                      f" from {self.engines_root}")

    def _start_engines(self):
        """Every task's start-up version, verified before it is opened (door ``startup``, audited)."""
        cfg, self.startup = self.cfg, []
        for task in cfg["tasks"]:
            start = time.perf_counter()
            choice = serving.open_serving(self.engines_root, task, self.active, cfg["versions"], cfg["backend"],
                                          cfg["intra_op_threads"], self.policy)
            self.startup.append(choice)
            for version, why in choice.refused:
                trust_door.audit(self.audit, NODE, "startup", task, False, why, NODE,
                                 os.path.join(self.engines_root, task, version), start=start)
                self.trust.problems.append(f"{task} {version} refused at start-up: {why}")
            if choice.engine is None:
                self.trust.problems.append(f"{task} is down: no version verifies; the simplex drives on the baseline")
                continue
            trust_door.audit(self.audit, NODE, "startup", task, True, caller=NODE,
                             path=choice.engine.manifest.directory, start=start)
            self.trust.serving[task] = f"{choice.engine.version} ({trust_door.describe(choice.verdict)})"
        engines = [c.engine for c in self.startup if c.engine is not None]
        if not engines:
            common.fail_on_bad_config(NODE, ConfigError("no hosted task has a version that may be opened: "
                                                        + "; ".join(self.trust.problems)))
        return engines

    def _engines_changed(self) -> None:
        self.outputs.engines(self.swaps.status())
        for task in self.host.tasks:
            self.trust.serving[task] = self.host.engine(task).version

    def _process(self, header: Header, cloud: CloudArray, intake: IntakeTimes) -> None:
        frame = self.host.process(cloud.points)
        self.outputs.publish(header, cloud.points, frame, intake)
        for task, error in self.stats.record(frame):
            rospy.logerr_throttle(5.0, f"{NODE}: {task}: {error}")
        for task in self.swaps.record(frame):
            rospy.logerr(f"{NODE}: {task} rolled back automatically: {self.swaps.tasks[task].message}")
            trust_door.audit(self.audit, NODE, "rollback", task, True, caller="rollback_watch",
                             version=self.host.engine(task).version, note=self.swaps.tasks[task].message)

    def _on_load_engine(self, req) -> LoadEngineResponse:
        rospy.loginfo(f"{NODE}: swap of {req.task} to {req.version_dir} requested")
        start = time.perf_counter()
        out = self.swaps.swap(req.task, req.version_dir)
        (rospy.loginfo if out.success else rospy.logwarn)(f"{NODE}: {out.message}")
        if not trust_door.from_model_manager(req):  # the manager audits what it asks for as `swap`
            older = out.success and is_downgrade(out.active_version, out.previous_version)
            trust_door.audit(self.audit, NODE, "load", req.task, out.success, out.message, trust_door.caller_of(req),
                             req.version_dir, out.active_version if out.success else "", start,
                             f"rollback by version: {out.active_version} after {out.previous_version}" if older else "")
        return LoadEngineResponse(out.success, out.message, out.active_version, out.previous_version, out.load_ms,
                                  out.validation_ms)

    def _on_rollback(self, req) -> RollbackEngineResponse:
        start = time.perf_counter()
        out = self.swaps.rollback(req.task, "requested by an operator")
        (rospy.loginfo if out.success else rospy.logwarn)(f"{NODE}: {out.message}")
        if not trust_door.from_model_manager(req):
            trust_door.audit(self.audit, NODE, "rollback", req.task, out.success, out.message,
                             trust_door.caller_of(req), version=out.active_version, start=start)
        return RollbackEngineResponse(out.success, out.message, out.active_version)

    def _diagnostics(self) -> None:
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        for task in ([status.InputTask(self), status.PreprocessingTask(self)]
                     + [status.EngineTask(self, t) for t in self.cfg["tasks"]]
                     + [status.EndToEndTask(self), status.ShiftTask(self), status.PlatformTask(self)]):
            self.diagnostics.add_task(task)
        self.diagnostics.add_task(self.trust)
        self.diagnostics.add("cpu", self.cpu)
        self.outputs.topic_diags = {t: self.diagnostics.topic(TASK_TOPICS[t][0], 10.0, self.budget.cycle_ms / 1e3)
                                    for t in self.outputs.pubs}

    def close(self) -> None:
        self.watch.close()
        self.worker.close()
        self.host.close()


def main(argv: Optional[list] = None) -> None:
    memory.keep_frame_buffers()  # before any thread starts and the engines allocate anything
    rospy.init_node(NODE)
    InferenceHostNode()
    rospy.spin()
