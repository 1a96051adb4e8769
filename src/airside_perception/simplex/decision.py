"""The simplex decision as a pure function: evidence about one cycle in, the choice out.

The advanced path is trusted for a cycle only if its outputs belong to that cloud, arrived by
the deadline, are confident, come from a healthy engine and a live host. Going back from the
baseline to the advanced path takes ``recovery_cycles`` good cycles in a row.

What goes out for the cloud (``choose_output``) is always a path's result for that cloud: the
advanced one when the controller trusts it; else the baseline's; else, with the baseline
missing, the advanced one marked degraded (``baseline_missing``); with neither, no claim at all
(``none`` / ``no_evidence``: no obstacles and an unknown grid, never an empty "all clear").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

from airside_perception.errors import ConfigError

ADVANCED = "advanced"
BASELINE = "baseline"
NONE = "none"
NO_EVIDENCE = "no_evidence"
BASELINE_MISSING = "baseline_missing"


@dataclass(frozen=True)
class SimplexParams:
    deadline_ms: float = 90.0
    min_confidence: float = 0.6
    recovery_cycles: int = 5
    host_timeout_ms: float = 500.0
    near_field_m: float = 20.0
    min_trust: float = 0.5
    ood_cycles: int = 3

    def __post_init__(self):
        if self.deadline_ms <= 0 or self.host_timeout_ms <= 0:
            raise ConfigError("deadline_ms and host_timeout_ms must be positive")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"min_confidence {self.min_confidence} must lie in [0, 1]")
        if self.recovery_cycles < 1:
            raise ConfigError(f"recovery_cycles {self.recovery_cycles} must be at least 1")
        if not 0.0 <= self.min_trust <= 1.0:
            raise ConfigError(f"min_trust {self.min_trust} must lie in [0, 1]")
        if self.ood_cycles < 1:
            raise ConfigError(f"ood_cycles {self.ood_cycles} must be at least 1")


@dataclass(frozen=True)
class Evidence:
    """What the simplex knows about the advanced path for one cloud when it decides.

    has_output: detections and occupancy for this cloud's stamp arrived;
    on_time: they arrived before the deadline; latency_ms: stamp -> arrival of the later one;
    confidence: the lower of the tasks' confidences; engine_error: the host reported a failed
    task for this cloud (text), or ``None``; is_finite: every value finite;
    host_silence_ms: time since the host was last heard from;
    trust: the lowest per-task trust of the host's monitor (1.0 where no monitor is calibrated).
    """

    has_output: bool
    on_time: bool
    latency_ms: float
    confidence: float
    engine_error: Optional[str]
    is_finite: bool
    host_silence_ms: float
    trust: float = 1.0


@dataclass(frozen=True)
class SimplexState:
    active: str = BASELINE
    good_streak: int = 0
    switches: int = 0
    low_trust_streak: int = 0  # cycles in a row whose trust was below min_trust


def fault_of(evidence: Evidence, params: SimplexParams, low_trust_streak: int = 0) -> Optional[str]:
    """The reason not to trust the advanced path this cycle, or None. ``low_trust_streak``
    counts this cycle: the world has changed once it reaches ``ood_cycles``."""
    if evidence.host_silence_ms > params.host_timeout_ms:
        return "stale"
    if evidence.engine_error:
        return "engine_error"
    if not evidence.has_output or not evidence.on_time:
        return "deadline_miss"
    if not evidence.is_finite:
        return "non_finite_output"
    if evidence.confidence < params.min_confidence:
        return "low_confidence"
    if low_trust_streak >= params.ood_cycles:
        return "out_of_distribution"
    return None


def decide(state: SimplexState, evidence: Evidence, params: SimplexParams) -> Tuple[SimplexState, str]:
    """Next state and the reason for it: ``ok``, a fault, or ``recovering k/N``."""
    low_trust = state.low_trust_streak + 1 if evidence.trust < params.min_trust else 0
    fault = fault_of(evidence, params, low_trust)
    if fault is None and low_trust and state.active != ADVANCED:
        fault = "out_of_distribution"  # still outside: no recovery streak starts
    if fault is not None:
        switches = state.switches + (state.active == ADVANCED)
        return SimplexState(BASELINE, 0, switches, low_trust), fault
    if state.active == ADVANCED:
        return replace(state, good_streak=state.good_streak + 1, low_trust_streak=low_trust), "ok"
    streak = state.good_streak + 1
    if streak >= params.recovery_cycles:
        return SimplexState(ADVANCED, streak, state.switches + 1, low_trust), "ok"
    return SimplexState(BASELINE, streak, state.switches, low_trust), f"recovering {streak}/{params.recovery_cycles}"


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
    if not silence_ms <= timeout_ms:  # NaN silence counts as dead
        return f"dead (silent {silence_ms / 1e3:.1f} s)"
    if refused:
        return f"refused: {refused}"
    return "no result by the deadline"
