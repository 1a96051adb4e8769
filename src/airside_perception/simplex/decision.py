"""The simplex decision as a pure function: evidence about one cycle in, the choice out.

Leave at once, come back slowly. Any fault in a cycle takes the advanced path off for that
cycle: a late, missing or failing task, a value that is not a number in its range (NaN, infinite
or negative confidence, trust or latency), low confidence, low trust. The distribution-shift rule
looks at a window: ``ood_in_window`` low-trust cycles among the last ``ood_window`` (or
``ood_cycles`` in a row) mean the world has changed (``out_of_distribution``), and no recovery
starts while that holds. Returning takes ``recovery_cycles`` good cycles in a row, doubled for
every further fault episode (faulty cycles in a row) among the last ``FAULT_MEMORY_CYCLES``
cycles (at most ``max_recovery_cycles``), so that a periodic fault cannot make the source
alternate.

What goes out for the cloud (``choose_output``) is always a path's result for that cloud: the
advanced one when the controller trusts it; else the baseline's; else, with the baseline
missing, the advanced one marked degraded (``baseline_missing``); with neither, no claim at all
(``none`` / ``no_evidence``: no obstacles and an unknown grid, never an empty "all clear").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from airside_perception.errors import ConfigError

ADVANCED = "advanced"
BASELINE = "baseline"
NONE = "none"
NO_EVIDENCE = "no_evidence"
BASELINE_MISSING = "baseline_missing"
#: Faults this many cycles back no longer lengthen the way back to the advanced path.
FAULT_MEMORY_CYCLES = 100


@dataclass(frozen=True)
class SimplexParams:
    """Thresholds of the decision. Every gate stays meaningful: no range switches one off."""

    deadline_ms: float = 75.0
    min_confidence: float = 0.6
    recovery_cycles: int = 5
    host_timeout_ms: float = 500.0
    near_field_m: float = 20.0
    min_trust: float = 0.5
    ood_cycles: int = 3
    ood_window: int = 10
    ood_in_window: int = 3
    max_recovery_cycles: int = 80

    def __post_init__(self):
        if not (self.deadline_ms > 0 and self.host_timeout_ms > 0):
            raise ConfigError("deadline_ms and host_timeout_ms must be positive")
        for name in ("min_confidence", "min_trust"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} = {value} must lie inside (0, 1): 0 would switch the gate off, "
                                  "1 would never trust the advanced path")
        if not self.near_field_m > 0:
            raise ConfigError(f"near_field_m = {self.near_field_m} must be positive: 0 would switch the "
                              "baseline's safety net off")
        if not 1 <= self.recovery_cycles <= self.max_recovery_cycles:
            raise ConfigError(f"recovery_cycles {self.recovery_cycles} must lie in [1, max_recovery_cycles "
                              f"{self.max_recovery_cycles}]")
        if self.ood_cycles < 1 or not 1 <= self.ood_in_window <= self.ood_window:
            raise ConfigError(f"ood_cycles {self.ood_cycles} must be >= 1 and ood_in_window {self.ood_in_window} "
                              f"within [1, ood_window {self.ood_window}]")


@dataclass(frozen=True)
class TaskReport:
    """One task's report for one cloud, from whichever process hosts it."""

    task: str
    confidence: float
    trust: float = 1.0
    error: str = ""


@dataclass(frozen=True)
class Evidence:
    """What the simplex knows about the advanced path for one cloud when it decides.

    has_output: detections and occupancy for this cloud's stamp arrived;
    on_time: they arrived before the deadline; latency_ms: stamp -> arrival of the later one;
    confidence: the lowest of the tasks' confidences; engine_error: the host reported a failed
    task for this cloud (text), or ``None``; is_finite: every output value finite;
    host_silence_ms: time since the host was last heard from;
    trust: the lowest per-task trust of the host's monitor (1.0 where no monitor is calibrated);
    invalid: values that are not numbers in their range, or configured tasks without a report,
    each named (``detection: nan_confidence``, ``occupancy: missing``).
    """

    has_output: bool
    on_time: bool
    latency_ms: float
    confidence: float
    engine_error: Optional[str]
    is_finite: bool
    host_silence_ms: float
    trust: float = 1.0
    invalid: Tuple[str, ...] = ()


@dataclass(frozen=True)
class SimplexState:
    active: str = BASELINE
    good_streak: int = 0
    switches: int = 0
    low_trust_streak: int = 0  # cycles in a row whose trust was below min_trust
    trust_history: Tuple[bool, ...] = ()  # low trust in each of the last ood_window cycles
    cycle: int = 0  # cycles decided
    fault_cycles: Tuple[int, ...] = ()  # where recent fault episodes began (within FAULT_MEMORY_CYCLES)
    last_fault: int = -FAULT_MEMORY_CYCLES  # the last faulty cycle

    def required_good_cycles(self, params: SimplexParams) -> int:
        """Good cycles in a row needed to return: doubled for every fault episode (faulty cycles
        in a row) after the first one among the last ``FAULT_MEMORY_CYCLES`` cycles."""
        repeats = max(0, len(self.fault_cycles) - 1)
        return int(min(params.max_recovery_cycles, params.recovery_cycles * 2 ** min(repeats, 16)))


def _bad_number(value: float, lo: float, hi: float) -> Optional[str]:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "infinite"
    if value < lo:
        return "negative" if value < 0 else "out_of_range"
    if value > hi:
        return "out_of_range"
    return None


def merge_reports(reports: Sequence[TaskReport], tasks: Sequence[str]) -> Tuple[float, float, Optional[str],
                                                                                 Tuple[str, ...]]:
    """Every report for one cloud, from every hosting process, against the ``tasks`` the host is
    configured to run: (lowest confidence, lowest trust, errors, invalid values and missing
    tasks named). A task reported twice counts with its worst report."""
    invalid: List[str] = []
    errors: List[str] = []
    confidence, trust = 1.0, 1.0
    seen = set()
    for r in reports:
        seen.add(r.task)
        if r.error:
            errors.append(f"{r.task}: {r.error}")
        for name, value in (("confidence", r.confidence), ("trust", r.trust)):
            problem = _bad_number(float(value), 0.0, 1.0)
            if problem:
                invalid.append(f"{r.task}: {problem}_{name}")
        if not math.isnan(r.confidence):
            confidence = min(confidence, float(r.confidence))
        if not math.isnan(r.trust):
            trust = min(trust, float(r.trust))
    invalid.extend(f"{t}: missing" for t in tasks if t not in seen)
    if not reports:
        confidence = 0.0
    return confidence, trust, "; ".join(errors) or None, tuple(invalid)


def fault_of(evidence: Evidence, params: SimplexParams) -> Optional[str]:
    """The reason not to trust the advanced path this cycle, or None; ``low_trust`` for a cycle
    below ``min_trust`` (``decide`` turns it into ``out_of_distribution`` over a window)."""
    if not evidence.host_silence_ms <= params.host_timeout_ms:  # NaN counts as silent
        return "stale"
    if evidence.engine_error:
        return "engine_error"
    if not evidence.has_output or not evidence.on_time or any(i.endswith(": missing") for i in evidence.invalid):
        return "deadline_miss"
    if (evidence.invalid or _bad_number(float(evidence.latency_ms), 0.0, math.inf)
            or _bad_number(float(evidence.confidence), 0.0, 1.0) or _bad_number(float(evidence.trust), 0.0, 1.0)):
        return "invalid_report"
    if not evidence.is_finite:
        return "non_finite_output"
    if not evidence.confidence >= params.min_confidence:
        return "low_confidence"
    if not evidence.trust >= params.min_trust:
        return "low_trust"
    return None


def decide(state: SimplexState, evidence: Evidence, params: SimplexParams) -> Tuple[SimplexState, str]:
    """Next state and the reason for it: ``ok``, a fault, or ``recovering k/N``."""
    low = not evidence.trust >= params.min_trust
    history = (state.trust_history + (low,))[-params.ood_window:]
    streak = state.low_trust_streak + 1 if low else 0
    shifted = sum(history) >= params.ood_in_window or streak >= params.ood_cycles
    cycle = state.cycle + 1
    recent_faults = tuple(c for c in state.fault_cycles if cycle - c < FAULT_MEMORY_CYCLES)
    fault = fault_of(evidence, params)
    if fault == "low_trust" and shifted:
        fault = "out_of_distribution"
    if fault is None and shifted:
        fault = "out_of_distribution"  # the window still holds: no recovery starts
    if fault is not None:
        episodes = recent_faults if state.last_fault == cycle - 1 else recent_faults + (cycle,)
        return SimplexState(BASELINE, 0, state.switches + (state.active == ADVANCED), streak, history, cycle,
                            episodes, cycle), fault
    base = replace(state, low_trust_streak=streak, trust_history=history, cycle=cycle, fault_cycles=recent_faults)
    if state.active == ADVANCED:
        return replace(base, good_streak=state.good_streak + 1), "ok"
    good = state.good_streak + 1
    required = base.required_good_cycles(params)
    if good >= required:
        return replace(base, active=ADVANCED, good_streak=good, switches=state.switches + 1), "ok"
    return replace(base, good_streak=good), f"recovering {good}/{required}"


@dataclass(frozen=True)
class Output:
    """What the simplex publishes for one cloud: ``source`` advanced | baseline | none, and the
    reason the status gives (the controller's, or ``baseline_missing`` / ``no_evidence``)."""

    source: str
    reason: str

    @property
    def is_degraded(self) -> bool:
        return self.reason == BASELINE_MISSING


def choose_output(state: SimplexState, reason: str, advanced_missing: Optional[str],
                  baseline_missing: Optional[str]) -> Output:
    """The source of this cloud's obstacles and grid, after ``decide``.

    ``advanced_missing`` / ``baseline_missing``: ``None`` when that path's result for this very
    cloud is in hand, else why not (dead, late, refused, ...). Only a path with a result can be
    published; the controller's choice wins when its path has one.
    """
    if state.active == ADVANCED and advanced_missing is None:
        return Output(ADVANCED, reason)
    if baseline_missing is None:
        return Output(BASELINE, reason)
    if advanced_missing is None:
        return Output(ADVANCED, BASELINE_MISSING)
    return Output(NONE, NO_EVIDENCE)


def why_missing(has_result: bool, silence_ms: float, timeout_ms: float, refused: Optional[str]) -> Optional[str]:
    """Why a path has no result for a cloud when the simplex decides, or ``None`` when it has one:
    ``dead`` (silent longer than ``timeout_ms``), ``refused: <why>`` (the node announced it),
    or no result by the decision (late, or the cloud was skipped)."""
    if has_result:
        return None
    if refused:  # announced by the node itself: it is alive
        return f"refused: {refused}"
    if not silence_ms <= timeout_ms:  # NaN silence counts as dead
        return f"dead (silent {silence_ms / 1e3:.1f} s)"
    return "no result by the deadline"


def cycle_faults(reason: str, evidence: Evidence, missing: Dict[str, Optional[str]]) -> List[str]:
    """Every fault seen in a cycle, ``<path>: <what>``: the controller's, each invalid value, and
    each missing path with its cause."""
    faults = []
    if reason != "ok" and not reason.startswith("recovering"):
        faults.append(f"advanced: {reason}")
    faults.extend(evidence.invalid)
    faults.extend(f"{path}: {why}" for path, why in missing.items() if why)
    return faults
