"""Engine swaps inside the serving process: load -> validate -> atomic exchange -> fallback.

A failed swap leaves the serving engine serving; a good one replaces it between two frames
and the replaced engine stays loaded as the fallback (the previous fallback is released).
After a swap the new engine is watched over a window of frames: failed or non-finite frames
roll it back to the fallback automatically; so does slowness: its live P99 in this graph over
the task's budget (times ``max_latency_factor``) while it is also slower than the replaced
engine's own record over the frames before the swap (the same load, beyond timing noise), or
more deadline misses than that engine had. An engine no slower than the one it replaced is never
rolled back because the machine is busy, and an older engine that fits the budget stays. A
candidate with an equal or lower version than the serving one is a rollback by version
(``is_downgrade``): allowed, and said so. Every change of the active version is persisted
atomically.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Optional, Tuple

from airside_perception.config import Budget
from airside_perception.engines.active import ActiveVersions
from airside_perception.engines.trust import Revocations, TrustPolicy, check
from airside_perception.errors import AirsideError, ConfigError, SwapError
from airside_perception.memory import release_free_memory
from airside_perception.ota import golden, shadow, staging
from airside_perception.ota.validation import validate_candidate
from airside_perception.pipelines import store
from airside_perception.pipelines.host import FrameResult, PerceptionHost
from airside_perception.pipelines.tasks import TaskEngine
from airside_perception.stats import Percentiles

LOG = logging.getLogger(__name__)

SERVING, LOADING, VALIDATING, ROLLED_BACK, FAILED = "serving", "loading", "validating", "rolled_back", "failed"
FRAME_DONE_TIMEOUT_S = 2.0  # longest wait for the frame in flight before an engine is released
LIVE_FRAMES = 300  # frames of each serving engine's live latency record (its P99 in this graph)
MIN_LIVE_FRAMES = 20  # fewer: validation uses the serving engine's P99 side by side instead
WATCH_WARMUP_FRAMES = 5  # a new engine's first frames in the graph are left out of the slowness watch
WATCH_SLOWER = 1.5  # in-graph median ratio beyond which the new engine counts as slower than the one it replaced


@dataclass(frozen=True)
class SwapParams:
    backend: str
    intra_op_threads: int
    max_latency_factor: float  # warm P99 must stay under budget x this
    rollback_window_frames: int
    rollback_max_failures: int
    frame_deadline_ms: float  # a frame of the host slower than this counts as a deadline miss
    require_gate_report: bool

    def __post_init__(self):
        if self.rollback_max_failures < 1 or self.rollback_window_frames < self.rollback_max_failures:
            raise ConfigError("swap.rollback_max_failures must be >= 1 and <= swap.rollback_window_frames")


@dataclass(frozen=True)
class EngineStatus:
    task: str
    active_version: str
    fallback_version: str
    backend: str
    state: str
    message: str


@dataclass(frozen=True)
class SwapOutcome:
    success: bool
    message: str
    active_version: str
    previous_version: str = ""
    load_ms: float = 0.0
    validation_ms: float = 0.0


class _TaskSwap:
    def __init__(self):
        self.lock = threading.Lock()
        self.state = SERVING
        self.message = ""
        self.fallback: Optional[TaskEngine] = None
        self.window: Deque[bool] = collections.deque()  # failed frames of the new engine
        self.times: Deque[Tuple[float, bool]] = collections.deque()  # (task ms, deadline miss) of the serving engine
        self.before: List[Tuple[float, bool]] = []  # the replaced engine's record, for the watch
        self.live: Deque[float] = collections.deque(maxlen=LIVE_FRAMES)  # task ms of the serving engine

    def live_p99_ms(self) -> Optional[float]:
        """The serving engine's P99 in the running graph, or None before enough frames."""
        return Percentiles.of(list(self.live)).p99 if len(self.live) >= MIN_LIVE_FRAMES else None


class SwapController:
    """Owns swaps and rollbacks of every engine hosted by ``host``."""

    def __init__(self, host: PerceptionHost, active: ActiveVersions, engines_root: str, budget: Budget,
                 params: SwapParams, on_change: Optional[Callable[[], None]] = None,
                 trust: Optional[TrustPolicy] = None):
        self.host = host
        self.trust = trust  # None: versions are not checked (tests of the swap logic alone)
        self.active = active
        self.engines_root = engines_root
        self.budget = budget
        self.params = params
        self.on_change = on_change or (lambda: None)
        self.tasks: Dict[str, _TaskSwap] = {t: _TaskSwap() for t in host.tasks}
        self.down: Dict[str, str] = {}  # task -> why it serves nothing
        self.rollbacks = 0

    # ------------------------------------------------------------------ status
    def status(self) -> List[EngineStatus]:
        out = []
        for task, ts in self.tasks.items():
            engine = self.host.engine(task)
            if engine is None:
                out.append(EngineStatus(task, "", "", "", ts.state, ts.message))
                continue
            out.append(EngineStatus(task, engine.version, ts.fallback.version if ts.fallback else "",
                                    engine.backend.name, ts.state, ts.message))
        return out

    def _set(self, task: str, state: str, message: str) -> None:
        ts = self.tasks[task]
        ts.state, ts.message = state, message
        self.on_change()

    # ------------------------------------------------------------------ swap
    def swap(self, task: str, engine_path: str) -> SwapOutcome:
        """Loads, validates and puts in service ``engine_path``; never raises."""
        if task not in self.tasks:
            hosted = ", ".join(self.tasks) or "none"
            return SwapOutcome(False, f"task '{task}' is not hosted here (hosted: {hosted})", "")
        if task in self.down:
            return SwapOutcome(False, f"{task} is down ({self.down[task]}): restart the inference host once a "
                               "version of it verifies", "")
        ts = self.tasks[task]
        if not ts.lock.acquire(blocking=False):
            return SwapOutcome(False, f"busy: a swap, rollback or shadow run of {task} is running; try again when "
                               "/model_manager/status no longer shows it loading, validating or shadowing",
                               self.host.engine(task).version)
        try:
            return self._swap_locked(task, engine_path)
        finally:
            ts.lock.release()

    def _swap_locked(self, task: str, engine_path: str) -> SwapOutcome:
        ts = self.tasks[task]
        serving = self.host.engine(task)
        try:
            manifest = staging.stage(self.engines_root, task, engine_path, serving.manifest,
                                     self.params.require_gate_report, trust=self.trust)
        except SwapError as exc:
            ts.message = f"swap refused: {exc}"
            self.on_change()
            return SwapOutcome(False, str(exc), serving.version)
        self._set(task, LOADING, f"loading {manifest.version}")
        start = time.perf_counter()
        try:
            candidate = store.open_engine(manifest, self.params.backend, self.params.intra_op_threads)
        except AirsideError as exc:
            self._set(task, SERVING, f"swap to {manifest.version} refused: {exc}")
            return SwapOutcome(False, f"{manifest.version} cannot be loaded: {exc}", serving.version)
        load_ms = (time.perf_counter() - start) * 1e3
        self._set(task, VALIDATING, f"validating {manifest.version}")
        start = time.perf_counter()
        try:
            clouds = golden.load_golden(serving.manifest)
            report = validate_candidate(candidate, serving, clouds, self.budget.stage(task),
                                        self.params.max_latency_factor, self.host.wait_for_gap, ts.live_p99_ms())
        except AirsideError as exc:
            candidate.close()
            self._set(task, SERVING, f"swap to {manifest.version} refused: {exc}")
            return SwapOutcome(False, f"validation could not run: {exc}", serving.version, load_ms=load_ms)
        validation_ms = (time.perf_counter() - start) * 1e3
        if not report.is_passed:
            candidate.close()
            release_free_memory()
            older = (f" (a rollback by version, {manifest.version} after {serving.version})"
                     if is_downgrade(manifest.version, serving.version) else "")
            self._set(task, SERVING, f"swap to {manifest.version}{older} refused: {report.message}")
            return SwapOutcome(False, f"{manifest.version}{older} failed validation: {report.message}", serving.version,
                               load_ms=load_ms, validation_ms=validation_ms)
        previous = self.host.slots[task].exchange(candidate)  # between two frames
        old_fallback, ts.fallback = ts.fallback, previous
        ts.window.clear()
        ts.before, ts.times = list(ts.times), collections.deque()
        ts.live.clear()
        if old_fallback is not None:
            old_fallback.close()
            del old_fallback
            release_free_memory()
        self.active.set(task, manifest.version)
        older = (f"rollback by version ({manifest.version} after {previous.version}): "
                 if is_downgrade(manifest.version, previous.version) else "")
        self._set(task, SERVING, f"{older}swapped {previous.version} -> {manifest.version}: {report.message}")
        LOG.info("%s: %s%s -> %s (%s)", task, older, previous.version, manifest.version, report.message)
        return SwapOutcome(True, f"{older}{task} now serves {manifest.version} ({report.message}); "
                           f"{previous.version} kept as fallback", manifest.version, previous.version, load_ms,
                           validation_ms)

    # ------------------------------------------------------------------ shadow
    def shadow(self, task: str, engine_path: str, clouds: int = 0, duration_s: float = 0.0,
               should_stop=lambda: "") -> Tuple[Optional[shadow.ShadowReport], str]:
        """Stages ``engine_path`` (trust included), then shadows it on the live frames
        (``ota.shadow``); never swaps, never raises. Returns (report, '') or (None, why not)."""
        if task not in self.tasks or task in self.down:
            return None, f"task '{task}' is {self.down.get(task, 'not hosted here')} (hosted: {', '.join(self.tasks)})"
        if clouds <= 0 and duration_s <= 0:
            return None, "give duration_s > 0 or clouds > 0: how long the candidate runs beside the serving engine"
        ts = self.tasks[task]
        if not ts.lock.acquire(blocking=False):
            return None, f"busy: a swap, rollback or shadow run of {task} is running; try again when it has ended"
        try:
            serving = self.host.engine(task)
            try:
                manifest = staging.stage(self.engines_root, task, engine_path, serving.manifest,
                                         self.params.require_gate_report, trust=self.trust)
                candidate = store.open_engine(manifest, self.params.backend, self.params.intra_op_threads)
            except AirsideError as exc:
                return None, f"shadow run refused: {exc}"
            state, message = ts.state, ts.message

            def progress(r: shadow.ShadowReport) -> None:
                self._set(task, state, f"shadowing {r.candidate}: {r.clouds} clouds, agreement {r.agreement}, "
                          f"{r.near_person_count} near-person disagreements")
            try:
                report = shadow.run_shadow(self.host, task, candidate, self.budget.stage(task),
                                           self.params.max_latency_factor, ts.live_p99_ms,
                                           self.params.frame_deadline_ms, clouds, duration_s, progress, should_stop)
            finally:
                candidate.close()
                del candidate
                release_free_memory()
            verdict = "passed" if report.passed else "failed: " + "; ".join(report.failures)
            self._set(task, state, f"shadow run of {report.candidate} over {report.clouds} clouds {verdict}"
                      if report.clouds else message)
            return report, ""
        finally:
            ts.lock.release()

    # ------------------------------------------------------------------ rollback
    def rollback(self, task: str, reason: str = "requested") -> SwapOutcome:
        if task not in self.tasks or task in self.down:
            why = self.down.get(task, f"not hosted here (hosted: {', '.join(self.tasks)})")
            return SwapOutcome(False, f"task '{task}' is {why}", "")
        ts = self.tasks[task]
        if not ts.lock.acquire(blocking=False):
            return SwapOutcome(False, f"busy: a swap, rollback or shadow run of {task} is running",
                               self.host.engine(task).version)
        try:
            if ts.fallback is None:
                version = self.host.engine(task).version
                return SwapOutcome(False, f"{task} has no fallback engine (none since start or the last "
                                   f"rollback): {version} keeps serving", version)
            refused = self._untrusted(ts.fallback)  # its files may have changed since it served
            if refused:
                version = self.host.engine(task).version
                return SwapOutcome(False, f"rollback of {task} to {ts.fallback.version} refused: {refused}; "
                                   f"{version} keeps serving", version)
            fallback, ts.fallback = ts.fallback, None
            rolled_out = self.host.slots[task].exchange(fallback)
            out_version = rolled_out.version
            # A frame that started before the exchange may still be running the rolled-out engine:
            # it is released only once that frame is done.
            self.host.wait_between_frames(FRAME_DONE_TIMEOUT_S)
            rolled_out.close()
            del rolled_out
            release_free_memory()
            ts.window.clear()
            ts.times.clear()
            self.active.set(task, fallback.version)
            self.rollbacks += 1
            self._set(task, ROLLED_BACK, f"rolled back {out_version} -> {fallback.version}: {reason}")
            LOG.warning("%s: rolled back %s -> %s: %s", task, out_version, fallback.version, reason)
            return SwapOutcome(True, f"{task} rolled back to {fallback.version} ({reason})", fallback.version,
                               out_version)
        finally:
            ts.lock.release()

    def _untrusted(self, engine: TaskEngine) -> Optional[str]:
        """Why ``engine``'s version may not serve now (revoked, altered, unsigned), or None."""
        if self.trust is None:
            return None
        verdict = check(engine.manifest.directory, engine.task, engine.version, self.engines_root, self.trust)
        return None if verdict.trusted else verdict.reason

    # ------------------------------------------------------------------ revocation
    def replace_revoked(self, revoked: Revocations) -> List[Tuple[str, SwapOutcome]]:
        """Replaces every serving engine whose version is revoked: by its fallback when that
        verifies, else by the newest version of the task under the engines root that verifies
        (opened at once: a revoked engine must not wait for a validation), else the task goes
        down (the simplex drives on the baseline). Returns (task, what was done)."""
        outcomes = []
        for task in list(self.host.tasks):
            engine = self.host.engine(task)
            if engine is None or f"{task}/{engine.version}" not in revoked.revoked:
                continue
            outcome = self.rollback(task, f"{engine.version} revoked")
            if not outcome.success:
                outcome = self._replace(task, engine.version, revoked)
            outcomes.append((task, outcome))
        return outcomes

    def _replace(self, task: str, out_version: str, revoked: Revocations) -> SwapOutcome:
        ts = self.tasks[task]
        with ts.lock:
            for version in newest_first(self.engines_root, task):
                if version == out_version:
                    continue
                version_dir = os.path.join(self.engines_root, task, version)
                if not check(version_dir, task, version, self.engines_root, self.trust or TrustPolicy(False),
                             revoked).trusted:
                    continue
                try:
                    engine = store.open_engine(store.load_version(self.engines_root, task, version),
                                               self.params.backend, self.params.intra_op_threads)
                except AirsideError:
                    continue
                rolled_out = self.host.slots[task].exchange(engine)
                self.host.wait_between_frames(FRAME_DONE_TIMEOUT_S)
                rolled_out.close()
                if ts.fallback is not None:
                    ts.fallback.close()
                    ts.fallback = None
                ts.window.clear()
                ts.times.clear()
                self.active.set(task, version)
                self._set(task, SERVING, f"{out_version} revoked: replaced by {version} (newest that verifies)")
                return SwapOutcome(True, f"{task} {out_version} revoked: now serves {version}", version, out_version)
            self.host.take_down(task)
            self.down[task] = f"{out_version} revoked and no other version verifies"
            self._set(task, FAILED, f"down: {self.down[task]}")
            return SwapOutcome(False, f"{task} {out_version} revoked and no other version verifies: the task is "
                               "down, the simplex drives on the baseline", "", out_version)

    # ------------------------------------------------------------------ monitoring
    def record(self, frame: FrameResult) -> List[str]:
        """Keeps every engine's latency record and watches engines that have a fallback;
        returns the tasks rolled back automatically."""
        rolled = []
        window = self.params.rollback_window_frames
        for task, ts in self.tasks.items():
            result = frame.results.get(task)
            if result is not None:
                ts.times.append((result.inference_ms + result.postprocess_ms,
                                 frame.total_ms > self.params.frame_deadline_ms))
                ts.live.append(result.inference_ms + result.postprocess_ms)
                while len(ts.times) > window + WATCH_WARMUP_FRAMES:
                    ts.times.popleft()
            if ts.fallback is None:
                continue
            error = frame.errors.get(task)
            ts.window.append(error is not None)
            while len(ts.window) > window:
                ts.window.popleft()
            failures = sum(ts.window)
            reason = None
            if failures >= self.params.rollback_max_failures:
                reason = f"{failures} failed frames of the last {len(ts.window)} (last: {error})"
            else:
                reason = self._slower_than_before(task, ts)
            if reason:
                outcome = self.rollback(task, f"automatic: {reason}")
                if outcome.success:
                    rolled.append(task)
        return rolled

    def _slower_than_before(self, task: str, ts: _TaskSwap) -> Optional[str]:
        """Why the new engine does not fit this graph, or None. Judged once a full window of its
        frames has run (its first WATCH_WARMUP_FRAMES left out), against the replaced engine's
        record over as many frames before the swap, under the load of the moment: it must be
        slower beyond the graph's own timing spread (median over ``WATCH_SLOWER`` x: in-graph
        times vary with what the other engines and nodes do, more than side-by-side runs), and
        either run over the task's budget at P99 or miss the frame deadline more often."""
        window = self.params.rollback_window_frames
        if len(ts.times) < window + WATCH_WARMUP_FRAMES:
            return None
        new = list(ts.times)[WATCH_WARMUP_FRAMES:][-window:]
        n = min(len(new), len(ts.before))
        if n < max(10, self.params.rollback_max_failures):
            return None
        new, old = new[-n:], ts.before[-n:]
        new_ms, old_ms = sorted(t for t, _ in new)[n // 2], sorted(t for t, _ in old)[n // 2]
        if new_ms <= WATCH_SLOWER * old_ms:
            return None
        new_p99 = Percentiles.of([t for t, _ in new]).p99
        limit = self.budget.stage(task) * self.params.max_latency_factor
        new_misses, old_misses = sum(m for _, m in new), sum(m for _, m in old)
        slower = (f"median {new_ms:.1f} ms against the replaced engine's {old_ms:.1f} ms over {n} frames under "
                  "the same load")
        if new_p99 > limit:
            return f"live P99 {new_p99:.1f} ms, over the budget of {limit:.1f} ms; {slower}"
        if new_misses >= old_misses + self.params.rollback_max_failures:
            return (f"{new_misses} frames over {self.params.frame_deadline_ms:.0f} ms against {old_misses}; "
                    f"{slower}")
        return None


def is_downgrade(candidate: str, serving: str) -> bool:
    """A candidate whose version is equal to or lower than the serving one: a rollback by version."""
    return _version_key(candidate) <= _version_key(serving)


def _version_key(version: str):
    """Sort key of a version name: numeric parts as numbers, a suffix after them (1.0.0-int8)."""
    head, _, suffix = version.partition("-")
    parts = [int(p) if p.isdigit() else -1 for p in head.split(".")]
    return parts, suffix == "", suffix


def newest_first(engines_root: str, task: str) -> List[str]:
    """The version directories of ``task`` under the root, newest first."""
    task_dir = os.path.join(engines_root, task)
    try:
        names = [n for n in os.listdir(task_dir)
                 if not n.startswith(".") and os.path.isfile(os.path.join(task_dir, n, "manifest.yaml"))]
    except OSError:
        return []
    return sorted(names, key=_version_key, reverse=True)
