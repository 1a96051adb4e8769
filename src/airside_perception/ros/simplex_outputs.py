"""The simplex's messages for one decided cycle, and its ``simplex: decision`` diagnostic task.

Obstacles and the safety grid come from the source the decision chose, for that very cloud:
the advanced result (with near-field baseline obstacles it missed, ``fused``), the baseline's,
or nothing at all under ``no_evidence``: an empty list with source ``none`` and a grid of
unknown (-1) cells, never an "all clear". Grids of another geometry are never merged by index.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import rospy
from std_msgs.msg import Header

from airside_perception.msg import Detection3DArray, SimplexStatus
from airside_perception.ros import common, messages
from airside_perception.ros.diagnostics import StatusTask
from airside_perception.simplex import fusion
from airside_perception.simplex.cycles import Decision, boxes_of, same_geometry
from airside_perception.simplex.decision import ADVANCED, BASELINE, NONE
from airside_perception.stats import ERROR, WARN, budget_level

#: Grid of a no_evidence answer before any path has published one: the advanced grid's geometry.
DEFAULT_GRID = (200, 0.4, -40.0)  # cells per side, metres per cell, origin (both axes)
WINDOW_S = 10.0  # decisions counted for the diagnostic's level
#: Obstacles source of a degraded answer (status reason baseline_missing): the advanced result of a
#: path the simplex distrusts, published because the baseline has none for the cloud. A fault.
DEGRADED = "advanced_degraded"


class Outputs:
    """Builds the obstacles, safety grid and status of a decision; keeps the last grid geometry
    seen (for unknown grids) and the near-field mask of each geometry."""

    def __init__(self, near_field_m: float, footprint: np.ndarray):
        self.near_field_m, self.footprint = near_field_m, footprint
        self.grid_geometry = None  # MapMetaData of the last grid received
        self._mask_key, self._mask = None, None

    def obstacles(self, d: Decision, header: Header) -> Detection3DArray:
        """This cloud's obstacles from the chosen source; never another cloud's."""
        cycle, source = d.cycle, d.output.source
        if source == ADVANCED and d.output.is_degraded:  # a distrusted result, no baseline to check it: say so
            out = Detection3DArray(header=header, source=DEGRADED, model_version=cycle.advanced.model_version,
                                   detections=list(cycle.advanced.detections))
        elif source == ADVANCED:
            out = Detection3DArray(header=header, source="advanced", model_version=cycle.advanced.model_version,
                                   detections=list(cycle.advanced.detections))
            if cycle.baseline is not None:
                missed = fusion.missed_near_obstacles(boxes_of(cycle.advanced), boxes_of(cycle.baseline),
                                                      self.near_field_m, self.footprint)
                if len(missed):
                    out.detections.extend(cycle.baseline.detections[i] for i in missed)
                    out.source = "fused"
        elif source == BASELINE:
            out = Detection3DArray(header=header, source="baseline", model_version=cycle.baseline.model_version,
                                   detections=list(cycle.baseline.detections))
        else:  # no path looked at this cloud: say so, claim nothing
            out = Detection3DArray(header=header, source=NONE, model_version="", detections=[])
        out.latency_ms = float((rospy.Time.now() - header.stamp).to_sec() * 1e3)
        return out

    def grid(self, d: Decision, header: Header) -> Tuple[object, str, Optional[str]]:
        """The safety grid from the obstacles' source, where it came from, and a fault when the
        baseline's grid could not be merged."""
        source, base, adv = d.output.source, d.cycle.baseline_grid, d.cycle.advanced_grid
        chosen = adv if source == ADVANCED else base if source == BASELINE else None
        if chosen is None:
            return self.unknown_grid(header), NONE, None
        grid = messages.NumpyOccupancyGrid(header=header, info=chosen.info, data=np.asarray(chosen.data, np.int8))
        if source != ADVANCED or base is None:
            return grid, source, None
        fault = self.grid_fault(d)
        if fault:
            return grid, source, fault
        shape = (adv.info.height, adv.info.width)
        grid.data = fusion.merge_grids(np.asarray(adv.data, np.int8).reshape(shape),
                                       np.asarray(base.data, np.int8).reshape(shape),
                                       self._near_mask(adv.info)).reshape(-1)
        return grid, "fused", None

    @staticmethod
    def grid_fault(d: Decision) -> Optional[str]:
        """Why the baseline's grid cannot be merged into the advanced one this cycle, or None."""
        base, adv = d.cycle.baseline_grid, d.cycle.advanced_grid
        if d.output.source != ADVANCED or base is None or adv is None or same_geometry(base.info, adv.info):
            return None
        b, a = base.info, adv.info
        return (f"baseline: grid geometry differs ({b.width}x{b.height} cells of {b.resolution:g} m at "
                f"({b.origin.position.x:g}, {b.origin.position.y:g}) against {a.width}x{a.height} of "
                f"{a.resolution:g} m at ({a.origin.position.x:g}, {a.origin.position.y:g})): not merged; "
                "configure the baseline's occupancy like the engines'")

    def _near_mask(self, info) -> np.ndarray:
        key = (info.width, info.height, round(info.resolution, 6), round(info.origin.position.x, 6))
        if self._mask_key != key:
            self._mask_key = key
            self._mask = fusion.near_field_mask(info.width, info.resolution, info.origin.position.x,
                                                self.near_field_m, self.footprint)
        return self._mask

    def unknown_grid(self, header: Header):
        info = self.grid_geometry
        if info is not None:
            return messages.NumpyOccupancyGrid(header=header, info=info, data=np.full(info.width * info.height, -1,
                                                                                      np.int8))
        size, resolution_m, origin_m = DEFAULT_GRID
        return messages.occupancy_msg(header, np.full((size, size), -1, np.int8), resolution_m, origin_m, origin_m)

    @staticmethod
    def no_input(header: Header, switches: int) -> SimplexStatus:
        return SimplexStatus(header=header, active=NONE, reason="no_input", advanced_latency_ms=-1.0, switches=switches,
                             decision_latency_ms=-1.0, grid_source=NONE, faults=["input: no cloud for over 1 s"])

    @staticmethod
    def status(d: Decision, header: Header, switches: int, decision_latency_ms: float, grid_source: str,
               faults) -> SimplexStatus:
        latency = d.evidence.latency_ms
        return SimplexStatus(header=header, active=d.output.source, reason=d.output.reason,
                             advanced_latency_ms=latency if np.isfinite(latency) else -1.0,
                             advanced_confidence=d.evidence.confidence, switches=switches,
                             decision_latency_ms=decision_latency_ms, grid_source=grid_source, faults=faults)


class DecisionTask(StatusTask):
    """``simplex: decision``: mode, reasons, faults, decision time against the safety-monitoring budget."""

    def __init__(self, node):
        super().__init__("decision")  # diagnostic_updater names it "<node>: decision"
        self.node = node
        self.reasons: Dict[str, int] = {}
        self.last_faults, self.last_reason, self.last_shift = [], "no_input", ""

    def note(self, d: Decision, faults, grid_fault: Optional[str]) -> None:
        """Counts one decided cycle: its reason, faults and every path without a result."""
        recent = self.node.recent
        if grid_fault:
            recent.add("grid_geometry", grid_fault)
        key = d.output.reason.split(" ")[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1
        recent.add(key, "; ".join(faults))
        for path, why in d.missing.items():  # a path without a result is a fault, whoever drives
            if why:
                recent.add(f"{path} missing", f"{path}: {why}")
        self.last_reason, self.last_faults, self.last_shift = d.output.reason, faults, d.shift or self.last_shift

    def report(self):
        n = self.node
        budget = n.budget.stage("safety_monitoring")
        decision = n.times.percentiles("decision")
        level = budget_level(decision.p99 if decision else float("nan"), budget, n.budget.warn_factor,
                             n.budget.error_factor)
        recent = n.recent.recent()
        values: Dict[str, object] = {
            "active": n.state.active, "last reason": self.last_reason,
            "last faults": "; ".join(self.last_faults) or "none",
            "switches": n.state.switches, "budget (ms)": budget, "clock jumps back": n.book.clock_jumps,
            "last distribution shift": self.last_shift or "none seen",
            **{f"cycles {k} (total)": v for k, v in sorted(self.reasons.items())},
            **{f"{k} (last {WINDOW_S:.0f} s)": v for k, v in sorted(recent.items())}}
        values.update(common.percentile_values("decision", decision))
        values.update(common.percentile_values("stamp to decision", n.times.percentiles("stamp_to_decision")))
        message = f"{n.state.active} ({self.last_reason}), {n.state.switches} switches"
        if n.state.active != ADVANCED:
            level = max(level, WARN)
        missing = {k: v for k, v in recent.items() if k in ("no_evidence", "baseline_missing", "grid_geometry",
                                                             "advanced missing", "baseline missing")}
        if missing:  # the safety output had no evidence, or no baseline behind it: a fault to fix
            level = ERROR
            message = ", ".join(f"{k} on {v} cycles in {WINDOW_S:.0f} s" for k, v in missing.items()) + \
                f"; last: {'; '.join(self.last_faults)}"
        if recent.get("future"):
            level = max(level, WARN)
        return level, message, values
