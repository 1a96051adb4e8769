"""Simplex node: for every cloud, the advanced outputs if they can be trusted, else the baseline.

Each cloud opens a cycle keyed by its stamp. The cycle is decided as soon as the advanced
outputs, the host's report and the baseline for that stamp are all in, and at the latest at
``stamp + deadline_ms``: then the baseline goes out for that cloud. The node never waits on
the slower input, nor on an inference host that has been silent for ``host_timeout_ms``. A
cycle whose cloud the baseline skipped (it keeps only the newest cloud when clouds come faster
than it runs) is superseded by the newer cycle the baseline did
process. Near-field obstacles that the baseline sees and the advanced path misses are added
in any mode.

Every answer comes from a path's result for that very cloud (``choose_output``): the advanced
one when trusted, else the baseline's, else the advanced one marked degraded
(``baseline_missing``), else none at all: ``no_evidence``, an empty list with source ``none``
and a grid of unknown cells, never an "all clear". The status names every path that is
missing and why (dead, refused by the node with its reason, no result by the deadline).

Clouds stamped more than ``max_future_ms`` ahead of this node's clock open no cycle (counted);
a clock that jumps back (sim time replayed or looped) restarts the cycles and windows.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import rospy
from nav_msgs.msg import OccupancyGrid
from rospy.numpy_msg import numpy_msg
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from airside_perception import memory, node_configs
from airside_perception.errors import ConfigError
from airside_perception.msg import CloudRefused, Detection3DArray, InferenceStatus, SimplexStatus
from airside_perception.ros import common, markers, messages
from airside_perception.ros.cloud_worker import INPUT_TOPIC
from airside_perception.ros.diagnostics import CLOCK_JUMP_S, NodeDiagnostics
from airside_perception.simplex import fusion
from airside_perception.simplex.decision import (
    ADVANCED,
    BASELINE,
    NONE,
    Evidence,
    Output,
    SimplexParams,
    SimplexState,
    TaskReport,
    choose_output,
    cycle_faults,
    decide,
    merge_reports,
    why_missing,
)
from airside_perception.stats import ERROR, WARN, StageTimes, WindowedCounts, budget_level

NODE = "simplex"
KEEP_CYCLES_S = 3.0
NO_INPUT_S = 1.0
WINDOW_S = 10.0  # decisions counted for the diagnostics' level
#: Grid of a no_evidence answer before any path has published one: the advanced grid's geometry.
DEFAULT_GRID = (200, 0.4, -40.0)  # cells per side, metres per cell, origin (both axes)


@dataclass
class Cycle:
    """Everything received for one cloud stamp, with arrival times (monotonic seconds)."""

    stamp: rospy.Time
    frame_id: str = "base_link"
    deadline: float = 0.0
    advanced: Optional[Detection3DArray] = None
    advanced_grid: Optional[OccupancyGrid] = None
    reports: List[InferenceStatus] = field(default_factory=list)  # every report for this cloud, any process
    baseline: Optional[Detection3DArray] = None
    baseline_grid: Optional[OccupancyGrid] = None
    arrivals: Dict[str, float] = field(default_factory=dict)
    refused: Dict[str, str] = field(default_factory=dict)  # path -> why its node refused the cloud

    tasks: Tuple[str, ...] = ()  # the tasks the host is configured to run

    def reported_tasks(self) -> set:
        return {t for r in self.reports for t in r.tasks}

    def advanced_complete(self) -> bool:
        return self.advanced is not None and self.advanced_grid is not None and bool(self.reports) \
            and self.reported_tasks() >= set(self.tasks)

    def baseline_complete(self) -> bool:
        return self.baseline is not None and self.baseline_grid is not None


def check_deadline(deadline_ms: float, grace_ms: float, budget) -> None:
    """The decision must be out inside the cycle: deadline plus grace within the time the budget
    leaves to perception (the cycle less tracking, localization, planning and safety monitoring)."""
    downstream = sum(budget.stage(s) for s in ("tracking", "localization", "planning", "safety_monitoring"))
    perception_ms = budget.cycle_ms - downstream
    if deadline_ms + grace_ms > perception_ms:
        raise ConfigError(f"deadline_ms {deadline_ms:g} + decision_grace_ms {grace_ms:g} = {deadline_ms + grace_ms:g} "
                          f"ms ends after the {perception_ms:g} ms that config/budget.yaml leaves to perception "
                          f"(cycle {budget.cycle_ms:g} ms less {downstream:g} ms downstream): lower deadline_ms")


def _same_geometry(a, b) -> bool:
    """Two grids of the same cells: size, resolution and origin (merging by index needs all three)."""
    return (a.width == b.width and a.height == b.height and abs(a.resolution - b.resolution) < 1e-6
            and abs(a.origin.position.x - b.origin.position.x) < 1e-6
            and abs(a.origin.position.y - b.origin.position.y) < 1e-6)


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
            cfg = self.cfg
            self.params = SimplexParams(cfg["deadline_ms"], cfg["min_confidence"], cfg["recovery_cycles"],
                                        cfg["host_timeout_ms"], cfg["near_field_m"], cfg["min_trust"],
                                        cfg["ood_cycles"], cfg["ood_window"], cfg["ood_in_window"],
                                        cfg["max_recovery_cycles"])
            self.footprint = fusion.footprint_polygon(cfg["vehicle_footprint_m"])
            self.budget = common.load_budget()
            self.grace_s = cfg["decision_grace_ms"] / 1e3
            check_deadline(cfg["deadline_ms"], cfg["decision_grace_ms"], self.budget)
        except ConfigError as exc:
            common.fail_on_bad_config(NODE, exc)
        self.cpu = common.CpuStatus(NODE, self.cfg)
        self.state = SimplexState()
        self.cycles: Dict[int, Cycle] = {}
        self.cond = threading.Condition()
        self.last_report = time.monotonic() - 1e6
        self.last_baseline = time.monotonic() - 1e6
        self.last_decided_ns = 0
        self.newest_baseline_ns = 0
        self.newest_stamp_ns = 0
        self.grid_geometry = None  # MapMetaData of the last grid received, for no_evidence grids
        self._mask_key, self._mask = None, None  # the near-field mask of the last grid geometry
        self.times = StageTimes(self.cfg["stats_window"])
        self.reasons: Dict[str, int] = {}
        self.recent = WindowedCounts(WINDOW_S)  # decisions and refused clouds of the last seconds
        self.last_faults: list = []
        self.clock_jumps = 0
        self.last_reason = "no_input"
        self.last_shift = ""  # the statistic that last put a cycle out of distribution
        self.last_decision = time.monotonic()
        # Names are relative: they resolve in the node's namespace (the contract's names at the root).
        self.pub_obs = rospy.Publisher("perception/obstacles", Detection3DArray, queue_size=5)
        self.pub_grid = rospy.Publisher("perception/safety_grid", numpy_msg(OccupancyGrid), queue_size=5)
        self.pub_status = rospy.Publisher("simplex/status", SimplexStatus, queue_size=5)
        self.pub_markers = rospy.Publisher("perception/markers", MarkerArray, queue_size=2)
        self.subs = [
            rospy.Subscriber(INPUT_TOPIC, rospy.AnyMsg, self._on_cloud, queue_size=5, buff_size=1 << 25),
            rospy.Subscriber("perception/detections", Detection3DArray, self._on_part, "advanced", queue_size=5),
            rospy.Subscriber("perception/occupancy", numpy_msg(OccupancyGrid), self._on_part, "advanced_grid",
                             queue_size=5),
            rospy.Subscriber("inference_host/status", InferenceStatus, self._on_part, "report", queue_size=5),
            rospy.Subscriber("baseline/obstacles", Detection3DArray, self._on_part, "baseline", queue_size=5),
            rospy.Subscriber("baseline/occupancy", numpy_msg(OccupancyGrid), self._on_part, "baseline_grid",
                             queue_size=5),
            rospy.Subscriber("inference_host/refused", CloudRefused, self._on_refused, ADVANCED, queue_size=20),
            rospy.Subscriber("baseline/refused", CloudRefused, self._on_refused, BASELINE, queue_size=20),
        ]
        self._running = True
        self.worker = threading.Thread(target=self._work, name="simplex_worker", daemon=True)
        self.worker.start()
        self.timer = threading.Thread(target=self._no_input_watch, name="simplex_no_input", daemon=True)
        self.timer.start()
        self.diagnostics = NodeDiagnostics(self.cfg["diagnostics_period_s"])
        self.diagnostics.on_clock_jump.append(self.times.clear)
        self.diagnostics.add("decision", self._decision_status)
        self.diagnostics.add("cpu", self.cpu)
        self.topic_diag = self.diagnostics.topic("perception/obstacles", 10.0, self.params.deadline_ms / 1e3 + 0.02)
        rospy.on_shutdown(self.close)

    # ------------------------------------------------------------------ intake
    def _cycle(self, stamp: rospy.Time, frame_id: str, from_cloud: bool = True) -> Optional[Cycle]:
        key = stamp.to_nsec()
        if key <= self.last_decided_ns:
            return self.cycles.get(key)
        cycle = self.cycles.get(key)
        if cycle is None:
            age_s = (rospy.Time.now() - stamp).to_sec()
            # A result whose cloud was not seen opens a cycle only on this timeline: after a clock
            # jump back, late results of the old one are ahead of the clock and must not.
            if not from_cloud and (-age_s * 1e3 > self.cfg["max_future_ms"]
                                   or key < self.newest_stamp_ns - int(CLOCK_JUMP_S * 1e9)):
                return None
            cycle = Cycle(stamp, frame_id, time.monotonic() + self.params.deadline_ms / 1e3 - age_s,
                          tasks=tuple(self.cfg["tasks"]))
            if age_s * 1e3 > self.params.deadline_ms:  # past its deadline on arrival: nobody can answer in time
                late = f"stale: the cloud reached the simplex {age_s * 1e3:.0f} ms after its stamp"
                cycle.refused.update({ADVANCED: late, BASELINE: late})
            self.cycles[key] = cycle
        return cycle

    def _on_cloud(self, raw) -> None:
        stamp, _ = common.header_of_raw(raw._buff)
        ahead_ms = (stamp - rospy.Time.now()).to_sec() * 1e3
        if ahead_ms > self.cfg["max_future_ms"]:
            self.recent.add("future", f"cloud stamped {ahead_ms:.0f} ms ahead of this node's clock (max_future_ms "
                                      f"{self.cfg['max_future_ms']:.0f}): no cycle opened; synchronise the clocks")
            rospy.logwarn_throttle(5.0, f"{NODE}: cloud stamped {ahead_ms:.0f} ms ahead of this node's clock: "
                                        "ignored (the host and the baseline refuse it too)")
            return
        with self.cond:
            key = stamp.to_nsec()
            if self.newest_stamp_ns and (self.newest_stamp_ns - key) / 1e9 > CLOCK_JUMP_S \
                    and key <= self.last_decided_ns:
                self._restart(f"a cloud stamped {(self.newest_stamp_ns - key) / 1e9:.1f} s before the newest one")
            self.newest_stamp_ns = max(self.newest_stamp_ns, key)
            self._cycle(stamp, self.cfg["target_frame"])
            self.cond.notify()

    def _restart(self, why: str) -> None:
        """Time went back (sim time replayed or looped): forget the cycles of the old timeline."""
        self.clock_jumps += 1
        self.cycles.clear()
        self.last_decided_ns = self.newest_baseline_ns = self.newest_stamp_ns = 0
        self.times.clear()
        rospy.logwarn(f"{NODE}: time jumped back ({why}): cycles restarted, deciding on")

    def _on_refused(self, msg: CloudRefused, path: str) -> None:
        with self.cond:
            if path == ADVANCED:  # a refusal is news from a live node
                self.last_report = time.monotonic()
            else:
                self.last_baseline = time.monotonic()
            cycle = self.cycles.get(msg.header.stamp.to_nsec())
            if cycle is not None:
                cycle.refused[path] = f"{msg.reason} ({msg.detail})" if msg.detail else msg.reason
            self.recent.add(f"{path} refused", f"{msg.node}: {msg.reason}: {msg.detail}")
            self.cond.notify()

    def _on_part(self, msg, part: str) -> None:
        now = time.monotonic()
        with self.cond:
            if part == "report":
                self.last_report = now
            elif part.startswith("baseline"):
                self.last_baseline = now
            if part.endswith("grid"):
                self.grid_geometry = msg.info
            cycle = self._cycle(msg.header.stamp, self.cfg["target_frame"], from_cloud=False)
            if cycle is not None and part == "report":  # every report counts, from every hosting process
                cycle.reports.append(msg)
                cycle.arrivals.setdefault(part, now)
            elif cycle is not None and getattr(cycle, part) is None:
                setattr(cycle, part, msg)
                cycle.arrivals[part] = now
                if part.startswith("baseline") and cycle.baseline_complete():
                    self.newest_baseline_ns = max(self.newest_baseline_ns, msg.header.stamp.to_nsec())
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
            baseline_silent = (now - self.last_baseline) * 1e3 > self.params.host_timeout_ms
            due = [c for k, c in open_cycles if
                   (c.baseline_complete() and (c.advanced_complete() or host_silent or now >= c.deadline
                                               or ADVANCED in c.refused))
                   or (c.advanced_complete() and (baseline_silent or BASELINE in c.refused))
                   or (ADVANCED in c.refused or host_silent) and (BASELINE in c.refused or baseline_silent)
                   or now >= c.deadline + self.grace_s
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
        reports = []
        for r in cycle.reports:
            for k, task in enumerate(r.tasks):
                reports.append(TaskReport(task, float(r.confidences[k]) if k < len(r.confidences) else float("nan"),
                                          float(r.trust[k]) if k < len(r.trust) else 1.0,
                                          r.errors[k] if k < len(r.errors) else ""))
            if r.trust and min(r.trust) < self.params.min_trust:
                k = int(np.argmin(r.trust))
                if k < len(r.ood_worst):
                    self.last_shift = f"{r.tasks[k]}: {r.ood_worst[k]} (score {r.ood_scores[k]:.2f})"
        confidence, trust, errors, invalid = merge_reports(reports, cycle.tasks)
        arrived = [cycle.arrivals.get(p) for p in ("advanced", "advanced_grid")]
        on_time = all(a is not None and a <= cycle.deadline for a in arrived)
        latencies = [float(r.latency_ms) for r in cycle.reports]
        latency_ms = float("nan") if not latencies or any(v != v for v in latencies) else max(latencies)
        boxes = _boxes(cycle.advanced)
        return Evidence(has_output=cycle.advanced_complete(), on_time=on_time, latency_ms=latency_ms,
                        confidence=confidence, engine_error=errors, is_finite=bool(np.isfinite(boxes).all()),
                        host_silence_ms=(now - self.last_report) * 1e3, trust=trust, invalid=invalid)

    def _decide(self, cycle: Cycle, now: float) -> None:
        start = time.perf_counter()
        evidence = self._evidence(cycle, now)
        self.state, reason = decide(self.state, evidence, self.params)
        if reason == "engine_error" and "non-finite" in (evidence.engine_error or ""):
            reason = "non_finite_output"
        missing = {
            ADVANCED: why_missing(cycle.advanced_complete(), (now - self.last_report) * 1e3,
                                  self.params.host_timeout_ms, cycle.refused.get(ADVANCED)),
            BASELINE: why_missing(cycle.baseline_complete(), (now - self.last_baseline) * 1e3,
                                  self.params.host_timeout_ms, cycle.refused.get(BASELINE))}
        output = choose_output(self.state, reason, missing[ADVANCED], missing[BASELINE])
        header = Header(stamp=cycle.stamp, frame_id=cycle.frame_id)
        obstacles = self._obstacles(cycle, header, output)
        grid, grid_source, grid_fault = self._grid(cycle, header, output.source)
        faults = cycle_faults(reason, evidence, missing) + ([grid_fault] if grid_fault else [])
        self.times.add("decision", (time.perf_counter() - start) * 1e3)
        self.pub_obs.publish(obstacles)
        self.topic_diag.tick(cycle.stamp)
        self.pub_grid.publish(grid)
        self.pub_status.publish(SimplexStatus(
            header=header, active=output.source, reason=output.reason,
            advanced_latency_ms=evidence.latency_ms if np.isfinite(evidence.latency_ms) else -1.0,
            advanced_confidence=evidence.confidence, switches=self.state.switches,
            decision_latency_ms=obstacles.latency_ms, grid_source=grid_source, faults=faults))
        self.pub_markers.publish(markers.box_markers(header, "simplex", _boxes(obstacles),
                                                     [d.label_name for d in obstacles.detections],
                                                     [d.score for d in obstacles.detections], alpha=0.25))
        key = output.reason.split(" ")[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1
        self.recent.add(key, "; ".join(faults))
        for path, why in missing.items():  # a path without a result is a fault, whoever drives
            if why:
                self.recent.add(f"{path} missing", f"{path}: {why}")
        self.last_reason = output.reason
        self.last_faults = faults
        self.last_decision = time.monotonic()
        self.times.add("stamp_to_decision", (rospy.Time.now() - cycle.stamp).to_sec() * 1e3)

    def _obstacles(self, cycle: Cycle, header: Header, output: Output) -> Detection3DArray:
        """This cloud's obstacles from ``output.source``; never another cloud's."""
        if output.source == ADVANCED:
            out = Detection3DArray(header=header, source="advanced", model_version=cycle.advanced.model_version,
                                   detections=list(cycle.advanced.detections))
            if cycle.baseline is not None:
                missed = fusion.missed_near_obstacles(_boxes(cycle.advanced), _boxes(cycle.baseline),
                                                      self.params.near_field_m, self.footprint)
                if len(missed):
                    out.detections.extend(cycle.baseline.detections[i] for i in missed)
                    out.source = "fused"
        elif output.source == BASELINE:
            out = Detection3DArray(header=header, source="baseline", model_version=cycle.baseline.model_version,
                                   detections=list(cycle.baseline.detections))
        else:  # no path looked at this cloud: say so, claim nothing
            out = Detection3DArray(header=header, source=NONE, model_version="", detections=[])
        out.latency_ms = float((rospy.Time.now() - header.stamp).to_sec() * 1e3)
        return out

    def _grid(self, cycle: Cycle, header: Header, source: str):
        """The safety grid from the same source as the obstacles, where it came from, and a fault
        when the baseline's grid could not be merged; every cell unknown (-1) when no path has a
        grid for this cloud. Grids of another geometry are never merged by index."""
        base, adv = cycle.baseline_grid, cycle.advanced_grid
        chosen = adv if source == ADVANCED else base if source == BASELINE else None
        if chosen is None:
            return self._unknown_grid(header), NONE, None
        grid = messages.NumpyOccupancyGrid(header=header, info=chosen.info, data=np.asarray(chosen.data, np.int8))
        if source != ADVANCED or base is None:
            return grid, source, None
        if not _same_geometry(base.info, adv.info):
            fault = (f"baseline: grid geometry differs ({base.info.width}x{base.info.height} cells of "
                     f"{base.info.resolution:g} m at ({base.info.origin.position.x:g}, "
                     f"{base.info.origin.position.y:g}) against {adv.info.width}x{adv.info.height} of "
                     f"{adv.info.resolution:g} m at ({adv.info.origin.position.x:g}, "
                     f"{adv.info.origin.position.y:g})): not merged; configure the baseline's occupancy like the "
                     "engines'")
            self.recent.add("grid_geometry", fault)
            rospy.logerr_throttle(10.0, f"{NODE}: {fault}")
            return grid, source, fault
        mask = self._near_mask(adv.info)
        shape = (adv.info.height, adv.info.width)
        merged = fusion.merge_grids(np.asarray(adv.data, np.int8).reshape(shape),
                                    np.asarray(base.data, np.int8).reshape(shape), mask)
        grid.data = merged.reshape(-1)
        return grid, "fused", None

    def _near_mask(self, info) -> np.ndarray:
        """Cells within near_field_m of the vehicle footprint (square grids), cached per geometry."""
        key = (info.width, info.height, round(info.resolution, 6), round(info.origin.position.x, 6))
        if self._mask_key != key:
            self._mask_key = key
            self._mask = fusion.near_field_mask(info.width, info.resolution, info.origin.position.x,
                                                self.params.near_field_m, self.footprint)
        return self._mask

    def _unknown_grid(self, header: Header):
        info = self.grid_geometry
        if info is not None:
            cells = np.full(info.width * info.height, -1, np.int8)
            return messages.NumpyOccupancyGrid(header=header, info=info, data=cells)
        size, resolution_m, origin_m = DEFAULT_GRID
        return messages.occupancy_msg(header, np.full((size, size), -1, np.int8), resolution_m, origin_m, origin_m)

    # ------------------------------------------------------------------ diagnostics
    def _no_input_watch(self) -> None:
        """Without clouds no cycle is decided: the status says so once per period (wall clock:
        a ROS clock that jumps back must not stop it)."""
        while self._running and not rospy.is_shutdown():
            time.sleep(self.cfg["diagnostics_period_s"])
            try:
                if time.monotonic() - self.last_decision > NO_INPUT_S:
                    self.last_reason = "no_input"
                    self.pub_status.publish(SimplexStatus(
                        header=Header(stamp=rospy.Time.now()), active=NONE, reason="no_input",
                        advanced_latency_ms=-1.0, switches=self.state.switches, decision_latency_ms=-1.0,
                        grid_source=NONE, faults=["input: no cloud for over 1 s"]))
            except Exception as exc:  # the watch must never stop
                rospy.logerr_throttle(10.0, f"{NODE}: status failed: {exc}")

    def _decision_status(self):
        budget = self.budget.stage("safety_monitoring")
        decision = self.times.percentiles("decision")
        level = budget_level(decision.p99 if decision else float("nan"), budget, self.budget.warn_factor,
                             self.budget.error_factor)
        recent = self.recent.recent()
        values = {"active": self.state.active, "last reason": self.last_reason,
                  "last faults": "; ".join(self.last_faults) or "none",
                  "switches": self.state.switches, "budget (ms)": budget, "clock jumps back": self.clock_jumps,
                  "last distribution shift": self.last_shift or "none seen",
                  **{f"cycles {k} (total)": v for k, v in sorted(self.reasons.items())},
                  **{f"{k} (last {WINDOW_S:.0f} s)": v for k, v in sorted(recent.items())}}
        values.update(common.percentile_values("decision", decision))
        values.update(common.percentile_values("stamp to decision", self.times.percentiles("stamp_to_decision")))
        message = f"{self.state.active} ({self.last_reason}), {self.state.switches} switches"
        if self.state.active != ADVANCED:
            level = max(level, WARN)
        missing = {k: v for k, v in recent.items() if k in ("no_evidence", "baseline_missing", "grid_geometry",
                                                             "advanced missing", "baseline missing")}
        if missing:  # the safety output had no evidence, or no baseline behind it: a fault to fix
            level = ERROR
            message = ", ".join(f"{k} on {v} cycles in {WINDOW_S:.0f} s" for k, v in missing.items()) + \
                f"; last: {'; '.join(self.last_faults)}"
        if recent.get("future"):
            level = max(level, WARN)
        return common.status(f"{NODE}: decision", level, message, values)

    def close(self) -> None:
        self._running = False
        self.diagnostics.close()
        with self.cond:
            self.cond.notify_all()


def main() -> None:
    memory.keep_frame_buffers()  # before any thread starts
    rospy.init_node(NODE)
    SimplexNode()
    rospy.spin()
