"""The simplex's hot standby in ROS: heartbeats on ``simplex/heartbeat``, the publish gate (only
the active instance publishes, never a stamp already published), the takeover, and the
``role`` and ``safety watchdog`` diagnostic tasks. The arbitration itself is ``simplex.roles``."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import rospy
from std_msgs.msg import Header

from airside_perception.msg import Detection3DArray, SimplexHeartbeat
from airside_perception.ros.diagnostics import StatusTask
from airside_perception.simplex.roles import ACTIVE, RoleParams, Roles
from airside_perception.stats import CLOCK_JUMP_S, ERROR, OK, WARN

HEARTBEAT_PERIOD_S = 0.01  # 100 Hz: five beats in the default takeover timeout (50 ms)
MAX_OUTPUT_AGE_S = 0.3  # a decided cycle older than this (by its stamp) is never published
WORKER_SILENT_S = 0.5  # no heartbeat while the decision worker has not looped for this long
ROLE_WARN_S = 60.0  # a takeover or step-down stays a WARN this long


def _newer(stamp_ns: int, newest_ns: int) -> bool:
    """A stamp after the newest one, or far enough before it that time went back (sim time replayed
    or looped): a new timeline starts there."""
    return stamp_ns > newest_ns or newest_ns - stamp_ns > CLOCK_JUMP_S * 1e9


class RoleKeeper:
    """Owns the instance's role; ``publish(stamp_ns, send)`` sends a decided cycle when this
    instance may, and keeps it otherwise so that a takeover can send the newest one at once."""

    def __init__(self, instance: str, start_role: str, takeover_timeout_s: float, recent,
                 worker_alive: Callable[[], float], on_output: Callable[[Detection3DArray], None]):
        self.instance, self.recent = instance, recent
        self.worker_alive, self.on_output = worker_alive, on_output  # monotonic time of the worker's last loop
        self.roles = Roles(instance, start_role, RoleParams(takeover_timeout_s, heartbeat_period_s=HEARTBEAT_PERIOD_S),
                           time.monotonic())
        self.lock = threading.Lock()
        self.send_lock = threading.Lock()  # one publish at a time, in stamp order
        self.newest_source = ""
        self.last_published_ns = 0  # newest stamp on perception/obstacles, from any instance
        self.newest_output = None  # (monotonic receipt, stamp) of the newest obstacles seen
        self.pending = None  # (stamp_ns, send) decided while standing by
        self.last_change = (-1e9, "")  # (monotonic, what) of the last takeover or step-down
        self.pub = rospy.Publisher("simplex/heartbeat", SimplexHeartbeat, queue_size=5)
        self.subs = [rospy.Subscriber("simplex/heartbeat", SimplexHeartbeat, self._on_heartbeat, queue_size=20),
                     rospy.Subscriber("perception/obstacles", Detection3DArray, self._on_output, queue_size=20)]
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="simplex_heartbeat", daemon=True).start()

    @property
    def role(self) -> str:
        return self.roles.role

    def _changed(self, what: Optional[str]) -> None:
        if what:
            self.last_change = (time.monotonic(), what)
            self.recent.add("role change", what)
            rospy.logwarn(f"{self.instance}: {what}")

    def _on_heartbeat(self, msg: SimplexHeartbeat) -> None:
        with self.lock:
            self._changed(self.roles.on_heartbeat(msg.instance, msg.role, msg.term, time.monotonic()))

    def _on_output(self, msg: Detection3DArray) -> None:
        self.on_output(msg)  # the topic's health, whichever instance published
        with self.lock:
            stamp = msg.header.stamp.to_nsec()
            if _newer(stamp, self.last_published_ns):
                self.last_published_ns = stamp
            if self.newest_output is None or _newer(stamp, self.newest_output[1]):
                self.newest_output = (time.monotonic(), stamp)
                self.newest_source = msg.source

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_PERIOD_S) and not rospy.is_shutdown():
            try:
                with self.lock:
                    was = self.roles.role
                    self._changed(self.roles.tick(time.monotonic()))
                    took_over = was != ACTIVE and self.roles.role == ACTIVE
                    pending, self.pending = (self.pending, None) if took_over else (None, self.pending)
                if pending is not None:
                    self.publish(*pending)  # the newest cycle decided while standing by
                if self.roles.role == ACTIVE and time.monotonic() - self.worker_alive() < WORKER_SILENT_S:
                    self.pub.publish(SimplexHeartbeat(header=Header(stamp=rospy.Time.now()), instance=self.instance,
                                                      role=ACTIVE, term=self.roles.term))
            except Exception as exc:  # the heartbeat must never stop
                rospy.logerr_throttle(10.0, f"{self.instance}: heartbeat failed: {type(exc).__name__}: {exc}")

    def publish(self, stamp_ns: int, send: Callable[[], None]) -> bool:
        """Sends a cycle's outputs if this instance is active, the stamp is newer than every one
        published (or a new timeline after time went back) and not older than MAX_OUTPUT_AGE_S;
        one send at a time. Returns True if sent."""
        with self.send_lock:
            with self.lock:
                why = self.roles.may_publish(time.monotonic())
                if why:
                    self._changed(None if why == "standing by" else why)
                    if self.pending is None or _newer(stamp_ns, self.pending[0]):
                        self.pending = (stamp_ns, send)
                    return False
                if not _newer(stamp_ns, self.last_published_ns):
                    return False  # published already, or an older cycle: never out of order
                if (rospy.Time.now().to_nsec() - stamp_ns) / 1e9 > MAX_OUTPUT_AGE_S:
                    return False  # stale (a resumed process, a late cloud): the consumer must not get it
            send()
            with self.lock:
                if _newer(stamp_ns, self.last_published_ns):
                    self.last_published_ns = stamp_ns
            return True

    def may_publish(self) -> bool:
        with self.lock:
            return self.roles.may_publish(time.monotonic()) is None

    def close(self) -> None:
        self._stop.set()


class RoleTask(StatusTask):
    """``<node>: role``: active or standby, the active instance, term and takeovers; WARN for a
    while after a takeover or step-down."""

    def __init__(self, keeper: RoleKeeper):
        super().__init__("role")  # diagnostic_updater names it "<node>: role"
        self.keeper = keeper

    def report(self):
        r, (when, what) = self.keeper.roles, self.keeper.last_change
        values = {"role": r.role, "active instance": r.active_instance or "none heard", "term": r.term,
                  "takeovers": r.takeovers, "last change": what or "none"}
        if time.monotonic() - when < ROLE_WARN_S:
            return WARN, f"{r.role}: {what}", values
        return OK, f"{r.role} (active: {r.active_instance or 'none heard'}, term {r.term})", values


class WatchdogTask(StatusTask):
    """``<node>: safety watchdog``: the consumer's rule in code. ERROR when the newest
    ``perception/obstacles`` is older than ``max_age_ms`` (by its stamp), none has come, or its
    source is ``none``."""

    def __init__(self, keeper: RoleKeeper, max_age_ms: float):
        super().__init__("safety watchdog")
        self.keeper, self.max_age_ms = keeper, max_age_ms

    def report(self):
        newest, source = self.keeper.newest_output, self.keeper.newest_source
        if newest is None:
            return ERROR, "no perception/obstacles received: a planner must treat the safety output as lost", {}
        age_ms = (rospy.Time.now().to_nsec() - newest[1]) / 1e6
        values = {"newest obstacles age (ms)": f"{age_ms:.0f}", "max age (ms)": f"{self.max_age_ms:.0f}"}
        if age_ms > self.max_age_ms:
            return ERROR, (f"newest perception/obstacles is {age_ms:.0f} ms old (max {self.max_age_ms:.0f}): a "
                           "planner must treat the safety output as lost and stop"), values
        if source == "none":
            return ERROR, ("the newest perception/obstacles has source none (no path has evidence for its cloud): "
                           "a planner must stop"), values
        if source == "advanced_degraded":
            return ERROR, ("the newest perception/obstacles is advanced_degraded (a distrusted neural result, no "
                           "baseline result to check it): a planner must slow down and stop"), values
        return OK, f"newest perception/obstacles {age_ms:.0f} ms old ({source})", values
