"""What a host's frames add up to, for its diagnostics: stage times, failures, trust, overflow."""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

from airside_perception.pipelines.host import FrameResult
from airside_perception.pipelines.trust import TrustScore
from airside_perception.stats import StageTimes, WindowedCounts

ERROR_WINDOW_S = 10.0  # a failed frame longer ago than this is no longer an ERROR


class FrameStats:
    """Rolling record of the frames of a ``PerceptionHost`` hosting ``tasks``."""

    def __init__(self, tasks: Sequence[str], times: StageTimes):
        self.times = times
        self.counts: Dict[str, int] = {"overflow_frames": 0, "overflow_points": 0}
        self.task_errors: Dict[str, int] = {t: 0 for t in tasks}
        self.recent_errors = WindowedCounts(ERROR_WINDOW_S)
        self.last_error: Dict[str, str] = {}
        self.last_trust: Dict[str, TrustScore] = {}
        self.ood_frames: Dict[str, int] = {t: 0 for t in tasks}

    def record(self, frame: FrameResult) -> List[Tuple[str, str]]:
        """Adds one frame; returns its (task, error) failures."""
        if frame.overflow_points:
            self.counts["overflow_frames"] += 1
            self.counts["overflow_points"] += frame.overflow_points
        self.times.add("preprocessing", frame.preprocess_ms)
        self.times.add("frame", frame.total_ms)
        self.times.add("monitor", frame.monitor_ms)
        for task, score in frame.trust.items():
            self.last_trust[task] = score
            self.ood_frames[task] += score.is_out_of_distribution
        for task, result in frame.results.items():
            self.times.add(f"{task}/inference", result.inference_ms)
            self.times.add(f"{task}/postprocess", result.postprocess_ms)
            self.times.add(task, result.inference_ms + result.postprocess_ms)
        for task, error in frame.errors.items():
            self.task_errors[task] += 1
            self.last_error[task] = error
            self.recent_errors.add(task, error)
        return sorted(frame.errors.items())
