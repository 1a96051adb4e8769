"""What makes the vehicle record: the moments its models did not know, or disagreed.

Triggers (the names in ``index.jsonl``):

* from the simplex's status of a cycle: ``out_of_distribution`` (the monitor's shift, and single
  cycles below ``min_trust``), ``low_confidence``, ``deadline_miss`` (late, missing or a silent
  host), ``engine_error`` (an engine failed, non-finite or invalid outputs). Cycles on the
  advanced path, recovering cycles and cycles without evidence trigger nothing: the models
  were not wrong there, or there is nothing to learn from;
* ``near_field_disagreement``: an obstacle within ``near_field_m`` of the vehicle seen by one
  path only (a baseline obstacle no advanced box accounts for, or an advanced box with no
  baseline obstacle under it);
* ``mark``: an operator's request.

Each trigger has its own rate limit (``min_interval_s``): a site that keeps the models out of
their depth fills the quota with a spread of moments, not one long stretch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import numpy as np

from airside_perception.errors import ConfigError
from airside_perception.simplex import fusion

TRIGGERS = ("out_of_distribution", "low_confidence", "deadline_miss", "engine_error", "near_field_disagreement",
            "mark")

#: The simplex's reasons (SimplexStatus.reason) and the trigger each one is.
REASON_TRIGGERS: Dict[str, str] = {
    "out_of_distribution": "out_of_distribution",
    "low_trust": "out_of_distribution",
    "low_confidence": "low_confidence",
    "deadline_miss": "deadline_miss",
    "stale": "deadline_miss",
    "engine_error": "engine_error",
    "non_finite_output": "engine_error",
    "invalid_report": "engine_error",
}


def status_trigger(active: str, reason: str) -> Optional[str]:
    """The trigger of one simplex decision (``SimplexStatus.active`` / ``reason``), or None."""
    if active == "advanced" and reason in ("ok", "baseline_missing"):
        return None
    return REASON_TRIGGERS.get(reason)


def near_field_disagreement(advanced: np.ndarray, baseline: np.ndarray, near_field_m: float,
                            footprint: Optional[np.ndarray] = None) -> bool:
    """Whether an obstacle within ``near_field_m`` is seen by one path only.

    advanced (A, 7), baseline (B, 7): x, y, z, l, w, h, yaw in base_link."""
    if len(fusion.missed_near_obstacles(advanced, baseline, near_field_m, footprint)):
        return True
    if len(advanced) == 0:
        return False
    fp = fusion.POINT_FOOTPRINT if footprint is None else footprint
    near = np.flatnonzero(fusion.reaches_near_field(advanced, fp, near_field_m))
    if len(near) == 0:
        return False
    if len(baseline) == 0:
        return True
    # an advanced box that holds no baseline obstacle's centre: the baseline saw nothing there
    centres = baseline[:, :2]
    holds = fusion.inside_boxes(centres[None, :, :], advanced[near][:, None, :], 0.5).any(axis=1)
    return bool((~holds).any())


@dataclass(frozen=True)
class TriggerParams:
    """Rate limits (seconds between recordings of one trigger, by name) and the near field."""

    min_interval_s: Mapping[str, float]
    near_field_m: float = 20.0
    #: seconds between the starts of two recordings whatever their triggers (marks excepted): the
    #: disk and the cores the graph needs; a trigger inside an open recording extends it freely
    min_recording_interval_s: float = 0.0

    def __post_init__(self):
        unknown = sorted(set(self.min_interval_s) - set(TRIGGERS))
        if unknown:
            raise ConfigError(f"min_interval_s names unknown triggers {unknown}: the triggers are {list(TRIGGERS)}")
        missing = sorted(set(TRIGGERS) - set(self.min_interval_s))
        if missing:
            raise ConfigError(f"min_interval_s lacks {missing}: give every trigger its rate limit (0 for none)")
        for name, value in self.min_interval_s.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 86400):
                raise ConfigError(f"min_interval_s.{name} = {value!r} must be seconds in [0, 86400]")
        if not self.near_field_m > 0:
            raise ConfigError(f"near_field_m {self.near_field_m} must be positive")
        if not (math.isfinite(self.min_recording_interval_s) and 0 <= self.min_recording_interval_s <= 86400):
            raise ConfigError(f"min_recording_interval_s {self.min_recording_interval_s} must be seconds in [0, 86400]")


class RateLimiter:
    """Lets each trigger through at most once per its interval; counts what it held back."""

    def __init__(self, params: TriggerParams):
        self.params = params
        self._last: Dict[str, float] = {}
        self._start: Optional[float] = None  # when the last recording started
        self.held_back: Dict[str, int] = {t: 0 for t in TRIGGERS}
        self.seen: Dict[str, int] = {t: 0 for t in TRIGGERS}

    def allow(self, triggers: List[str], now_s: float, recording: bool = False) -> List[str]:
        """The triggers among ``triggers`` that may record at ``now_s`` (and marks them used);
        ``recording``: a recording is open (a trigger extends it, no new one starts)."""
        gap = self.params.min_recording_interval_s
        if (not recording and gap and self._start is not None and 0 <= now_s - self._start < gap
                and "mark" not in triggers):
            for t in triggers:
                self.seen[t] += 1
                self.held_back[t] += 1
            return []
        out = []
        for t in triggers:
            self.seen[t] += 1
            last = self._last.get(t)
            if last is not None and now_s - last < self.params.min_interval_s[t] and now_s >= last:
                self.held_back[t] += 1
                continue
            self._last[t] = now_s
            out.append(t)
        if out and not recording and out != ["mark"]:  # operator marks neither wait for nor delay triggers
            self._start = now_s
        return out
