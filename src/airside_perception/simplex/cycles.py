"""The simplex's cycles without ROS: what arrived for each cloud, which cloud to decide next, and
the evidence and answer for it.

Each cloud opens a cycle keyed by its stamp (nanoseconds). The cycle is due as soon as the
advanced outputs, every task's report and the baseline for that stamp are all in, and at the
latest at ``stamp + deadline_ms`` (+ ``grace_s`` when the baseline is missing). It never waits on
the slower input, nor on a path silent for ``host_timeout_ms`` or one whose node refused the
cloud. A cycle whose cloud the baseline skipped (it keeps only the newest cloud) is superseded
by the newer cycle the baseline did process. A cloud stamped well before the newest one, after
its stamp was decided, means time went back (sim time replayed or looped): the book restarts.

Messages are duck-typed: a path's outputs need ``detections`` (each with ``center``, ``size``,
``yaw``) and grids; a report needs the fields of ``InferenceStatus``. Times are monotonic seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from airside_perception.errors import ConfigError
from airside_perception.simplex.decision import (
    ADVANCED,
    BASELINE,
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
from airside_perception.stats import CLOCK_JUMP_S

KEEP_CYCLES_S = 3.0  # decided cycles are forgotten this long after their deadline
PARTS = ("advanced", "advanced_grid", "baseline", "baseline_grid")


@dataclass
class Cycle:
    """Everything received for one cloud stamp, with arrival times (monotonic seconds)."""

    stamp_ns: int
    frame_id: str = "base_link"
    deadline: float = 0.0
    tasks: Tuple[str, ...] = ()  # the tasks the host is configured to run
    advanced: Any = None
    advanced_grid: Any = None
    reports: List[Any] = field(default_factory=list)  # every report for this cloud, any process
    baseline: Any = None
    baseline_grid: Any = None
    arrivals: Dict[str, float] = field(default_factory=dict)
    refused: Dict[str, str] = field(default_factory=dict)  # path -> why its node refused the cloud

    def reported_tasks(self) -> set:
        return {t for r in self.reports for t in r.tasks}

    def advanced_complete(self) -> bool:
        return self.advanced is not None and self.advanced_grid is not None and bool(self.reports) \
            and self.reported_tasks() >= set(self.tasks)

    def baseline_complete(self) -> bool:
        return self.baseline is not None and self.baseline_grid is not None


@dataclass(frozen=True)
class Decision:
    """One cycle decided: the answer, the evidence it rests on and every fault seen."""

    cycle: Cycle
    output: Output
    evidence: Evidence
    missing: Dict[str, Optional[str]]
    faults: List[str]
    shift: str  # the statistic that put a task out of distribution this cycle, or ""


class CycleBook:
    """The open cycles, fed by the node's callbacks (under the node's lock) and asked which is due."""

    def __init__(self, params: SimplexParams, tasks: Tuple[str, ...], grace_s: float, max_future_ms: float):
        self.params, self.tasks, self.grace_s, self.max_future_ms = params, tuple(tasks), grace_s, max_future_ms
        self.cycles: Dict[int, Cycle] = {}
        self.last_decided_ns = self.newest_baseline_ns = self.newest_stamp_ns = 0
        self.last_report = self.last_baseline = -1e6  # monotonic seconds of the last news from each path
        self.clock_jumps = 0
        self.late_reports: List[Any] = []  # reports of clouds already decided: they count in the next decision

    def open(self, stamp_ns: int, frame_id: str, age_s: float, now: float, from_cloud: bool = True) -> Optional[Cycle]:
        """The cycle of ``stamp_ns``, opened if new. A result whose cloud was not seen opens one only
        on this timeline: after a clock jump back, late results of the old one must not."""
        if stamp_ns <= self.last_decided_ns:
            return self.cycles.get(stamp_ns)
        cycle = self.cycles.get(stamp_ns)
        if cycle is None:
            if not from_cloud and (-age_s * 1e3 > self.max_future_ms
                                   or stamp_ns < self.newest_stamp_ns - int(CLOCK_JUMP_S * 1e9)):
                return None
            cycle = Cycle(stamp_ns, frame_id, now + self.params.deadline_ms / 1e3 - age_s, self.tasks)
            if age_s * 1e3 > self.params.deadline_ms:  # past its deadline on arrival: nobody can answer in time
                late = f"stale: the cloud reached the simplex {age_s * 1e3:.0f} ms after its stamp"
                cycle.refused.update({ADVANCED: late, BASELINE: late})
            self.cycles[stamp_ns] = cycle
        return cycle

    def on_cloud(self, stamp_ns: int, frame_id: str, age_s: float, now: float) -> Optional[str]:
        """Opens the cloud's cycle; returns why time went back when it restarted the book, else None."""
        jumped = None
        if self.newest_stamp_ns and (self.newest_stamp_ns - stamp_ns) / 1e9 > CLOCK_JUMP_S \
                and stamp_ns <= self.last_decided_ns:
            jumped = f"a cloud stamped {(self.newest_stamp_ns - stamp_ns) / 1e9:.1f} s before the newest one"
            self.restart()
        self.newest_stamp_ns = max(self.newest_stamp_ns, stamp_ns)
        self.open(stamp_ns, frame_id, age_s, now)
        return jumped

    def restart(self) -> None:
        self.clock_jumps += 1
        self.cycles.clear()
        self.late_reports = []
        self.last_decided_ns = self.newest_baseline_ns = self.newest_stamp_ns = 0

    def on_refused(self, path: str, stamp_ns: int, why: str, now: float) -> None:
        if path == ADVANCED:  # a refusal is news from a live node
            self.last_report = now
        else:
            self.last_baseline = now
        cycle = self.cycles.get(stamp_ns)
        if cycle is not None:
            cycle.refused[path] = why

    def on_part(self, part: str, msg: Any, stamp_ns: int, frame_id: str, age_s: float, now: float) -> None:
        """``part``: one of PARTS, or ``report`` for the host's status of the cloud."""
        if part == "report":
            self.last_report = now
            if stamp_ns <= self.last_decided_ns and stamp_ns in self.cycles:
                self.late_reports.append(msg)  # its cloud went out already: it counts in the next decision
                return
        elif part.startswith("baseline"):
            self.last_baseline = now
        cycle = self.open(stamp_ns, frame_id, age_s, now, from_cloud=False)
        if cycle is None:
            return
        if part == "report":  # every report counts, from every hosting process
            cycle.reports.append(msg)
            cycle.arrivals.setdefault(part, now)
        elif getattr(cycle, part) is None:
            setattr(cycle, part, msg)
            cycle.arrivals[part] = now
            if part.startswith("baseline") and cycle.baseline_complete():
                self.newest_baseline_ns = max(self.newest_baseline_ns, stamp_ns)

    def next_due(self, now: float) -> Tuple[Optional[Cycle], float]:
        """The newest decidable cycle (older undecided ones are superseded), or None and how long to wait."""
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
            return None, max(0.001, min(pending) - now) if pending else 0.1
        cycle = due[-1]
        self.last_decided_ns = cycle.stamp_ns
        for k in [k for k, c in self.cycles.items() if (now - c.deadline) > KEEP_CYCLES_S]:
            del self.cycles[k]
        return cycle, 0.0

    def decide(self, state: SimplexState, cycle: Cycle, now: float) -> Tuple[SimplexState, Decision]:
        """The controller's step for ``cycle`` and the answer that goes out for its cloud. Reports
        that came in after their own cloud was decided count here: a process that reports an error,
        low confidence or low trust late still takes the advanced path off."""
        if self.late_reports:
            cycle.reports.extend(self.late_reports)
            self.late_reports = []
        evidence, shift = evidence_of(cycle, now, self.last_report, self.params.min_trust)
        state, reason = decide(state, evidence, self.params)
        if reason == "engine_error" and "non-finite" in (evidence.engine_error or ""):
            reason = "non_finite_output"
        missing = {
            ADVANCED: why_missing(cycle.advanced_complete(), (now - self.last_report) * 1e3,
                                  self.params.host_timeout_ms, cycle.refused.get(ADVANCED)),
            BASELINE: why_missing(cycle.baseline_complete(), (now - self.last_baseline) * 1e3,
                                  self.params.host_timeout_ms, cycle.refused.get(BASELINE))}
        output = choose_output(state, reason, missing[ADVANCED], missing[BASELINE])
        return state, Decision(cycle, output, evidence, missing, cycle_faults(reason, evidence, missing), shift)


def boxes_of(msg: Any) -> np.ndarray:
    """(N, 7) x, y, z, length, width, height, yaw of a detections message (None: no boxes)."""
    if msg is None or not msg.detections:
        return np.zeros((0, 7))
    return np.array([[d.center.x, d.center.y, d.center.z, d.size.x, d.size.y, d.size.z, d.yaw]
                     for d in msg.detections])


def evidence_of(cycle: Cycle, now: float, last_report: float, min_trust: float) -> Tuple[Evidence, str]:
    """What the cycle's reports and outputs say about the advanced path, and the statistic that put
    a task below ``min_trust`` (or "")."""
    reports, shift = [], ""
    for r in cycle.reports:
        for k, task in enumerate(r.tasks):
            reports.append(TaskReport(task, float(r.confidences[k]) if k < len(r.confidences) else float("nan"),
                                      float(r.trust[k]) if k < len(r.trust) else 1.0,
                                      r.errors[k] if k < len(r.errors) else ""))
        if r.trust and min(r.trust) < min_trust:
            k = int(np.argmin(r.trust))
            if k < len(r.ood_worst):
                shift = f"{r.tasks[k]}: {r.ood_worst[k]} (score {r.ood_scores[k]:.2f})"
    confidence, trust, errors, invalid = merge_reports(reports, cycle.tasks)
    arrived = [cycle.arrivals.get(p) for p in ("advanced", "advanced_grid")]
    on_time = all(a is not None and a <= cycle.deadline for a in arrived)
    latencies = [float(r.latency_ms) for r in cycle.reports]
    latency_ms = float("nan") if not latencies or any(v != v for v in latencies) else max(latencies)
    boxes = boxes_of(cycle.advanced)
    return Evidence(has_output=cycle.advanced_complete(), on_time=on_time, latency_ms=latency_ms,
                    confidence=confidence, engine_error=errors, is_finite=bool(np.isfinite(boxes).all()),
                    host_silence_ms=(now - last_report) * 1e3, trust=trust, invalid=invalid), shift


def same_geometry(a: Any, b: Any) -> bool:
    """Two grids (``MapMetaData``-like) of the same cells: size, resolution and origin."""
    return (a.width == b.width and a.height == b.height and abs(a.resolution - b.resolution) < 1e-6
            and abs(a.origin.position.x - b.origin.position.x) < 1e-6
            and abs(a.origin.position.y - b.origin.position.y) < 1e-6)


def check_deadline(deadline_ms: float, grace_ms: float, budget) -> None:
    """The decision must be out inside the cycle: deadline plus grace within the time the budget
    leaves to perception (the cycle less tracking, localization, planning and safety monitoring)."""
    downstream = sum(budget.stage(s) for s in ("tracking", "localization", "planning", "safety_monitoring"))
    perception_ms = budget.cycle_ms - downstream
    if deadline_ms + grace_ms > perception_ms:
        raise ConfigError(f"deadline_ms {deadline_ms:g} + decision_grace_ms {grace_ms:g} = {deadline_ms + grace_ms:g} "
                          f"ms ends after the {perception_ms:g} ms that config/budget.yaml leaves to perception "
                          f"(cycle {budget.cycle_ms:g} ms less {downstream:g} ms downstream): lower deadline_ms")
