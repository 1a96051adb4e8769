"""Rolling latency statistics and budget levels, for diagnostics and benchmarks."""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterable, List, Optional, Tuple

import numpy as np

#: A ROS clock (or a stamp) this many seconds behind the newest one is time going back: sim time
#: replayed or looped. Windows, intakes and the simplex's cycles restart on it.
CLOCK_JUMP_S = 0.5

OK, WARN, ERROR = 0, 1, 2


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float
    p99: float
    max: float

    @staticmethod
    def of(values: Iterable[float]) -> "Percentiles":
        v = np.asarray(list(values), float)
        if len(v) == 0:
            return Percentiles(0, float("nan"), float("nan"), float("nan"))
        return Percentiles(len(v), float(np.percentile(v, 50)), float(np.percentile(v, 99)), float(v.max()))

    def line(self, unit: str = "ms") -> str:
        return f"P50 {self.p50:.1f} {unit}  P99 {self.p99:.1f} {unit}  max {self.max:.1f} {unit}  (n={self.count})"


def time_calls(fn: Callable[[int], object], n: int, warmup: int = 3,
               steps: Callable[[int], Iterable[int]] = range) -> List[float]:
    """Milliseconds of ``fn(i)`` for i in ``steps(n)``, after ``warmup`` untimed calls.

    ``steps`` may wrap ``range`` in a progress bar.
    """
    for i in range(warmup):
        fn(i)
    times: List[float] = []
    for i in steps(n):
        start = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def budget_level(p99_ms: float, budget_ms: float, warn_factor: float, error_factor: float) -> int:
    """OK within ``budget x warn_factor``, ERROR beyond ``budget x error_factor``, WARN between."""
    if np.isnan(p99_ms) or p99_ms <= budget_ms * warn_factor:
        return OK
    return ERROR if p99_ms > budget_ms * error_factor else WARN


class StageTimes:
    """Thread-safe rolling windows of stage latencies, milliseconds."""

    def __init__(self, window: int):
        self.window = window
        self._values: Dict[str, Deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, value_ms: float) -> None:
        with self._lock:
            self._values.setdefault(stage, collections.deque(maxlen=self.window)).append(value_ms)

    def percentiles(self, stage: str) -> Optional[Percentiles]:
        with self._lock:
            values = list(self._values.get(stage, ()))
        return Percentiles.of(values) if values else None

    def stages(self):
        with self._lock:
            return list(self._values)

    def clear(self) -> None:
        """Forgets every window (after a clock jump their values compare two different clocks)."""
        with self._lock:
            self._values.clear()


class WindowedCounts:
    """Event counts over the last ``window_s`` seconds (monotonic), with totals since start, and
    the last message of each kind: a problem that has passed stops being reported."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self.totals: Dict[str, int] = {}
        self._events: Deque = collections.deque()  # (monotonic, kind)
        self._messages: Dict[str, Tuple[float, str]] = {}
        self._lock = threading.Lock()

    def add(self, kind: str, message: str = "", now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.totals[kind] = self.totals.get(kind, 0) + 1
            self._events.append((now, kind))
            if message:
                self._messages[kind] = (now, message)

    def recent(self, now: Optional[float] = None) -> Dict[str, int]:
        """Counts of each kind within the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._events and now - self._events[0][0] > self.window_s:
                self._events.popleft()
            out: Dict[str, int] = {}
            for _, kind in self._events:
                out[kind] = out.get(kind, 0) + 1
            return out

    def recent_messages(self, now: Optional[float] = None) -> Dict[str, str]:
        """The last message of each kind seen within the window."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return {k: m for k, (t, m) in self._messages.items() if now - t <= self.window_s}
