"""Inference host node: clouds in, segmentation / detections / occupancy out, every cycle.

The subscriber callback only hands the message to a latest-only slot; one worker thread
converts, runs the hosted tasks concurrently, publishes, and reports on ``/diagnostics``.
Nothing a cloud contains can stop the worker.
"""

from __future__ import annotations

import time
from typing import Dict, Optional

import rospy
from diagnostic_msgs.msg import KeyValue
from nav_msgs.msg import OccupancyGrid
from rospy.numpy_msg import numpy_msg
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from airside_perception import classes, config, memory, node_configs, platform_probe
from airside_perception.cloud import CloudArray
from airside_perception.engines import golden, store
from airside_perception.engines.active import ActiveVersions
from airside_perception.engines.swap import SwapController, SwapParams
from airside_perception.errors import AirsideError, ConfigError
from airside_perception.frames import IntensityScale
from airside_perception.msg import Detection3DArray, InferenceStatus, ModelStatus, ModelStatusArray, SemanticPointCloud
from airside_perception.pipelines.host import FrameResult, PerceptionHost
from airside_perception.pipelines.tasks import TaskEngine
from airside_perception.pipelines.trust import TrustScore
from airside_perception.ros import common, markers, messages
from airside_perception.ros.cloud_worker import CloudWorker, IntakeParams, IntakeTimes
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.srv import LoadEngine, LoadEngineResponse, RollbackEngine, RollbackEngineResponse
from airside_perception.stats import ERROR, OK, WARN, StageTimes, WindowedCounts, budget_level

NODE = "inference_host"
ERROR_WINDOW_S = 10.0
WARM_UP_ROUNDS = 2


class InferenceHostNode:
    def __init__(self):
        common.forward_core_logging()
        try:
            self.cfg = common.private_config(node_configs.INFERENCE_HOST, NODE)
            self.budget = common.load_budget()
            swap_cfg = config.parse(self.cfg["swap"], node_configs.INFERENCE_HOST_SWAP, f"{NODE}: swap")
            swap_params = SwapParams(self.cfg["backend"], self.cfg["intra_op_threads"], **swap_cfg)
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, self.cfg)  # before the engines start their pools
        self.engines_root = self.cfg["engines_dir"] or common.package_path("engines")
        self.active = ActiveVersions(self.cfg["state_file"] or common.ros_home_file(
            "airside_perception", "active_engines.yaml"), self.cfg["versions"])
        self.host = PerceptionHost([self._open(task) for task in self.cfg["tasks"]], self.cfg["preprocessing_device"])
        if self.host.preprocessing.fallback_reason:
            rospy.logwarn(f"{NODE}: {self.host.preprocessing.fallback_reason}")
        self.times = StageTimes(self.cfg["stats_window"])
        self.counts: Dict[str, int] = {"overflow_frames": 0, "overflow_points": 0}
        self.task_errors: Dict[str, int] = {t: 0 for t in self.host.tasks}
        self.recent_errors = WindowedCounts(ERROR_WINDOW_S)  # a failed frame long past is no longer an ERROR
        self.last_error: Dict[str, str] = {}
        self.last_trust: Dict[str, TrustScore] = {}
        self.ood_frames: Dict[str, int] = {t: 0 for t in self.host.tasks}
        self._pubs()
        self.swaps = SwapController(self.host, self.active, self.engines_root, self.budget, swap_params,
                                    on_change=self._publish_engines)
        self._publish_engines()
        self.srv_load = rospy.Service("inference_host/load_engine", LoadEngine, self._on_load_engine)
        self.srv_rollback = rospy.Service("inference_host/rollback_engine", RollbackEngine, self._on_rollback)
        self._warm_up()
        intake = IntakeParams(self.cfg["max_points"], self.cfg["max_input_age_ms"], self.cfg["target_frame"],
                              IntensityScale(self.cfg["intensity_max"], self.host.bev_spec.intensity_max),
                              self.cfg["max_future_ms"])
        self._diagnostics()  # before the first frame: publishing ticks the topic diagnostics
        self.worker = CloudWorker(NODE, self._process, intake, self.times)
        rospy.on_shutdown(self.close)
        rospy.loginfo(f"{NODE}: serving {', '.join(f'{t} {self.host.engine(t).version}' for t in self.host.tasks)}"
                      f" from {self.engines_root}")

    # ------------------------------------------------------------------ set-up
    def _open(self, task: str) -> TaskEngine:
        version = self.active.version(task)
        try:
            manifest = store.load_version(self.engines_root, task, version)
            return store.open_engine(manifest, self.cfg["backend"], self.cfg["intra_op_threads"])
        except AirsideError as exc:
            fallback = self.cfg["versions"].get(task)
            if fallback and fallback != version:
                rospy.logerr(f"{NODE}: {task} {version} cannot be loaded ({exc}); starting with {fallback}")
                manifest = store.load_version(self.engines_root, task, fallback)
                return store.open_engine(manifest, self.cfg["backend"], self.cfg["intra_op_threads"])
            raise

    def _warm_up(self) -> None:
        """Runs the golden clouds through every engine before the first real cloud, so that the
        first frames do not pay for the engines' first allocations (and supersede clouds)."""
        clouds = []
        for task in self.host.tasks:
            try:
                clouds = golden.load_golden(self.host.engine(task).manifest)
                break
            except AirsideError:
                continue
        start = time.perf_counter()
        for _ in range(WARM_UP_ROUNDS):
            for cloud in clouds:
                self.host.process(cloud)
        if clouds:
            rospy.loginfo(f"{NODE}: engines warmed up on {len(clouds)} golden clouds in "
                          f"{(time.perf_counter() - start) * 1e3:.0f} ms")

    def _pubs(self) -> None:
        tasks = self.host.tasks
        self.pub_seg = rospy.Publisher("perception/segmentation", numpy_msg(SemanticPointCloud), queue_size=2) \
            if "segmentation" in tasks else None
        self.pub_det = rospy.Publisher("perception/detections", Detection3DArray, queue_size=2) \
            if "detection" in tasks else None
        self.pub_occ = rospy.Publisher("perception/occupancy", numpy_msg(OccupancyGrid), queue_size=2) \
            if "occupancy" in tasks else None
        self.pub_markers = rospy.Publisher("perception/markers", MarkerArray, queue_size=2) \
            if self.cfg["publish_markers"] and "detection" in tasks else None
        self.pub_seg_cloud = rospy.Publisher("perception/segmentation_cloud", PointCloud2, queue_size=1)
        self.pub_status = rospy.Publisher("inference_host/status", InferenceStatus, queue_size=5)
        self.pub_engines = rospy.Publisher("inference_host/engines", ModelStatusArray, queue_size=5, latch=True)

    # ------------------------------------------------------------------ input
    def _process(self, header: Header, cloud: CloudArray, intake: IntakeTimes) -> None:
        frame = self.host.process(cloud.points)
        self._publish(header, frame, intake)
        seg = frame.results.get("segmentation")
        if seg is not None and self.pub_seg_cloud.get_num_connections() > 0:  # rviz only, when watched
            names = self.host.engine("segmentation").manifest.class_names
            self.pub_seg_cloud.publish(messages.coloured_cloud(header, cloud.points, seg.labels, names))
        self._record(frame)
        for task in self.swaps.record(frame):
            rospy.logerr(f"{NODE}: {task} rolled back automatically: {self.swaps.tasks[task].message}")

    # ------------------------------------------------------------------ engines
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

    def _publish_engines(self) -> None:
        models = [ModelStatus(task=s.task, active_version=s.active_version, fallback_version=s.fallback_version,
                              backend=s.backend, state=s.state, message=s.message) for s in self.swaps.status()]
        self.pub_engines.publish(ModelStatusArray(header=Header(stamp=rospy.Time.now()), models=models))

    # ------------------------------------------------------------------ output
    def _latency_ms(self, header: Header) -> float:
        return (rospy.Time.now() - header.stamp).to_sec() * 1e3

    def _publish(self, in_header: Header, frame: FrameResult, intake: IntakeTimes) -> None:
        publish_start = time.perf_counter()
        header = Header(stamp=in_header.stamp, frame_id=in_header.frame_id)
        seg = frame.results.get("segmentation")
        if seg is not None and self.pub_seg:
            names = self.host.engine("segmentation").manifest.class_names
            self.pub_seg.publish(messages.semantic_msg(header, seg.labels, seg.scores, names, seg.version,
                                                       self._latency_ms(header)))
            self.topic_diags["perception/segmentation"].tick(header.stamp)
        det = frame.results.get("detection")
        if det is not None and self.pub_det:
            names = classes.DETECTION_CLASS_NAMES
            b = det.boxes
            self.pub_det.publish(messages.detections_msg(header, "advanced", det.version, b.boxes, b.labels,
                                                         b.scores, names, self._latency_ms(header)))
            self.topic_diags["perception/detections"].tick(header.stamp)
            if self.pub_markers:
                self.pub_markers.publish(markers.box_markers(header, "advanced", b.boxes,
                                                             [names[i] for i in b.labels], b.scores))
        occ = frame.results.get("occupancy")
        if occ is not None and self.pub_occ:
            g = occ.grid
            self.pub_occ.publish(messages.occupancy_msg(header, g.cells, g.resolution_m, g.origin_x_m,
                                                        g.origin_y_m))
            self.topic_diags["perception/occupancy"].tick(header.stamp)
        latency_ms = self._latency_ms(header)
        self.times.add("end_to_end", latency_ms)
        publish_ms = (time.perf_counter() - publish_start) * 1e3
        self.times.add("publish", publish_ms)
        tasks = self.host.tasks
        trust = [frame.trust.get(t) for t in tasks]
        task_ms = [frame.results[t].inference_ms + frame.results[t].postprocess_ms if t in frame.results
                   else float("nan") for t in tasks]
        self.pub_status.publish(InferenceStatus(
            header=header, tasks=tasks, versions=[frame.versions.get(t, "") for t in tasks],
            confidences=[frame.results[t].confidence if t in frame.results else 0.0 for t in tasks],
            errors=[frame.errors.get(t, "") for t in tasks], latency_ms=latency_ms,
            trust=[s.trust if s else 1.0 for s in trust], ood_scores=[s.score if s else 0.0 for s in trust],
            ood_worst=[s.worst if s else "" for s in trust], arrival_ms=intake.arrival_ms, queue_ms=intake.queue_ms,
            conditioning_ms=intake.conditioning_ms, encoding_ms=frame.preprocess_ms, task_ms=task_ms,
            publish_ms=publish_ms))

    def _record(self, frame: FrameResult) -> None:
        if frame.overflow_points:
            self.counts["overflow_frames"] += 1
            self.counts["overflow_points"] += frame.overflow_points
        self.times.add("preprocessing", frame.preprocess_ms)
        self.times.add("frame", frame.total_ms)
        self.times.add("monitor", frame.monitor_ms)
        for task, score in frame.trust.items():
            self.last_trust[task] = score
            self.ood_frames[task] += score.is_out_of_distribution
        for task, result in frame.results.items():
            self.times.add(f"{task}/inference", result.inference_ms)
            self.times.add(f"{task}/postprocess", result.postprocess_ms)
            self.times.add(task, result.inference_ms + result.postprocess_ms)
        for task, error in frame.errors.items():
            self.task_errors[task] += 1
            self.last_error[task] = error
            self.recent_errors.add(task, error)
            rospy.logerr_throttle(5.0, f"{NODE}: {task}: {error}")

    # ------------------------------------------------------------------ diagnostics
    def _diagnostics(self) -> None:
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        self.diagnostics.add("input", self._input_status)
        self.diagnostics.add("preprocessing", self._preprocessing_status)
        for task in self.host.tasks:
            self.diagnostics.add(task, lambda task=task: self._task_status(task))
        self.diagnostics.add("end_to_end", self._end_to_end_status)
        self.diagnostics.add("distribution shift", self._shift_status)
        self.diagnostics.add("platform", self._platform_status)
        self.diagnostics.add("cpu", self.cpu)
        max_age_s = self.budget.cycle_ms / 1e3
        self.topic_diags = {t: self.diagnostics.topic(t, 10.0, max_age_s) for t, pub in (
            ("perception/segmentation", self.pub_seg), ("perception/detections", self.pub_det),
            ("perception/occupancy", self.pub_occ)) if pub is not None}

    def _input_status(self):
        status = self.worker.input_status()
        status.values.extend(KeyValue(f"pillar capacity {k}", str(v)) for k, v in self.counts.items())
        return status

    def _preprocessing_status(self):
        b = self.budget
        pre = self.times.percentiles("preprocessing")
        level = budget_level(pre.p99 if pre else float("nan"), b.stage("preprocessing"), b.warn_factor,
                             b.error_factor)
        device = self.host.preprocessing
        message = _budget_message(pre, b.stage("preprocessing"))
        if device.fallback_reason:
            level, message = max(level, WARN), f"{device.fallback_reason}; {message}"
        return common.status(f"{NODE}: preprocessing", level, message,
                             {**common.percentile_values("preprocessing", pre),
                              "budget (ms)": b.stage("preprocessing"), "device": device.device,
                              "requested device": device.requested})

    def _end_to_end_status(self):
        b = self.budget
        e2e = self.times.percentiles("end_to_end")
        level = budget_level(e2e.p99 if e2e else float("nan"), b.cycle_ms, b.warn_factor, b.error_factor)
        hops = {}
        for label, stage in (("stamp to arrival", "input_age"), ("arrival to start of work", "queue"),
                             ("conditioning", "intake"), ("encoding", "preprocessing"), ("all tasks", "frame"),
                             ("publish", "publish")):
            hops.update(common.percentile_values(label, self.times.percentiles(stage)))
        return common.status(f"{NODE}: end_to_end", level, _budget_message(e2e, b.cycle_ms),
                             {**common.percentile_values("stamp to publish", e2e), "budget (ms)": b.cycle_ms,
                              **hops})

    def _task_status(self, task: str):
        b = self.budget
        engine = self.host.engine(task)
        total = self.times.percentiles(task)
        level = budget_level(total.p99 if total else float("nan"), b.stage(task), b.warn_factor, b.error_factor)
        swap = self.swaps.tasks[task]
        values = {"version": engine.version, "backend": engine.backend.name, "errors": self.task_errors[task],
                  "budget (ms)": b.stage(task), "engine state": swap.state, "engine message": swap.message,
                  "fallback": swap.fallback.version if swap.fallback else ""}
        for stage in ("inference", "postprocess"):
            values.update(common.percentile_values(stage, self.times.percentiles(f"{task}/{stage}")))
        values.update(common.percentile_values("total", total))
        message = _budget_message(total, b.stage(task))
        if task in self.last_error:
            values["last error"] = self.last_error[task]
        recent = self.recent_errors.recent().get(task, 0)
        values[f"errors (last {ERROR_WINDOW_S:.0f} s)"] = recent
        if recent:
            level, message = ERROR, (f"{recent} failed frames in {ERROR_WINDOW_S:.0f} s "
                                     f"({self.task_errors[task]} in all); last: {self.last_error[task]}")
        return common.status(f"{NODE}: {task}", level, message, values)

    def _platform_status(self):
        verdict = platform_probe.assess(platform_probe.probe("/"), self.cfg["expected_power_mode"])
        return common.status(f"{NODE}: platform", verdict.level, verdict.message, verdict.values)

    def _shift_status(self):
        """The distribution-shift monitor: trust of the last cloud per task, frames flagged."""
        values = {"monitor time": common.percentile_values("monitor", self.times.percentiles("monitor"))}
        values = dict(values.pop("monitor time"))
        flagged = []
        for task in self.host.tasks:
            score = self.last_trust.get(task)
            if self.host.engine(task).monitor is None:
                values[f"{task} trust"] = "no monitor in the manifest (engine_tool calibrate-monitor)"
                continue
            if score is None:
                continue
            values[f"{task} trust"] = f"{score.trust:.2f} (score {score.score:.2f}, worst {score.worst or '-'})"
            values[f"{task} frames out of distribution"] = self.ood_frames[task]
            if score.is_out_of_distribution:
                flagged.append(f"{task} ({score.worst})")
        level = WARN if flagged else OK
        message = ("last cloud out of distribution: " + ", ".join(flagged)) if flagged else "inputs look like training"
        return common.status(f"{NODE}: distribution shift", level, message, values)

    def close(self) -> None:
        self.worker.close()
        self.host.close()


def _budget_message(p, budget_ms: float) -> str:
    if p is None:
        return "no frames yet"
    return f"P99 {p.p99:.1f} ms of {budget_ms:.0f} ms"


def main(argv: Optional[list] = None) -> None:
    memory.keep_frame_buffers()  # before any thread starts and the engines allocate anything
    rospy.init_node(NODE)
    InferenceHostNode()
    rospy.spin()


