"""Model manager node: the OTA operator's entry point for engine swaps and rollbacks.

``/model_manager/swap_engine`` runs the staging checks here (path, manifest, checksum,
signature, gate report), then asks the inference host to load, validate and swap the engine
(the engines live in the host's process). ``/model_manager/status`` (latched) mirrors every
task's active and fallback version, backend, state and last message.
"""

from __future__ import annotations

import time
from typing import Tuple

import rospy

from airside_perception import node_configs
from airside_perception.engines import signing
from airside_perception.engines.manifest import TASKS
from airside_perception.errors import AirsideError, ConfigError
from airside_perception.ota import staging
from airside_perception.ota.swap import is_downgrade
from airside_perception.pipelines import store
from airside_perception.ros import common, shadow_door, trust_door
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.ros.engine_mirror import EngineMirror, EnginesTask
from airside_perception.srv import LoadEngine, RollbackEngine, RollbackEngineResponse, SwapEngine, SwapEngineResponse

NODE = "model_manager"
HOST_LOAD = "inference_host/load_engine"
HOST_ROLLBACK = "inference_host/rollback_engine"


class ModelManagerNode:
    def __init__(self):
        common.forward_core_logging()
        try:
            self.cfg = common.private_config(node_configs.MODEL_MANAGER, NODE)
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, self.cfg)
        self.engines_root = self.cfg["engines_dir"] or common.package_path("engines")
        self.policy, self.audit = trust_door.policy_of(self.cfg), trust_door.audit_log_of(self.cfg)
        if self.cfg["trusted_keys_dir"]:
            try:  # fail at start-up, loudly, when the fleet keys cannot be read
                keys = signing.load_trusted_keys(self.cfg["trusted_keys_dir"])
            except AirsideError as exc:
                common.fail_on_bad_config(NODE, ConfigError(f"trusted_keys_dir: {exc}"))
            rospy.loginfo(f"{NODE}: trusted keys {sorted(keys)}")
        if not self.cfg["require_signature"]:
            rospy.logwarn(f"{NODE}: require_signature is false: unsigned versions swap in (development only)")
        self.mirror = EngineMirror()
        self.srv_swap = rospy.Service("model_manager/swap_engine", SwapEngine, self._on_swap)
        self.srv_rollback = rospy.Service("model_manager/rollback_engine", RollbackEngine, self._on_rollback)
        self.shadow = shadow_door.ManagerShadow(self)
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        self.diagnostics.add_task(EnginesTask(NODE, self.mirror))
        self.diagnostics.add_task(trust_door.TrustTask(NODE, self.policy, self.engines_root))
        self.diagnostics.add("cpu", self.cpu)
        rospy.loginfo(f"{NODE}: engines root {self.engines_root}")

    # ------------------------------------------------------------------ services
    def _on_swap(self, req) -> SwapEngineResponse:
        start = time.perf_counter()
        response, version_dir = SwapEngineResponse(False, "internal error", "", ""), ""
        try:
            response, version_dir = self._swap(req)
        except Exception as exc:  # a bug must not kill the service; the operator gets the reason
            response = SwapEngineResponse(False, f"internal error: {type(exc).__name__}: {exc}", "", "")
            rospy.logerr(f"{NODE}: swap failed: {response.message}")
        finally:
            older = response.success and is_downgrade(response.active_version, response.previous_version)
            self._audit("swap", req, response.success, response.message, version_dir,
                        response.active_version if response.success else "", start,
                        note=f"rollback by version: {response.active_version} after {response.previous_version}"
                        if older else "")
        return response

    def _audit(self, action: str, req, success: bool, reason: str, version_dir: str, version: str,
               start: float, note: str = "", extra=None) -> None:
        trust_door.audit(self.audit, NODE, action, req.task, success, reason, trust_door.caller_of(req),
                         version_dir or getattr(req, "engine_path", ""), version, start, note, extra)

    def _swap(self, req) -> Tuple[SwapEngineResponse, str]:
        """The swap and the version directory it resolved to (for the audit log)."""
        task = req.task.strip()
        if task not in TASKS:
            return self._refuse(task, f"task '{task}' is {'empty' if not task else 'unknown'}: give one of "
                                f"{list(TASKS)}", ""), ""
        try:
            version_dir = staging.resolve_version_dir(self.engines_root, task, req.engine_path)
        except AirsideError:
            version_dir = ""
        serving = self.mirror.serving(task)
        if serving is None:
            hosted = self.mirror.hosted() or "none (is the inference host running?)"
            return self._refuse(task, f"task '{task}' is not served by the inference host (served: {hosted})",
                                ""), version_dir
        active = serving.active_version
        if not self.mirror.claim(task):
            return SwapEngineResponse(False, f"busy: a swap or rollback of {task} is running; try again when "
                                      "model_manager/status shows it serving", active, ""), version_dir
        try:
            try:
                current = store.load_version(self.engines_root, task, active)
                manifest = staging.stage(self.engines_root, task, req.engine_path, current,
                                         self.cfg["require_gate_report"], trust=self.policy)
            except AirsideError as exc:
                return self._refuse(task, str(exc), active), version_dir
            try:
                rospy.wait_for_service(HOST_LOAD, timeout=5.0)
                load = rospy.ServiceProxy(HOST_LOAD, LoadEngine)
                out = load(task, manifest.directory)
            except (rospy.ROSException, rospy.ServiceException) as exc:
                return self._refuse(task, f"the inference host did not answer ({exc}): is it running?",
                                    active), version_dir
            if not out.success:
                return self._refuse(task, out.message, out.active_version), version_dir
            self.mirror.counts["swaps"] += 1
            self.mirror.note(task, "")
            rospy.loginfo(f"{NODE}: {out.message} (load {out.load_ms:.0f} ms, validation {out.validation_ms:.0f} ms)")
            return SwapEngineResponse(True, out.message, out.active_version, out.previous_version), version_dir
        finally:
            self.mirror.release(task)

    def _refuse(self, task: str, message: str, active: str) -> SwapEngineResponse:
        self.mirror.counts["refused"] += 1
        rospy.logwarn(f"{NODE}: swap of '{task}' refused: {message}")
        if task in self.mirror.hosted():
            self.mirror.note(task, f"last swap refused: {message}")
        return SwapEngineResponse(False, message, active, "")

    def _on_rollback(self, req) -> RollbackEngineResponse:
        start = time.perf_counter()
        response = RollbackEngineResponse(False, "internal error", "")
        try:
            response = self._rollback(req)
        except Exception as exc:  # a bug must not kill the service
            response = RollbackEngineResponse(False, f"internal error: {type(exc).__name__}: {exc}", "")
            rospy.logerr(f"{NODE}: rollback failed: {response.message}")
        finally:
            self._audit("rollback", req, response.success, response.message, "", response.active_version, start)
        return response

    def _rollback(self, req) -> RollbackEngineResponse:
        task = req.task.strip()
        serving = self.mirror.serving(task)
        if serving is None:
            hosted = self.mirror.hosted() or "none"
            return RollbackEngineResponse(False, f"task '{task}' is not served (served: {hosted})", "")
        if not self.mirror.claim(task):
            return RollbackEngineResponse(False, f"busy: a swap or rollback of {task} is running",
                                          serving.active_version)
        try:
            rospy.wait_for_service(HOST_ROLLBACK, timeout=5.0)
            out = rospy.ServiceProxy(HOST_ROLLBACK, RollbackEngine)(task)
        except (rospy.ROSException, rospy.ServiceException) as exc:
            return RollbackEngineResponse(False, f"the inference host did not answer ({exc})", serving.active_version)
        finally:
            self.mirror.release(task)
        if out.success:
            self.mirror.counts["rollbacks"] += 1
            self.mirror.note(task, "")
        return out


def main() -> None:
    rospy.init_node(NODE)
    ModelManagerNode()
    rospy.spin()
