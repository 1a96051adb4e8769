"""The shadow-run services: ``inference_host/shadow_engine`` (where the engines and the live
clouds are) and ``model_manager/shadow_engine`` (the operator's door: staging and trust here,
the run in the host, the report in the audit log and on ``/model_manager/status``, and a swap
afterwards only with ``auto_promote: true`` and every shadow gate passed)."""

from __future__ import annotations

import json
import math
import time
from typing import Optional

import rospy

from airside_perception.engines.manifest import TASKS
from airside_perception.errors import AirsideError
from airside_perception.ota import staging
from airside_perception.ota.shadow import ShadowReport
from airside_perception.ota.validation import SAME_SPEED
from airside_perception.pipelines import store
from airside_perception.ros import trust_door
from airside_perception.srv import ShadowEngine, ShadowEngineResponse, SwapEngineRequest

HOST_SHADOW = "inference_host/shadow_engine"
HOST_MARGIN_S = 30.0  # the host's answer may take this much longer than the run itself


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else -1.0


def response_of(report: Optional[ShadowReport], why: str) -> ShadowEngineResponse:
    if report is None:
        return ShadowEngineResponse(success=False, message=why)
    verdict = "passed every shadow gate" if report.passed else "failed: " + "; ".join(report.failures)
    latency = f"latency {report.latency_ratio}x, projected P99 {report.projected_p99_ms} ms of {report.limit_ms} ms"
    if report.projected_p99_ms > report.limit_ms and report.latency_ratio <= SAME_SPEED:
        latency += (f" (over budget, as the serving engine itself is here; no slower than it within {SAME_SPEED}x, "
                    "so the latency gate passes)")
    message = (f"{report.task} {report.candidate} shadowed {report.serving} over {report.clouds} clouds "
               f"({report.duration_s:.0f} s): agreement {report.agreement} (worst {report.min_agreement}), "
               f"{report.near_person_count} near-field persons seen by one engine only, {latency}: {verdict}")
    return ShadowEngineResponse(report.passed, message, _finite(report.agreement),
                                report.near_person_count, _finite(report.latency_ratio),
                                _finite(report.projected_p99_ms), json.dumps(report.as_dict(), default=float))


def host_handler(node):
    """The inference host's service: runs the shadow in this process (``SwapController.shadow``)."""
    def handle(req) -> ShadowEngineResponse:
        start = time.perf_counter()
        try:
            report, why = node.swaps.shadow(req.task.strip(), req.engine_path, int(req.clouds),
                                            float(req.duration_s), should_stop=lambda: "" if not rospy.is_shutdown()
                                            else "the node is shutting down")
            response = response_of(report, why)
        except Exception as exc:  # a bug must not kill the service
            response = ShadowEngineResponse(success=False, message=f"internal error: {type(exc).__name__}: {exc}")
        (rospy.loginfo if response.success else rospy.logwarn)(f"{node.name}: {response.message}")
        if not trust_door.from_model_manager(req):
            audit_shadow(node.audit, node.name, node.engines_root, req, response, start)
        return response
    return handle


def audit_shadow(log, node_name: str, engines_root: str, req, response: ShadowEngineResponse, start: float) -> None:
    """One record per request: refused (it never ran), or passed / failed with the report."""
    report = json.loads(response.report_json) if response.report_json else None
    try:  # the version directory, so that the record names its signing key
        path = staging.resolve_version_dir(engines_root, req.task.strip(), req.engine_path)
    except AirsideError:
        path = req.engine_path
    trust_door.audit(log, node_name, "shadow", req.task, report is not None, response.message,
                     trust_door.caller_of(req), path, report["candidate"] if report else "", start,
                     note=response.message, extra={"shadow": report} if report else None,
                     result=("passed" if report["passed"] else "failed") if report else "")


class ManagerShadow:
    """``model_manager/shadow_engine`` for the model manager node ``node``."""

    def __init__(self, node):
        self.node = node
        self.srv = rospy.Service("model_manager/shadow_engine", ShadowEngine, self._on_shadow)

    def _on_shadow(self, req) -> ShadowEngineResponse:
        start = time.perf_counter()
        try:
            response = self._shadow(req)
        except Exception as exc:  # a bug must not kill the service
            response = ShadowEngineResponse(success=False, message=f"internal error: {type(exc).__name__}: {exc}")
        (rospy.loginfo if response.success else rospy.logwarn)(f"model_manager: {response.message}")
        audit_shadow(self.node.audit, "model_manager", self.node.engines_root, req, response, start)
        return response

    def _shadow(self, req) -> ShadowEngineResponse:
        node, task = self.node, req.task.strip()
        if task not in TASKS:
            return ShadowEngineResponse(success=False, message=f"task '{task}' is unknown: give one of {list(TASKS)}")
        if not (math.isfinite(req.duration_s) and req.duration_s >= 0) or (req.duration_s <= 0 and req.clouds == 0):
            return ShadowEngineResponse(success=False, message="give duration_s > 0 (seconds) or clouds > 0: how long "
                                                               "the candidate runs beside the serving engine")
        serving = node.mirror.serving(task)
        if serving is None:
            return ShadowEngineResponse(success=False, message=f"task '{task}' is not served by the inference host "
                                                               f"(served: {node.mirror.hosted() or 'none'})")
        try:
            current = store.load_version(node.engines_root, task, serving.active_version)
            staging.stage(node.engines_root, task, req.engine_path, current, node.cfg["require_gate_report"],
                          trust=node.policy)
        except AirsideError as exc:
            return ShadowEngineResponse(success=False, message=f"shadow run refused: {exc}")
        limit_s = (req.duration_s or 600.0) + HOST_MARGIN_S
        node.mirror.note(task, "")  # the host's progress shows in the status while the run goes on
        try:
            rospy.wait_for_service(HOST_SHADOW, timeout=5.0)
            out = rospy.ServiceProxy(HOST_SHADOW, ShadowEngine)(task, req.engine_path, req.duration_s, req.clouds)
        except (rospy.ROSException, rospy.ServiceException) as exc:
            return ShadowEngineResponse(success=False, message=f"the inference host did not answer ({exc}): is it "
                                                               f"running? (a run may take up to {limit_s:.0f} s)")
        node.mirror.note(task, f"last shadow run: {out.message}")
        if out.success and node.cfg["auto_promote"]:
            swap = node._on_swap(SwapEngineRequest(task=task, engine_path=req.engine_path))
            out.message += f"; auto_promote: {'swapped' if swap.success else 'swap refused'}: {swap.message}"
        return out
