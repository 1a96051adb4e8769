"""Swap validation: a loaded candidate against the serving engine, on golden inputs.

Checks, in order: outputs finite, output shapes equal to the serving engine's, agreement with
the serving engine within the candidate manifest's tolerance, and latency. Latency is judged
against the stage's budget in this graph: both engines run side by side on the same clouds, in
the gaps between the host's frames (so both see the same load), which gives the candidate's
time as a ratio of the serving engine's; that ratio times the serving engine's live P99 in the
running graph is the candidate's projected P99 here. A candidate is refused only when the
projection exceeds the task's budget times ``max_latency_factor`` and it is slower than the
serving engine beyond timing noise (``SAME_SPEED``): an older, slower version that fits the
budget is accepted (the usual OTA rollback), and a copy of the serving engine is never refused
because the machine is busy, even where the serving engine itself runs over budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from airside_perception.engines.manifest import detection_grid_problem
from airside_perception.errors import InferenceError
from airside_perception.ops.bev import BevInput, encode
from airside_perception.pipelines.tasks import TaskEngine, TaskResult
from airside_perception.stats import Percentiles

WARMUP_RUNS = 2
TIMED_RUNS = 16
SAME_SPEED = 1.25  # within this ratio a candidate counts as no slower (paired timing noise on a busy machine)
YIELD_FRACTION = 1.0  # after each validation run, idle as long as it took


@dataclass(frozen=True)
class ValidationReport:
    is_passed: bool
    message: str
    agreement: float
    p99_ms: float
    ratio: float = float("nan")  # median candidate / serving time, side by side
    projected_p99_ms: float = float("nan")  # ratio x the serving engine's live P99 in this graph
    limit_ms: float = float("nan")  # the task's budget x max_latency_factor


@dataclass(frozen=True)
class Projection:
    """The candidate's P99 in this graph, from its side-by-side ratio and the serving engine's
    live P99, against the stage's budget."""

    ratio: float
    serving_live_p99_ms: float
    budget_ms: float
    factor: float

    @property
    def p99_ms(self) -> float:
        return self.ratio * self.serving_live_p99_ms

    @property
    def limit_ms(self) -> float:
        return self.budget_ms * self.factor

    def problem(self) -> str:
        """Why the candidate does not fit ('' when it does)."""
        if self.p99_ms <= self.limit_ms or self.ratio <= SAME_SPEED:
            return ""
        return (f"projected P99 {self.p99_ms:.1f} ms in this graph ({self.ratio:.2f}x the serving engine's live "
                f"P99 of {self.serving_live_p99_ms:.1f} ms), over the budget of {self.limit_ms:.1f} ms "
                f"({self.budget_ms:g} ms x {self.factor:g})")

    def describe(self) -> str:
        over = (f"; the serving engine itself is over budget here, and the candidate is no slower (within "
                f"{SAME_SPEED}x)" if self.p99_ms > self.limit_ms else "")
        return (f"projected P99 {self.p99_ms:.1f} ms against a budget of {self.limit_ms:.1f} ms "
                f"({self.ratio:.2f}x the serving engine's live P99 of {self.serving_live_p99_ms:.1f} ms){over}")


def _agreement(task: str, a: TaskResult, b: TaskResult) -> float:
    if task == "segmentation":
        labelled = a.labels != 255
        return float((a.labels[labelled] == b.labels[labelled]).mean()) if labelled.any() else 1.0
    if task == "detection":
        return _detection_f1(a, b)
    occ_a, occ_b = a.grid.cells == 100, b.grid.cells == 100
    union = (occ_a | occ_b).sum()
    return float((occ_a & occ_b).sum() / union) if union else 1.0


def _detection_f1(a: TaskResult, b: TaskResult, match_m: float = 1.0) -> float:
    """F1 of one engine's boxes against the other's: same class, centres within ``match_m``."""
    if len(a.boxes.boxes) == 0 and len(b.boxes.boxes) == 0:
        return 1.0
    matched = 0
    for box, label in zip(a.boxes.boxes, a.boxes.labels):
        same = b.boxes.boxes[b.boxes.labels == label]
        if len(same) and np.hypot(*(same[:, :2] - box[:2]).T).min() <= match_m:
            matched += 1
    return 2 * matched / (len(a.boxes.boxes) + len(b.boxes.boxes))


def _shape_problem(candidate: TaskEngine, name: str, got: Sequence[int], serving: Sequence[int]) -> str:
    """Why an output of the candidate cannot replace the serving engine's ('' when it can). A
    detector may change its grid (0.8 m -> 0.4 m) as its manifest's stride says: the boxes, not
    the maps, leave the engine; its classes and box fields must stay."""
    got, serving = tuple(got), tuple(serving)
    if candidate.task == "detection" and len(got) == len(serving) == 4 and got[:2] == serving[:2]:
        return detection_grid_problem(candidate.manifest, name, got)
    if got != serving:
        return f"output '{name}' has shape {list(got)}, the serving engine's is {list(serving)}"
    return ""


TOLERANCE_KEYS = {"segmentation": "min_label_agreement", "detection": "min_detection_f1",
                  "occupancy": "min_occupied_iou"}


def validate_candidate(candidate: TaskEngine, serving: TaskEngine, clouds: Sequence[np.ndarray],
                       budget_ms: float, max_latency_factor: float,
                       between_frames: Optional[Callable[[], None]] = None,
                       serving_live_p99_ms: Optional[float] = None) -> ValidationReport:
    """Runs ``candidate`` and ``serving`` on ``clouds``; never raises for a bad candidate.
    ``serving_live_p99_ms``: the serving engine's P99 in the running graph (None: its P99 side
    by side here, as when no frames have run yet).
    ``between_frames`` blocks until the host is between two frames: every run, warm-up and
    agreement runs included, goes into such a gap, one at a time, each followed by a pause as
    long as itself, so the serving frames keep the cores."""
    wait = between_frames or (lambda: None)

    def gently(fn, *args):
        """One run in a gap between the host's frames, then as long again left to the frames."""
        wait()
        start = time.perf_counter()
        out = fn(*args)
        elapsed = time.perf_counter() - start
        time.sleep(elapsed * YIELD_FRACTION)
        return out, elapsed * 1e3

    task = candidate.task
    inputs: List[BevInput] = [encode(c, serving.bev_spec) for c in clouds]
    try:
        for _ in range(WARMUP_RUNS):
            for x in inputs:
                gently(candidate.run, x)
        candidate_out = [gently(candidate.run, x)[0] for x in inputs]
        candidate_raw = gently(candidate.backend.infer, candidate.feeds(inputs[0]))[0]
    except InferenceError as exc:
        return ValidationReport(False, f"candidate failed on the golden inputs: {exc}", 0.0, float("nan"))
    serving_raw = gently(serving.backend.infer, serving.feeds(inputs[0]))[0]
    for name, value in serving_raw.items():
        problem = _shape_problem(candidate, name, candidate_raw[name].shape, value.shape)
        if problem:
            return ValidationReport(False, problem, 0.0, float("nan"))
    serving_out = [gently(serving.run, x)[0] for x in inputs]
    agreement = min(_agreement(task, c, s) for c, s in zip(candidate_out, serving_out))
    key = TOLERANCE_KEYS[task]
    needed = float(candidate.manifest.validation.get(key, 0.0))
    times: List[float] = []
    serving_times: List[float] = []
    for k in range(TIMED_RUNS):  # side by side, so both see the same load; order alternates
        for x in inputs:
            pair = ((candidate, times), (serving, serving_times))
            for engine, out in (pair if k % 2 == 0 else pair[::-1]):
                out.append(gently(engine.run, x)[1])
    p50, p99 = Percentiles.of(times).p50, Percentiles.of(times).p99
    serving_p50, serving_p99 = Percentiles.of(serving_times).p50, Percentiles.of(serving_times).p99
    ratio = float(np.median(np.array(times) / np.maximum(np.array(serving_times), 1e-6)))
    live = serving_live_p99_ms if serving_live_p99_ms is not None and serving_live_p99_ms > 0 else serving_p99
    projection = Projection(ratio, live, budget_ms, max_latency_factor)

    def report(passed: bool, message: str) -> ValidationReport:
        return ValidationReport(passed, message, agreement, p99, ratio, projection.p99_ms, projection.limit_ms)

    if agreement < needed:
        return report(False, f"agrees with the serving engine on {agreement:.3f} of the golden inputs, the "
                             f"manifest asks {key} >= {needed}")
    speed = (f"{ratio:.2f}x the serving engine's time (median {p50:.1f} ms against "
             f"{serving_p50:.1f} ms)")
    problem = projection.problem()
    if problem:
        return report(False, f"too slow for this graph: {problem}; measured side by side: {speed}")
    return report(True, f"agreement {agreement:.3f} (>= {needed}), {projection.describe()}; measured side by side: "
                        f"{speed}")


def summary(report: ValidationReport) -> Dict[str, object]:
    return {"passed": report.is_passed, "agreement": round(report.agreement, 4), "p99_ms": round(report.p99_ms, 2),
            "ratio": round(report.ratio, 3), "projected_p99_ms": round(report.projected_p99_ms, 2),
            "limit_ms": round(report.limit_ms, 2)}
