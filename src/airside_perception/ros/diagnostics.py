"""The nodes' /diagnostics through ``diagnostic_updater``, the ROS library made for them.

One ``Updater`` per node; each status the node reports is a function task that returns a
``DiagnosticStatus`` built by ``common.status`` (so its level, message and values are tested
like any other function), and each output topic gets a ``TopicDiagnostic`` (frequency and
timestamp age). The updater prefixes the node's name: a task ``input`` of the node
``inference_host`` is published as ``inference_host: input``.
"""

from __future__ import annotations

from typing import Callable

import diagnostic_updater
import rospy
from diagnostic_msgs.msg import DiagnosticStatus

HARDWARE_ID = "airside_perception"


class NodeDiagnostics:
    def __init__(self, period_s: float):
        self.updater = diagnostic_updater.Updater()
        self.updater.setHardwareID(HARDWARE_ID)
        self.timer = rospy.Timer(rospy.Duration.from_sec(period_s), self._on_timer)

    def add(self, name: str, status_fn: Callable[[], DiagnosticStatus]) -> None:
        """``status_fn`` is called at every update; what it raises becomes an ERROR status."""
        def run(stat):
            try:
                status = status_fn()
                stat.summary(status.level, status.message)
                for kv in status.values:
                    stat.add(kv.key, kv.value)
            except Exception as exc:  # a diagnostics bug must not take the node down
                stat.summary(DiagnosticStatus.ERROR, f"diagnostics failed: {type(exc).__name__}: {exc}")
            return stat
        self.updater.add(name, run)

    def topic(self, topic: str, rate_hz: float, max_age_s: float) -> diagnostic_updater.TopicDiagnostic:
        """Frequency (within 10 % of ``rate_hz``, over 10 updates) and stamp age (under
        ``max_age_s``) of an output topic; call ``.tick(stamp)`` on every publish."""
        return diagnostic_updater.TopicDiagnostic(
            topic, self.updater,
            diagnostic_updater.FrequencyStatusParam({"min": rate_hz, "max": rate_hz}, 0.1, 10),
            diagnostic_updater.TimeStampStatusParam(min_acceptable=-0.05, max_acceptable=max_age_s))

    def _on_timer(self, _event) -> None:
        try:
            self.updater.force_update()
        except Exception as exc:  # diagnostics must never take the node down
            rospy.logerr_throttle(10.0, f"diagnostics failed: {exc}")

    def close(self) -> None:
        self.timer.shutdown()
