"""The model manager's view of the engines the host serves: ``/model_manager/status`` (latched,
the host's states with the manager's last refusal as the message), one swap or rollback at a
time per task, and the ``model_manager: engines`` diagnostic task."""

from __future__ import annotations

import threading
from typing import Dict, Optional

import rospy
from std_msgs.msg import Header

from airside_perception.msg import ModelStatus, ModelStatusArray
from airside_perception.ros.diagnostics import StatusTask
from airside_perception.stats import ERROR, OK, WARN


class EngineMirror:
    def __init__(self):
        self.lock = threading.Lock()
        self.busy: Dict[str, bool] = {}
        self.host_models: Dict[str, ModelStatus] = {}
        self.notes: Dict[str, str] = {}
        self.counts = {"swaps": 0, "refused": 0, "rollbacks": 0}
        self.pub = rospy.Publisher("model_manager/status", ModelStatusArray, queue_size=5, latch=True)
        self.sub = rospy.Subscriber("inference_host/engines", ModelStatusArray, self._on_host_engines)

    def _on_host_engines(self, msg: ModelStatusArray) -> None:
        with self.lock:
            self.host_models = {m.task: m for m in msg.models}
        self.publish()

    def publish(self) -> None:
        with self.lock:
            models = [ModelStatus(task=m.task, active_version=m.active_version, fallback_version=m.fallback_version,
                                  backend=m.backend, state=m.state, message=self.notes.get(task) or m.message)
                      for task, m in sorted(self.host_models.items())]
        self.pub.publish(ModelStatusArray(header=Header(stamp=rospy.Time.now()), models=models))

    def note(self, task: str, message: str) -> None:
        with self.lock:
            self.notes[task] = message
        self.publish()

    def claim(self, task: str) -> bool:
        """True when no swap or rollback of ``task`` runs; the caller then owns it until ``release``."""
        with self.lock:
            if self.busy.get(task):
                return False
            self.busy[task] = True
            return True

    def release(self, task: str) -> None:
        with self.lock:
            self.busy[task] = False

    def serving(self, task: str) -> Optional[ModelStatus]:
        with self.lock:
            return self.host_models.get(task)

    def hosted(self) -> list:
        with self.lock:
            return sorted(self.host_models)


class EnginesTask(StatusTask):
    """``model_manager: engines``: the engines the host serves, as the manager sees them."""

    def __init__(self, node_name: str, mirror: EngineMirror):
        super().__init__("engines")  # diagnostic_updater names it "<node>: engines"
        self.mirror = mirror

    def report(self):
        with self.mirror.lock:
            models = dict(self.mirror.host_models)
        states = {t: m.state for t, m in models.items()}
        level = OK if models else WARN
        if any(s == "failed" for s in states.values()):
            level = ERROR
        elif any(s == "rolled_back" for s in states.values()):
            level = max(level, WARN)
        values = {**{f"{t} active": m.active_version for t, m in models.items()},
                  **{f"{t} fallback": m.fallback_version for t, m in models.items()},
                  **{f"{t} state": m.state for t, m in models.items()}, **self.mirror.counts}
        message = ", ".join(f"{t} {m.active_version} {m.state}" for t, m in sorted(models.items())) or \
            "no inference host seen"
        return level, message, values
