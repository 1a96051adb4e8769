"""Engine trust in the nodes: the policy from a node's parameters, one audit record per door
(``swap``, ``load``, ``rollback``, ``startup``), the host's revocation watch, and the
``<node>: trust`` diagnostic task.

The check itself is ``engines.trust.check`` (core), called by the swap controller, the staging
of the model manager and the host's start-up; this module only wires it to ROS.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, List, Optional

import rospy

from airside_perception.engines import signing
from airside_perception.engines.audit import AUDIT_FILE, AuditLog
from airside_perception.engines.trust import SEEN_FILE, TrustPolicy, bundled_versions, revocations
from airside_perception.ros import common
from airside_perception.ros.diagnostics import StatusTask
from airside_perception.stats import ERROR, OK, WARN

WATCH_PERIOD_S = 0.5  # a revoked version that serves is replaced within this (plus the swap)


def state_file_of(cfg) -> str:
    return cfg["state_file"] or common.ros_home_file("airside_perception", "active_engines.yaml")


def policy_of(cfg) -> TrustPolicy:
    """The node's trust policy; revocations are remembered beside the state file."""
    state_dir = os.path.dirname(os.path.abspath(state_file_of(cfg)))
    return TrustPolicy(bool(cfg["require_signature"]), cfg["trusted_keys_dir"], os.path.join(state_dir, SEEN_FILE))


def audit_log_of(cfg) -> AuditLog:
    return AuditLog(os.path.join(os.path.dirname(os.path.abspath(state_file_of(cfg))), AUDIT_FILE))


def caller_of(req) -> str:
    """The calling node's name, from the service connection header."""
    header = getattr(req, "_connection_header", None) or {}
    return str(header.get("callerid", ""))


def from_model_manager(req) -> bool:
    """Calls that the model manager makes on an operator's behalf: it audits them itself."""
    return caller_of(req).rstrip("/").split("/")[-1] == "model_manager"


def audit(log: AuditLog, node: str, action: str, task: str, accepted: bool, reason: str = "", caller: str = "",
          path: str = "", version: str = "", start: Optional[float] = None, note: str = "",
          extra: Optional[dict] = None, result: str = "") -> None:
    """One record; a log that cannot be written is an ERROR line, never a failed request. An
    accepted record's reason is ``note`` (e.g. a rollback by version); ``extra`` adds fields;
    ``result`` replaces accepted / refused (a shadow run that ran: passed / failed)."""
    try:
        log.append(action, task, result or ("accepted" if accepted else "refused"), note if accepted else reason,
                   caller=caller,
                   path=path, version=version or (os.path.basename(path.rstrip("/")) if path else ""),
                   key_id=(signing.signature_key_id(path) or "") if path else "",
                   duration_ms=(time.perf_counter() - start) * 1e3 if start is not None else 0.0, extra=extra)
    except OSError as exc:
        rospy.logerr_throttle(10.0, f"{node}: audit log {log.path} cannot be written: {exc}")


class TrustTask(StatusTask):
    """``<node>: trust``: the policy, how each serving version was trusted, revocations, and every
    version refused at start-up. WARN while signatures are off; ERROR while a task is down, a
    start-up version was refused or the revocation list cannot be taken."""

    def __init__(self, node_name: str, policy: TrustPolicy, engines_root: str):
        super().__init__("trust")  # diagnostic_updater names it "<node>: trust"
        self.policy, self.engines_root = policy, engines_root
        self.serving: Dict[str, str] = {}  # task -> "version (bundled | signed by KEY | unchecked)"
        self.problems: List[str] = []  # start-up refusals and tasks down, kept until restart

    def report(self):
        revoked = revocations(self.engines_root, self.policy)
        keys = "none"
        if self.policy.trusted_keys_dir:
            try:
                keys = ", ".join(sorted(signing.load_trusted_keys(self.policy.trusted_keys_dir)))
            except signing.SignatureError as exc:
                keys = f"none readable ({exc})"
        values = {"require_signature": self.policy.require_signature,
                  "trusted_keys_dir": self.policy.trusted_keys_dir or "(none: only bundled versions open)",
                  "trusted keys": keys, "bundled versions": len(bundled_versions()),
                  "revoked versions": ", ".join(sorted(revoked.revoked)) or "none",
                  **{f"{t} serving": v for t, v in sorted(self.serving.items())}}
        problems = self.problems + ([revoked.problem] if revoked.problem else [])
        for k, problem in enumerate(problems):
            values[f"problem {k + 1}"] = problem
        if problems:
            return ERROR, "; ".join(problems), values
        if not self.policy.require_signature:
            return WARN, ("require_signature is false: unsigned and altered versions open (development "
                          "only; the vehicle runs full.launch with its default true)"), values
        serving = ", ".join(f"{t} {v}" for t, v in sorted(self.serving.items()))
        return OK, f"every serving version verified: {serving}", values


class RevocationWatch:
    """Replaces a serving version as soon as it is revoked (every WATCH_PERIOD_S)."""

    def __init__(self, node_name: str, swaps, policy: TrustPolicy, log: AuditLog, on_change):
        self.node_name, self.swaps, self.policy, self.log, self.on_change = node_name, swaps, policy, log, on_change
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="revocation_watch", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(WATCH_PERIOD_S) and not rospy.is_shutdown():
            try:
                revoked = revocations(self.swaps.engines_root, self.policy)
                for task, out in self.swaps.replace_revoked(revoked):
                    rospy.logerr(f"{self.node_name}: {out.message}")
                    audit(self.log, self.node_name, "rollback", task, out.success, out.message, "revocation_watch",
                          version=out.active_version)
                    self.on_change()
            except Exception as exc:  # the watch must never stop
                rospy.logerr_throttle(10.0, f"{self.node_name}: revocation watch failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()


def describe(verdict) -> str:
    if verdict is None:
        return "unchecked"
    return {"bundled": "bundled", "signed": f"signed by {verdict.key_id}"}.get(verdict.how, verdict.how)
