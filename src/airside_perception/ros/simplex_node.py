"""Simplex node: for every cloud, the advanced outputs if they can be trusted, else the baseline.

Each cloud opens a cycle keyed by its stamp. The cycle is decided as soon as the advanced
outputs, the host's report and the baseline for that stamp are all in, and at the latest at
``stamp + deadline_ms``: then the baseline goes out for that cloud. The node never waits on
the slower input, nor on an inference host that has been silent for ``host_timeout_ms``. A
cycle whose cloud the baseline skipped (it keeps only the newest cloud when clouds come faster
than it runs) is superseded by the newer cycle the baseline did
process. Near-field obstacles that the baseline sees and the advanced path misses are added
in any mode.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Dict, Optional

import numpy as np
import rospy
from nav_msgs.msg import OccupancyGrid
from rospy.numpy_msg import numpy_msg
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from airside_perception import memory, node_configs
from airside_perception.errors import ConfigError
from airside_perception.msg import Detection3DArray, InferenceStatus, SimplexStatus
from airside_perception.ros import common, markers, messages
from airside_perception.ros.cloud_worker import INPUT_TOPIC
from airside_perception.ros.diagnostics import NodeDiagnostics
from airside_perception.simplex import fusion
from airside_perception.simplex.decision import ADVANCED, Evidence, SimplexParams, SimplexState, decide
from airside_perception.stats import StageTimes, budget_level

NODE = "simplex"
KEEP_CYCLES_S = 3.0
BASELINE_GRACE_S = 0.05  # past the deadline, a cycle without its baseline is decided anyway
HOLD_BASELINE_S = 0.3  # such a cycle falls back to the newest baseline result this close to its stamp
NO_INPUT_S = 1.0


@dataclass
class Cycle:
    """Everything received for one cloud stamp, with arrival times (monotonic seconds)."""

    stamp: rospy.Time
    frame_id: str = "base_link"
    deadline: float = 0.0
    advanced: Optional[Detection3DArray] = None
    advanced_grid: Optional[OccupancyGrid] = None
    report: Optional[InferenceStatus] = None
    baseline: Optional[Detection3DArray] = None
    baseline_grid: Optional[OccupancyGrid] = None
    arrivals: Dict[str, float] = field(default_factory=dict)

    def advanced_complete(self) -> bool:
        return self.advanced is not None and self.advanced_grid is not None and self.report is not None

    def baseline_complete(self) -> bool:
        return self.baseline is not None and self.baseline_grid is not None


def _boxes(msg: Optional[Detection3DArray]) -> np.ndarray:
    if msg is None or not msg.detections:
        return np.zeros((0, 7))
    return np.array([[d.center.x, d.center.y, d.center.z, d.size.x, d.size.y, d.size.z, d.yaw]
                     for d in msg.detections])


class SimplexNode:
    def __init__(self):
        common.forward_core_logging()
        try:
            self.cfg = common.private_config(node_configs.SIMPLEX, NODE)
            self.params = SimplexParams(self.cfg["deadline_ms"], self.cfg["min_confidence"],
                                        self.cfg["recovery_cycles"], self.cfg["host_timeout_ms"],
                                        self.cfg["near_field_m"], self.cfg["min_trust"], self.cfg["ood_cycles"])
            self.budget = common.load_budget()
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, self.cfg)
        self.state = SimplexState()
        self.cycles: Dict[int, Cycle] = {}
        self.cond = threading.Condition()
        self.last_report = time.monotonic() - 1e6
        self.last_decided_ns = 0
        self.newest_baseline_ns = 0
        self.held_baseline: Optional[Cycle] = None  # the newest cycle with a complete baseline
        self.times = StageTimes(self.cfg["stats_window"])
        self.reasons: Dict[str, int] = {}
        self.last_reason = "no_input"
        self.last_shift = ""  # the statistic that last put a cycle out of distribution
        self.last_decision = time.monotonic()
        self.pub_obs = rospy.Publisher("/perception/obstacles", Detection3DArray, queue_size=5)
        self.pub_grid = rospy.Publisher("/perception/safety_grid", numpy_msg(OccupancyGrid), queue_size=5)
        self.pub_status = rospy.Publisher("/simplex/status", SimplexStatus, queue_size=5)
        self.pub_markers = rospy.Publisher("/perception/markers", MarkerArray, queue_size=2)
        self.subs = [
            rospy.Subscriber(INPUT_TOPIC, rospy.AnyMsg, self._on_cloud, queue_size=5, buff_size=1 << 25),
            rospy.Subscriber("/perception/detections", Detection3DArray, self._on_part, "advanced", queue_size=5),
            rospy.Subscriber("/perception/occupancy", numpy_msg(OccupancyGrid), self._on_part, "advanced_grid",
                             queue_size=5),
            rospy.Subscriber("/inference_host/status", InferenceStatus, self._on_part, "report", queue_size=5),
            rospy.Subscriber("/baseline/obstacles", Detection3DArray, self._on_part, "baseline", queue_size=5),
            rospy.Subscriber("/baseline/occupancy", numpy_msg(OccupancyGrid), self._on_part, "baseline_grid",
                             queue_size=5),
        ]
        self._running = True
        self.worker = threading.Thread(target=self._work, name="simplex_worker", daemon=True)
        self.worker.start()
        self.timer = rospy.Timer(rospy.Duration.from_sec(self.cfg["diagnostics_period_s"]), self._on_timer)
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        self.diagnostics.add("decision", self._decision_status)
        self.diagnostics.add("cpu", self.cpu)
        self.topic_diag = self.diagnostics.topic("/perception/obstacles", 10.0, self.params.deadline_ms / 1e3 + 0.02)
        rospy.on_shutdown(self.close)

    # ------------------------------------------------------------------ intake
    def _cycle(self, stamp: rospy.Time, frame_id: str) -> Optional[Cycle]:
        key = stamp.to_nsec()
        if key <= self.last_decided_ns:
            return self.cycles.get(key)
        cycle = self.cycles.get(key)
        if cycle is None:
            age_s = (rospy.Time.now() - stamp).to_sec()
            cycle = Cycle(stamp, frame_id, time.monotonic() + self.params.deadline_ms / 1e3 - age_s)
            self.cycles[key] = cycle
        return cycle

    def _on_cloud(self, raw) -> None:
        stamp, _ = common.header_of_raw(raw._buff)
        with self.cond:
            self._cycle(stamp, self.cfg["target_frame"])
            self.cond.notify()

    def _on_part(self, msg, part: str) -> None:
        now = time.monotonic()
        with self.cond:
            if part == "report":
                self.last_report = now
            cycle = self._cycle(msg.header.stamp, self.cfg["target_frame"])
            if cycle is not None and getattr(cycle, part) is None:
                setattr(cycle, part, msg)
                cycle.arrivals[part] = now
                if part.startswith("baseline") and cycle.baseline_complete():
                    self.newest_baseline_ns = max(self.newest_baseline_ns, msg.header.stamp.to_nsec())
                    self.held_baseline = cycle
            self.cond.notify()

    # ------------------------------------------------------------------ decisions
    def _work(self) -> None:
        while self._running and not rospy.is_shutdown():
            try:
                self._step()
            except Exception as exc:  # a decision bug must not silence the safety output
                rospy.logerr_throttle(5.0, f"{NODE}: decision failed: {type(exc).__name__}: {exc}")
                time.sleep(0.01)

    def _step(self) -> None:
        with self.cond:
            now = time.monotonic()
            open_cycles = [(k, c) for k, c in sorted(self.cycles.items()) if k > self.last_decided_ns
                           and (c.baseline_complete() or c.advanced_complete() or k >= self.newest_baseline_ns)]
            host_silent = (now - self.last_report) * 1e3 > self.params.host_timeout_ms  # no advanced to wait for
            due = [c for k, c in open_cycles if
                   (c.baseline_complete() and (c.advanced_complete() or host_silent or now >= c.deadline))
                   or now >= c.deadline + BASELINE_GRACE_S
                   or (k < self.newest_baseline_ns and c.advanced_complete())]
            if not due:
                pending = [c.deadline for _, c in open_cycles]
                self.cond.wait(timeout=max(0.001, min(pending) - now) if pending else 0.1)
                return
            cycle = due[-1]  # the newest decidable cloud; older undecided ones are superseded
            self.last_decided_ns = cycle.stamp.to_nsec()
            for k in [k for k, c in self.cycles.items() if (now - c.deadline) > KEEP_CYCLES_S]:
                del self.cycles[k]
        self._decide(cycle, now)

    def _evidence(self, cycle: Cycle, now: float) -> Evidence:
        report = cycle.report
        errors = [e for e in (report.errors if report else []) if e]
        arrived = [cycle.arrivals.get(p) for p in ("advanced", "advanced_grid")]
        on_time = all(a is not None and a <= cycle.deadline for a in arrived)
        latency_ms = report.latency_ms if report else float("nan")
        confidence = float(min(report.confidences)) if report and report.confidences else 0.0
        trust = 1.0
        if report and report.trust:
            k = int(np.argmin(report.trust))
            trust = float(report.trust[k])
            if trust < self.params.min_trust and k < len(report.ood_worst):
                self.last_shift = f"{report.tasks[k]}: {report.ood_worst[k]} (score {report.ood_scores[k]:.2f})"
        boxes = _boxes(cycle.advanced)
        return Evidence(has_output=cycle.advanced_complete(), on_time=on_time, latency_ms=latency_ms,
                        confidence=confidence, engine_error="; ".join(errors) or None,
                        is_finite=bool(np.isfinite(boxes).all()), host_silence_ms=(now - self.last_report) * 1e3,
                        trust=trust)

    def _decide(self, cycle: Cycle, now: float) -> None:
        start = time.perf_counter()
        evidence = self._evidence(cycle, now)
        self.state, reason = decide(self.state, evidence, self.params)
        if reason == "engine_error" and "non-finite" in (evidence.engine_error or ""):
            reason = "non_finite_output"
        header = Header(stamp=cycle.stamp, frame_id=cycle.frame_id)
        obstacles, grid = self._outputs(cycle, header)
        self.times.add("decision", (time.perf_counter() - start) * 1e3)
        self.pub_obs.publish(obstacles)
        self.topic_diag.tick(cycle.stamp)
        if grid is not None:
            self.pub_grid.publish(grid)
        self.pub_status.publish(SimplexStatus(
            header=header, active=self.state.active, reason=reason,
            advanced_latency_ms=evidence.latency_ms if np.isfinite(evidence.latency_ms) else -1.0,
            advanced_confidence=evidence.confidence, switches=self.state.switches,
            decision_latency_ms=obstacles.latency_ms))
        self.pub_markers.publish(markers.box_markers(header, "simplex", _boxes(obstacles),
                                                     [d.label_name for d in obstacles.detections],
                                                     [d.score for d in obstacles.detections], alpha=0.25))
        self.reasons[reason.split(" ")[0]] = self.reasons.get(reason.split(" ")[0], 0) + 1
        self.last_reason = reason
        self.last_decision = time.monotonic()
        self.times.add("stamp_to_decision", (rospy.Time.now() - cycle.stamp).to_sec() * 1e3)

    def _outputs(self, cycle: Cycle, header: Header):
        use_advanced = self.state.active == ADVANCED and cycle.advanced is not None
        cycle = self._with_baseline(cycle)
        baseline_boxes = _boxes(cycle.baseline)
        if use_advanced:
            out = Detection3DArray(header=header, source="advanced", model_version=cycle.advanced.model_version,
                                   detections=list(cycle.advanced.detections),
                                   latency_ms=cycle.advanced.latency_ms)
            missed = fusion.missed_near_obstacles(_boxes(cycle.advanced), baseline_boxes, self.params.near_field_m)
            if len(missed):
                out.detections.extend(cycle.baseline.detections[i] for i in missed)
                out.source = "fused"
        else:
            src = cycle.baseline
            out = Detection3DArray(header=header, source="baseline", model_version=src.model_version if src else "",
                                   detections=list(src.detections) if src else [],
                                   latency_ms=src.latency_ms if src else -1.0)
        out.latency_ms = float((rospy.Time.now() - header.stamp).to_sec() * 1e3)
        return out, self._grid(cycle, header, use_advanced)

    def _with_baseline(self, cycle: Cycle) -> Cycle:
        """The cycle, its missing baseline filled in by the newest one within ``HOLD_BASELINE_S``.

        An empty obstacle list would say "nothing there"; the baseline of a cloud a few tens of
        milliseconds away says much more.
        """
        held = self.held_baseline
        if cycle.baseline_complete() or held is None or abs((held.stamp - cycle.stamp).to_sec()) > HOLD_BASELINE_S:
            return cycle
        return replace(cycle, baseline=held.baseline, baseline_grid=held.baseline_grid)

    def _grid(self, cycle: Cycle, header: Header, use_advanced: bool):
        base = cycle.baseline_grid
        adv = cycle.advanced_grid
        chosen = adv if use_advanced else base
        if chosen is None:
            chosen = base or adv
        if chosen is None:
            return None
        grid = messages.NumpyOccupancyGrid(header=header, info=chosen.info, data=np.asarray(chosen.data, np.int8))
        if use_advanced and base is not None and base.info.width == adv.info.width:
            size = adv.info.width
            mask = fusion.near_field_mask(size, adv.info.resolution, adv.info.origin.position.x,
                                          self.params.near_field_m)
            merged = fusion.merge_grids(np.asarray(adv.data, np.int8).reshape(size, size),
                                        np.asarray(base.data, np.int8).reshape(size, size), mask)
            grid.data = merged.reshape(-1)
        return grid

    # ------------------------------------------------------------------ diagnostics
    def _on_timer(self, _event) -> None:
        """Without clouds no cycle is decided: the status says so once per period."""
        try:
            if time.monotonic() - self.last_decision > NO_INPUT_S:
                self.last_reason = "no_input"
                self.pub_status.publish(SimplexStatus(header=Header(stamp=rospy.Time.now()), active=self.state.active,
                                                      reason="no_input", advanced_latency_ms=-1.0,
                                                      switches=self.state.switches, decision_latency_ms=-1.0))
        except Exception as exc:  # the timer must never take the node down
            rospy.logerr_throttle(10.0, f"{NODE}: status failed: {exc}")

    def _decision_status(self):
        budget = self.budget.stage("safety_monitoring")
        decision = self.times.percentiles("decision")
        level = budget_level(decision.p99 if decision else float("nan"), budget, self.budget.warn_factor,
                             self.budget.error_factor)
        values = {"active": self.state.active, "last reason": self.last_reason,
                  "switches": self.state.switches, "budget (ms)": budget,
                  "last distribution shift": self.last_shift or "none seen",
                  **{f"cycles {k}": v for k, v in sorted(self.reasons.items())}}
        values.update(common.percentile_values("decision", decision))
        values.update(common.percentile_values("stamp to decision", self.times.percentiles("stamp_to_decision")))
        message = f"{self.state.active} ({self.last_reason}), {self.state.switches} switches"
        if self.state.active != ADVANCED:
            level = max(level, 1)
        return common.status(f"{NODE}: decision", level, message, values)

    def close(self) -> None:
        self._running = False
        with self.cond:
            self.cond.notify_all()


def main() -> None:
    memory.keep_frame_buffers()  # before any thread starts
    rospy.init_node(NODE)
    SimplexNode()
    rospy.spin()
