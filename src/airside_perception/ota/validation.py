"""Swap validation: a loaded candidate against the serving engine, on golden inputs.

Checks, in order: outputs finite, output shapes equal to the serving engine's, agreement with
the serving engine within the candidate manifest's tolerance, and latency. Latency is judged
against the serving engine under the same conditions: both engines run side by side on the
same clouds, in the gaps between the host's frames, and each candidate run is compared with
the serving run next to it. A candidate is refused when it is clearly slower (median ratio
over ``MAX_SLOWDOWN``), or slower at all (over ``SAME_SPEED``) while its median is over the
task's budget times ``max_latency_factor``. A candidate as fast as the engine it replaces is
never refused for the machine's load.
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
MAX_SLOWDOWN = 1.5  # a candidate this much slower than the serving engine, side by side, is refused
SAME_SPEED = 1.25  # within this ratio a candidate counts as no slower (paired timing noise on a busy machine)
YIELD_FRACTION = 1.0  # after each validation run, idle as long as it took


@dataclass(frozen=True)
class ValidationReport:
    is_passed: bool
    message: str
    agreement: float
    p99_ms: float
    ratio: float = float("nan")  # median candidate / serving time, side by side


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
                       between_frames: Optional[Callable[[], None]] = None) -> ValidationReport:
    """Runs ``candidate`` and ``serving`` on ``clouds``; never raises for a bad candidate.
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
    serving_p50 = Percentiles.of(serving_times).p50
    ratio = float(np.median(np.array(times) / np.maximum(np.array(serving_times), 1e-6)))
    limit_ms = budget_ms * max_latency_factor
    if agreement < needed:
        return ValidationReport(False, f"agrees with the serving engine on {agreement:.3f} of the golden "
                                f"inputs, the manifest asks {key} >= {needed}", agreement, p99, ratio)
    speed = (f"{ratio:.2f}x the serving engine's time side by side (median {p50:.1f} ms against "
             f"{serving_p50:.1f} ms)")
    if ratio > MAX_SLOWDOWN:
        return ValidationReport(False, f"too slow: {speed}, more than {MAX_SLOWDOWN}x", agreement, p99, ratio)
    if ratio > SAME_SPEED and p50 > limit_ms:
        return ValidationReport(False, f"too slow: {speed}, and over the budget of {limit_ms:.1f} ms "
                                f"({budget_ms:.0f} ms x {max_latency_factor})", agreement, p99, ratio)
    return ValidationReport(True, f"agreement {agreement:.3f} (>= {needed}), {speed}", agreement, p99, ratio)


def summary(report: ValidationReport) -> Dict[str, object]:
    return {"passed": report.is_passed, "agreement": round(report.agreement, 4), "p99_ms": round(report.p99_ms, 2)}
