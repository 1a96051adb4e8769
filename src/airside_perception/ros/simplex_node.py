"""Simplex node: for every cloud, the advanced outputs if they can be trusted, else the baseline.

The cycles (what arrived for each cloud stamp, which is due, the evidence and the answer) are
``simplex.cycles``; the decision rules ``simplex.decision``; the messages and the diagnostic
``ros.simplex_outputs``. This node wires them to topics: every answer is a path's result for that
very cloud, or ``no_evidence`` (no obstacles, source ``none``, every grid cell unknown), never an
"all clear". Clouds stamped more than ``max_future_ms`` ahead open no cycle (counted); a clock
that jumps back (sim time replayed or looped) restarts the cycles and windows.
"""

from __future__ import annotations

import threading
import time

import rospy
from nav_msgs.msg import OccupancyGrid
from rospy.numpy_msg import numpy_msg
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from airside_perception import memory, node_configs
from airside_perception.errors import ConfigError
from airside_perception.msg import CloudRefused, Detection3DArray, InferenceStatus, SimplexStatus
from airside_perception.ros import common, markers
from airside_perception.ros.cloud_worker import INPUT_TOPIC
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.ros.simplex_outputs import WINDOW_S, DecisionTask, Outputs
from airside_perception.ros.simplex_roles import RoleKeeper, RoleTask, WatchdogTask
from airside_perception.simplex import fusion
from airside_perception.simplex.cycles import CycleBook, boxes_of, check_deadline
from airside_perception.simplex.decision import ADVANCED, BASELINE, SimplexParams, SimplexState
from airside_perception.stats import StageTimes, WindowedCounts

NODE = "simplex"
NO_INPUT_S = 1.0
WARN_EVERY_S = 5.0  # per reason
GRID = numpy_msg(OccupancyGrid)
PARTS = (("perception/detections", Detection3DArray, "advanced"), ("perception/occupancy", GRID, "advanced_grid"),
         ("inference_host/status", InferenceStatus, "report"), ("baseline/obstacles", Detection3DArray, "baseline"),
         ("baseline/occupancy", GRID, "baseline_grid"))


class SimplexNode:
    def __init__(self):
        common.forward_core_logging()
        self.name = NODE
        try:
            cfg = self.cfg = common.private_config(node_configs.SIMPLEX, NODE)
            self.params = SimplexParams(cfg["deadline_ms"], cfg["min_confidence"], cfg["recovery_cycles"],
                                        cfg["host_timeout_ms"], cfg["near_field_m"], cfg["min_trust"],
                                        cfg["ood_cycles"], cfg["ood_window"], cfg["ood_in_window"],
                                        cfg["max_recovery_cycles"])
            footprint = fusion.footprint_polygon(cfg["vehicle_footprint_m"])
            self.budget = common.load_budget()
            check_deadline(cfg["deadline_ms"], cfg["decision_grace_ms"], self.budget)
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, self.cfg)
        self.state = SimplexState()
        self.book = CycleBook(self.params, tuple(cfg["tasks"]), cfg["decision_grace_ms"] / 1e3, cfg["max_future_ms"])
        self.outputs = Outputs(self.params.near_field_m, footprint)
        self.cond = threading.Condition()
        self.times = StageTimes(cfg["stats_window"])
        self.recent = WindowedCounts(WINDOW_S)  # decisions and refused clouds of the last seconds
        self.task = DecisionTask(self)
        self.name = rospy.get_name().lstrip("/")
        self.last_worker_loop = time.monotonic()
        self.topic_diag = None
        self.keeper = RoleKeeper(self.name, cfg["role"], cfg["takeover_timeout_ms"] / 1e3, self.recent,
                                 lambda: self.last_worker_loop, self._on_output)
        self.last_decision = time.monotonic()
        self.warned = {}  # reason -> monotonic time of its last WARN
        # Names are relative: they resolve in the node's namespace (the contract's names at the root).
        self.pub_obs = rospy.Publisher("perception/obstacles", Detection3DArray, queue_size=5)
        self.pub_grid = rospy.Publisher("perception/safety_grid", GRID, queue_size=5)
        self.pub_status = rospy.Publisher("simplex/status", SimplexStatus, queue_size=5)
        self.pub_markers = rospy.Publisher("perception/markers", MarkerArray, queue_size=2)
        self.subs = [rospy.Subscriber(INPUT_TOPIC, rospy.AnyMsg, self._on_cloud, queue_size=5, buff_size=1 << 25)]
        self.subs += [rospy.Subscriber(t, kind, self._on_part, part, queue_size=5) for t, kind, part in PARTS]
        self.subs += [rospy.Subscriber(f"{node}/refused", CloudRefused, self._on_refused, path, queue_size=20)
                      for node, path in (("inference_host", ADVANCED), ("baseline", BASELINE))]
        self._running = True
        for target, name in ((self._work, "simplex_worker"), (self._no_input_watch, "simplex_no_input")):
            threading.Thread(target=target, name=name, daemon=True).start()
        self.diagnostics = NodeDiagnostics(cfg["diagnostics_period_s"])
        self.diagnostics.on_clock_jump.append(self.times.clear)
        self.diagnostics.add_task(self.task)
        self.diagnostics.add_task(RoleTask(self.keeper))
        self.diagnostics.add_task(WatchdogTask(self.keeper, cfg["watchdog_max_age_ms"]))
        self.diagnostics.add("cpu", self.cpu)
        self.topic_diag = self.diagnostics.topic("perception/obstacles", 10.0, self.params.deadline_ms / 1e3 + 0.02)
        rospy.on_shutdown(self.close)

    # ------------------------------------------------------------------ intake
    def _on_cloud(self, raw) -> None:
        stamp, _ = common.header_of_raw(raw._buff)
        age_s = (rospy.Time.now() - stamp).to_sec()
        if -age_s * 1e3 > self.cfg["max_future_ms"]:
            self.recent.add("future", f"cloud stamped {-age_s * 1e3:.0f} ms ahead of this node's clock (max_future_ms "
                                      f"{self.cfg['max_future_ms']:.0f}): no cycle opened; synchronise the clocks")
            self._warn("future", f"{NODE}: cloud stamped {-age_s * 1e3:.0f} ms ahead of this node's clock: ignored "
                                 "(the host and the baseline refuse it too)")
            return
        if age_s * 1e3 > self.cfg["max_input_age_ms"]:  # one old cloud on a steady clock: stale, not a jump
            self.recent.add("stale", f"cloud {age_s * 1e3:.0f} ms old on arrival (max_input_age_ms "
                                     f"{self.cfg['max_input_age_ms']:.0f}): no cycle opened")
            self._warn("stale", f"{NODE}: cloud {age_s * 1e3:.0f} ms old on arrival: ignored (the host and the "
                                "baseline drop it as stale too)")
            return
        with self.cond:
            jumped = self.book.on_cloud(stamp.to_nsec(), self.cfg["target_frame"], age_s, time.monotonic())
            if jumped:
                self.times.clear()
                rospy.logwarn(f"{NODE}: time jumped back ({jumped}): cycles restarted, deciding on")
            self.cond.notify()

    def _warn(self, reason: str, text: str) -> None:
        """One WARN per reason at most every WARN_EVERY_S: one reason never silences another."""
        now = time.monotonic()
        if now - self.warned.get(reason, -1e9) >= WARN_EVERY_S:
            self.warned[reason] = now
            rospy.logwarn(text)

    def _on_refused(self, msg: CloudRefused, path: str) -> None:
        with self.cond:
            why = f"{msg.reason} ({msg.detail})" if msg.detail else msg.reason
            self.book.on_refused(path, msg.header.stamp.to_nsec(), why, time.monotonic())
            self.recent.add(f"{path} refused", f"{msg.node}: {msg.reason}: {msg.detail}")
            self.cond.notify()

    def _on_part(self, msg, part: str) -> None:
        with self.cond:
            if part.endswith("grid"):
                self.outputs.grid_geometry = msg.info
            age_s = (rospy.Time.now() - msg.header.stamp).to_sec()
            self.book.on_part(part, msg, msg.header.stamp.to_nsec(), self.cfg["target_frame"], age_s, time.monotonic())
            self.cond.notify()

    # ------------------------------------------------------------------ decisions
    def _work(self) -> None:
        while self._running and not rospy.is_shutdown():
            self.last_worker_loop = time.monotonic()  # the heartbeat stops when this does
            try:
                with self.cond:
                    cycle, wait_s = self.book.next_due(time.monotonic())
                    if cycle is None:
                        self.cond.wait(timeout=wait_s)
                        continue
                self._decide(cycle)
            except Exception as exc:  # a decision bug must not silence the safety output
                rospy.logerr_throttle(5.0, f"{NODE}: decision failed: {type(exc).__name__}: {exc}")
                time.sleep(0.01)

    def _decide(self, cycle) -> None:
        start = time.perf_counter()
        self.state, d = self.book.decide(self.state, cycle, time.monotonic())
        header = Header(stamp=rospy.Time(nsecs=cycle.stamp_ns), frame_id=cycle.frame_id)
        grid_fault = self.outputs.grid_fault(d)
        faults = d.faults + ([grid_fault] if grid_fault else [])
        self.times.add("decision", (time.perf_counter() - start) * 1e3)
        switches = self.state.switches

        def send():  # only the active instance builds and sends the messages, each stamp once
            obstacles = self.outputs.obstacles(d, header)
            grid, grid_source, _ = self.outputs.grid(d, header)
            status = Outputs.status(d, header, switches, obstacles.latency_ms, grid_source, faults)
            status.instance, status.role, status.takeovers = self.name, "active", self.keeper.roles.takeovers
            self.pub_obs.publish(obstacles)
            self.pub_grid.publish(grid)
            self.pub_status.publish(status)
            self.pub_markers.publish(markers.box_markers(header, "simplex", boxes_of(obstacles),
                                                         [o.label_name for o in obstacles.detections],
                                                         [o.score for o in obstacles.detections], alpha=0.25))
        self.keeper.publish(cycle.stamp_ns, send)
        if grid_fault:
            rospy.logerr_throttle(10.0, f"{NODE}: {grid_fault}")
        self.task.note(d, faults, grid_fault)
        self.last_decision = time.monotonic()
        self.times.add("stamp_to_decision", (rospy.Time.now() - header.stamp).to_sec() * 1e3)

    def _on_output(self, msg) -> None:
        """Every perception/obstacles message, from whichever instance: the topic's rate and age."""
        if self.topic_diag is not None:
            self.topic_diag.tick(msg.header.stamp)

    def _no_input_watch(self) -> None:
        """Without clouds no cycle is decided: the status says so once per period (wall clock:
        a ROS clock that jumps back must not stop it)."""
        while self._running and not rospy.is_shutdown():
            time.sleep(self.cfg["diagnostics_period_s"])
            try:
                if time.monotonic() - self.last_decision > NO_INPUT_S and self.keeper.may_publish():
                    self.task.last_reason = "no_input"
                    status = Outputs.no_input(Header(stamp=rospy.Time.now()), self.state.switches)
                    status.instance, status.role, status.takeovers = self.name, "active", self.keeper.roles.takeovers
                    self.pub_status.publish(status)
            except Exception as exc:  # the watch must never stop
                rospy.logerr_throttle(10.0, f"{NODE}: status failed: {exc}")

    def close(self) -> None:
        self._running = False
        self.keeper.close()
        self.diagnostics.close()
        with self.cond:
            self.cond.notify_all()


def main() -> None:
    memory.keep_frame_buffers()  # before any thread starts
    rospy.init_node(NODE)
    SimplexNode()
    rospy.spin()
