"""The nodes' /diagnostics through ``diagnostic_updater``, the ROS library made for them.

One ``Updater`` per node; each status the node reports is a function task that returns a
``DiagnosticStatus`` built by ``common.status`` (so its level, message and values are tested
like any other function), and each output topic gets a ``TopicDiagnostic`` (frequency and
timestamp age). The updater prefixes the node's name: a task ``input`` of the node
``inference_host`` is published as ``inference_host: input``.

Updates run on a wall-clock thread, not a ``rospy.Timer``: a ROS clock that jumps back (sim
time replayed or looped) kills a ``rospy.Timer``'s thread with ``ROSTimeMovedBackwardsException``
and the node would never publish diagnostics again. A jump back is detected at each update: the
topic frequency windows restart, the node's ``on_clock_jump`` callbacks run (rolling windows,
deadlines), one WARN is logged. Under sim time the first update waits for the first ``/clock``
so that no window starts at time 0 (a false "frequency too low" ERROR).
"""

from __future__ import annotations

import threading
from typing import Callable, List

import diagnostic_updater
import rospy
from diagnostic_msgs.msg import DiagnosticStatus

from airside_perception.stats import CLOCK_JUMP_S

HARDWARE_ID = "airside_perception"


def _safe_frequency(run: Callable):
    """``FrequencyStatus.run`` that survives a ROS clock standing still (sim time paused between
    two replays): its window would be zero seconds long."""
    def safe(stat):
        try:
            return run(stat)
        except ZeroDivisionError:
            stat.summary(DiagnosticStatus.WARN, "the ROS clock did not advance (sim time paused)")
            return stat
    return safe


class NodeDiagnostics:
    def __init__(self, period_s: float):
        self.updater = diagnostic_updater.Updater()
        self.updater.setHardwareID(HARDWARE_ID)
        self.period_s = period_s
        self.topics: List[diagnostic_updater.TopicDiagnostic] = []
        self.on_clock_jump: List[Callable[[], None]] = []
        self.clock_jumps = 0
        self._last_now = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="diagnostics", daemon=True)
        self.thread.start()

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

    def add_task(self, task: "StatusTask") -> None:
        """A ``diagnostic_updater`` task, run at every update under the same guard as ``add``."""
        self.updater.add(task)

    def topic(self, topic: str, rate_hz: float, max_age_s: float) -> diagnostic_updater.TopicDiagnostic:
        """Frequency (within 10 % of ``rate_hz``, over 10 updates) and stamp age (under
        ``max_age_s``) of an output topic; call ``.tick(stamp)`` on every publish."""
        diag = diagnostic_updater.TopicDiagnostic(
            rospy.resolve_name(topic), self.updater,
            diagnostic_updater.FrequencyStatusParam({"min": rate_hz, "max": rate_hz}, 0.1, 10),
            diagnostic_updater.TimeStampStatusParam(min_acceptable=-0.05, max_acceptable=max_age_s))
        diag.freq.run = _safe_frequency(diag.freq.run)
        self.topics.append(diag)
        return diag

    def _clock_jumped(self) -> bool:
        now = rospy.Time.now()
        jumped = self._last_now is not None and (self._last_now - now).to_sec() > CLOCK_JUMP_S
        self._last_now = now
        return jumped

    def _restart_windows(self) -> None:
        for diag in self.topics:
            diag.clear_window()
        for callback in self.on_clock_jump:
            try:
                callback()
            except Exception as exc:  # one callback must not stop the others
                rospy.logerr(f"clock jump handling failed: {type(exc).__name__}: {exc}")

    def _run(self) -> None:
        while not self._stop.is_set() and rospy.Time.now().is_zero():  # sim time before the first /clock
            self._stop.wait(0.1)
        self._restart_windows()
        while not self._stop.wait(self.period_s) and not rospy.is_shutdown():
            try:
                if self._clock_jumped():
                    self.clock_jumps += 1
                    rospy.logwarn(f"{rospy.get_name()}: the ROS clock jumped back (sim time replayed or looped): "
                                  "statistics windows restarted")
                    self._restart_windows()
                    continue  # the windows start now: the next update measures them
                self.updater.force_update()
            except Exception as exc:  # diagnostics must never take the node down
                rospy.logerr_throttle(10.0, f"diagnostics failed: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()


class StatusTask(diagnostic_updater.DiagnosticTask):
    """A diagnostic task whose ``report()`` returns (level, message, values); what it raises becomes
    an ERROR status, never an exception in the updater."""

    def report(self):
        raise NotImplementedError

    def run(self, stat):
        try:
            level, message, values = self.report()
            stat.summary(level, message)
            for key, value in values.items():
                stat.add(str(key), str(value))
        except Exception as exc:  # a diagnostics bug must not take the node down
            stat.summary(DiagnosticStatus.ERROR, f"diagnostics failed: {type(exc).__name__}: {exc}")
        return stat
