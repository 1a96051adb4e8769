"""Swap validation: a loaded candidate against the serving engine, on golden inputs.

Checks, in order: outputs finite, output shapes equal to the serving engine's, agreement with
the serving engine within the candidate manifest's tolerance, and warm P99 latency within the
task's budget (times ``max_latency_factor``). Latency is measured in the serving process, beside
the live engines; where the serving engine itself exceeds the budget on this machine, the
candidate passes if it is at most ``MAX_SLOWDOWN`` times slower than the serving engine.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from airside_perception.errors import InferenceError
from airside_perception.ops.bev import BevInput, encode
from airside_perception.pipelines.tasks import TaskEngine, TaskResult
from airside_perception.stats import Percentiles

WARMUP_RUNS = 2
TIMED_RUNS = 10
MAX_SLOWDOWN = 1.5  # where the serving engine is over budget here, a candidate may be this much slower
YIELD_FRACTION = 1.0  # after each validation run, idle as long as it took


@dataclass(frozen=True)
class ValidationReport:
    is_passed: bool
    message: str
    agreement: float
    p99_ms: float


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


TOLERANCE_KEYS = {"segmentation": "min_label_agreement", "detection": "min_detection_f1",
                  "occupancy": "min_occupied_iou"}


def validate_candidate(candidate: TaskEngine, serving: TaskEngine, clouds: Sequence[np.ndarray],
                       budget_ms: float, max_latency_factor: float) -> ValidationReport:
    """Runs ``candidate`` and ``serving`` on ``clouds``; never raises for a bad candidate."""
    task = candidate.task
    inputs: List[BevInput] = [encode(c, serving.bev_spec) for c in clouds]
    try:
        for _ in range(WARMUP_RUNS):
            for x in inputs:
                candidate.run(x)
        candidate_out = [candidate.run(x) for x in inputs]
    except InferenceError as exc:
        return ValidationReport(False, f"candidate failed on the golden inputs: {exc}", 0.0, float("nan"))
    serving_raw = serving.backend.infer(serving.feeds(inputs[0]))
    candidate_raw = candidate.backend.infer(candidate.feeds(inputs[0]))
    for name, value in serving_raw.items():
        if candidate_raw[name].shape != value.shape:
            return ValidationReport(False, f"output '{name}' has shape {list(candidate_raw[name].shape)}, the "
                                    f"serving engine's is {list(value.shape)}", 0.0, float("nan"))
    serving_out = [serving.run(x) for x in inputs]
    agreement = min(_agreement(task, c, s) for c, s in zip(candidate_out, serving_out))
    key = TOLERANCE_KEYS[task]
    needed = float(candidate.manifest.validation.get(key, 0.0))
    times: List[float] = []
    serving_times: List[float] = []
    for _ in range(TIMED_RUNS):  # interleaved, so both see the same load
        for x in inputs:
            for engine, out in ((candidate, times), (serving, serving_times)):
                start = time.perf_counter()
                engine.run(x)
                elapsed = time.perf_counter() - start
                out.append(elapsed * 1e3)
                time.sleep(elapsed * YIELD_FRACTION)  # leave the cores to the serving frames
    p99 = Percentiles.of(times).p99
    serving_p99 = Percentiles.of(serving_times).p99
    # Within the budget; or, where the serving engine itself is over it on this machine and
    # load, no more than MAX_SLOWDOWN slower than the serving engine.
    limit = max(budget_ms * max_latency_factor, serving_p99 * MAX_SLOWDOWN)
    if agreement < needed:
        return ValidationReport(False, f"agrees with the serving engine on {agreement:.3f} of the golden "
                                f"inputs, the manifest asks {key} >= {needed}", agreement, p99)
    if p99 > limit:
        return ValidationReport(False, f"warm P99 latency {p99:.1f} ms exceeds {limit:.1f} ms (budget "
                                f"{budget_ms:.0f} ms x {max_latency_factor}, serving engine {serving_p99:.1f} ms "
                                f"x {MAX_SLOWDOWN})", agreement, p99)
    return ValidationReport(True, f"agreement {agreement:.3f} (>= {needed}), warm P99 {p99:.1f} ms "
                            f"(<= {limit:.1f} ms; serving engine {serving_p99:.1f} ms)", agreement, p99)


def summary(report: ValidationReport) -> Dict[str, object]:
    return {"passed": report.is_passed, "agreement": round(report.agreement, 4), "p99_ms": round(report.p99_ms, 2)}
