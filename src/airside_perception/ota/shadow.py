"""Shadow runs: a staged candidate on live clouds beside the serving engine, compared cloud by cloud.

The candidate never drives. After each of the host's frames (in the gap before the next cloud,
as validation runs) it takes that frame's encoded input and runs one piece of work: the
candidate on it, compared with the serving engine's result for the same cloud; or, on the next
gap, the serving engine again on the same input, so that both are timed side by side under the
same load. Each run is followed by an idle pause as long as itself, so the frames keep the
cores. The run stops early, with the reason, when the host's frames come under deadline
pressure, when the serving engine changes or when no clouds arrive.

The comparison per cloud: agreement (labels of the same points, F1 of the boxes, IoU of the
occupied cells) overall and per class, boxes matched, and near-field persons one engine sees
and the other does not (within ``NEAR_FIELD_M`` of the vehicle, matched within
``PERSON_MATCH_M``: the gates' rule). Latency: the median side-by-side ratio, projected onto the
serving engine's live P99 in this graph against the stage budget (``validation.Projection``).
"""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np
from scipy import ndimage

from airside_perception.classes import NEAR_FIELD_M, PERSON_MATCH_M
from airside_perception.ops.bev import BevInput, BevSpec
from airside_perception.ota import validation
from airside_perception.ota.validation import TOLERANCE_KEYS, YIELD_FRACTION, Projection
from airside_perception.pipelines.tasks import TaskEngine, TaskResult

PRESSURE_FRAMES = 10  # the host's last frames looked at for deadline pressure ...
PRESSURE_LATE = 3  # ... and how many of them over the frame deadline stop the run
NO_CLOUDS_S = 3.0  # no new frame for this long: the run stops
MIN_PERSON_CELLS = 2  # a segmented person: at least this many connected person cells
FIT_MARGIN, FIT_SLACK_MS = 1.2, 3.0  # a piece starts when 1.2x its median cost + 3 ms fit before the next frame
RETRY_AFTER = 50  # gaps skipped in a row for one piece: try it once more (its cost is measured again)
WARMUP_RUNS = 2  # candidate runs before the first timed one (a fresh engine's first runs are slow)
MAX_LISTED = 100  # near-field disagreements kept with their position (all are counted)


@dataclass
class ShadowReport:
    task: str
    candidate: str
    serving: str
    clouds: int = 0  # clouds compared
    agreement: float = float("nan")  # mean over the clouds
    min_agreement: float = float("nan")
    needed: float = 0.0  # the candidate manifest's tolerance
    per_class: Dict[str, float] = field(default_factory=dict)
    boxes_matched: int = 0
    boxes_candidate: int = 0
    boxes_serving: int = 0
    near_person_disagreements: List[Dict[str, object]] = field(default_factory=list)  # the first MAX_LISTED
    near_person_count: int = 0  # every near-field person seen by one engine only
    gaps_skipped: int = 0  # gaps too short for the next piece of work
    latency_ratio: float = float("nan")
    serving_live_p99_ms: float = float("nan")
    projected_p99_ms: float = float("nan")
    limit_ms: float = float("nan")
    timed_pairs: int = 0
    duration_s: float = 0.0
    stopped: str = ""  # why the run ended early ('' : it ran its course)
    failures: List[str] = field(default_factory=list)  # the shadow gates it failed

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> Dict[str, object]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


def _f1(a: TaskResult, b: TaskResult, label: Optional[int] = None) -> tuple:
    """(matched, boxes of a, boxes of b): same class, centres within ``PERSON_MATCH_M``."""
    ka = np.ones(len(a.boxes.labels), bool) if label is None else a.boxes.labels == label
    kb = np.ones(len(b.boxes.labels), bool) if label is None else b.boxes.labels == label
    boxes_b, labels_b = b.boxes.boxes[kb], b.boxes.labels[kb]
    used = np.zeros(len(boxes_b), bool)
    matched = 0
    for box, lab in zip(a.boxes.boxes[ka], a.boxes.labels[ka]):
        d = np.hypot(*(boxes_b[:, :2] - box[:2]).T) if len(boxes_b) else np.zeros(0)
        d[(labels_b != lab) | used] = np.inf
        if len(d) and d.min() <= PERSON_MATCH_M:
            used[int(d.argmin())] = True
            matched += 1
    return matched, int(ka.sum()), int(kb.sum())


def _person_positions(task: str, result: TaskResult, bev: BevInput, spec: BevSpec, person: int) -> np.ndarray:
    """(P, 2) x, y of the persons ``result`` finds within the near field: box centres, or the
    centres of connected person cells of the segmented points."""
    if task == "detection":
        xy = result.boxes.boxes[result.boxes.labels == person, :2]
    else:
        size = int(round(2 * spec.half_extent_m / spec.resolution_m))
        cells = bev.point_cells[result.labels[bev.kept] == person]
        grid = np.zeros(size * size, bool)
        grid[cells] = True
        components, n = ndimage.label(grid.reshape(size, size), structure=np.ones((3, 3)))
        if n == 0:
            return np.zeros((0, 2))
        counts = np.bincount(components.ravel(), minlength=n + 1)[1:]
        rows_cols = np.array(ndimage.center_of_mass(grid.reshape(size, size), components, range(1, n + 1)))
        rows_cols = rows_cols[counts >= MIN_PERSON_CELLS].reshape(-1, 2)
        xy = (rows_cols[:, ::-1] + 0.5) * spec.resolution_m - spec.half_extent_m
    return xy[np.hypot(xy[:, 0], xy[:, 1]) < NEAR_FIELD_M] if len(xy) else np.zeros((0, 2))


def _unmatched(xy: np.ndarray, other: np.ndarray, match_m: float) -> np.ndarray:
    if not len(other):
        return xy
    d = np.hypot(xy[:, None, 0] - other[None, :, 0], xy[:, None, 1] - other[None, :, 1])
    return xy[d.min(axis=1) > match_m]


class Comparison:
    """Accumulates the cloud-by-cloud comparison of a candidate with the serving engine."""

    def __init__(self, task: str, class_names, spec: BevSpec, person_match_m: float = 2 * PERSON_MATCH_M):
        self.task, self.class_names, self.spec = task, list(class_names), spec
        self.person = self.class_names.index("person") if "person" in self.class_names else -1
        self.person_match_m = person_match_m  # segmented persons: cell centres, so a wider match
        self.agreements: List[float] = []
        self.class_hits: Dict[str, List[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        self.boxes = [0, 0, 0]
        self.near: List[Dict[str, object]] = []

    def add(self, cloud: int, candidate: TaskResult, serving: TaskResult, bev: BevInput) -> float:
        if self.task == "segmentation":
            labelled = serving.labels != 255
            a, b = candidate.labels[labelled], serving.labels[labelled]
            agreement = float((a == b).mean()) if len(a) else 1.0
            for k in np.unique(b):
                hits = self.class_hits[self._name(k)]
                hits[0] += float((a[b == k] == k).sum())
                hits[1] += float((b == k).sum())
        elif self.task == "detection":
            matched, n_c, n_s = _f1(candidate, serving)
            self.boxes = [self.boxes[0] + matched, self.boxes[1] + n_c, self.boxes[2] + n_s]
            agreement = 2 * matched / (n_c + n_s) if n_c + n_s else 1.0
            for k in np.union1d(candidate.boxes.labels, serving.boxes.labels):
                m, n_c, n_s = _f1(candidate, serving, int(k))
                hits = self.class_hits[self._name(k)]
                hits[0] += 2 * m
                hits[1] += n_c + n_s
        else:
            occ_c, occ_s = candidate.grid.cells == 100, serving.grid.cells == 100
            union = (occ_c | occ_s).sum()
            agreement = float((occ_c & occ_s).sum() / union) if union else 1.0
            hits = self.class_hits["occupied"]
            hits[0] += float((occ_c & occ_s).sum())
            hits[1] += float(union)
        self.agreements.append(agreement)
        if self.person >= 0 and self.task in ("segmentation", "detection"):
            match = PERSON_MATCH_M if self.task == "detection" else self.person_match_m
            mine = _person_positions(self.task, candidate, bev, self.spec, self.person)
            theirs = _person_positions(self.task, serving, bev, self.spec, self.person)
            for who, xy in (("serving only", _unmatched(theirs, mine, match)),
                            ("candidate only", _unmatched(mine, theirs, match))):
                self.near += [{"cloud": cloud, "seen_by": who, "x_m": round(float(x), 2), "y_m": round(float(y), 2),
                               "range_m": round(float(np.hypot(x, y)), 2)} for x, y in xy]
        return agreement

    def _name(self, k) -> str:
        k = int(k)
        return self.class_names[k] if 0 <= k < len(self.class_names) else str(k)

    def per_class(self) -> Dict[str, float]:
        return {name: round(hit / total, 4) for name, (hit, total) in sorted(self.class_hits.items()) if total}


def run_shadow(host, *args, **kwargs) -> "ShadowReport":
    """:func:`_run_shadow`; a device frame loop reads its inputs back only while the run lasts."""
    try:
        return _run_shadow(host, *args, **kwargs)
    finally:
        host.keep_host_input = False


def _run_shadow(host, task: str, candidate: TaskEngine, budget_ms: float, max_latency_factor: float,
               serving_live_p99_ms: Callable[[], Optional[float]], frame_deadline_ms: float,
               clouds: int = 0, duration_s: float = 0.0,
               progress: Optional[Callable[[ShadowReport], None]] = None,
               should_stop: Callable[[], str] = lambda: "") -> ShadowReport:
    """Shadows ``candidate`` on ``host``'s live frames until ``clouds`` are compared or
    ``duration_s`` has passed (whichever is given first; at least one must be); never raises
    for a bad candidate, never swaps. ``should_stop`` returns a reason to stop ('' : go on)."""
    serving = host.engine(task)
    report = ShadowReport(task, candidate.version, serving.version if serving else "")
    report.needed = float(candidate.manifest.validation.get(TOLERANCE_KEYS[task], 0.0))
    comparison = Comparison(task, candidate.manifest.class_names, host.bev_spec)
    pairs: List[float] = []
    serving_times: List[float] = []  # the serving engine in the gaps: its P99 stands in for a short live record
    recent = collections.deque(maxlen=PRESSURE_FRAMES)
    start = last_new = time.monotonic()
    seen, pending = -1, None  # pending: (input, candidate ms) waiting for the serving engine's timing

    def live_p99() -> Optional[float]:
        live = serving_live_p99_ms()
        return live if live else (float(np.percentile(serving_times, 99)) if serving_times else None)

    spent = {"candidate": collections.deque(maxlen=5), "serving": collections.deque(maxlen=5)}  # ms per piece

    skipped = {"candidate": 0, "serving": 0}

    def fits(piece: str) -> bool:
        """Whether the piece's recent cost fits before the next frame (with a margin): a piece that
        would still run when the next cloud comes waits for a longer gap. After RETRY_AFTER gaps
        skipped in a row it runs once more, so one slow run does not stop the shadow for good."""
        left_s = host.time_to_next_frame()
        if left_s is None or not spent[piece] or skipped[piece] >= RETRY_AFTER \
                or left_s * 1e3 >= FIT_MARGIN * float(np.median(spent[piece])) + FIT_SLACK_MS:
            skipped[piece] = 0
            return True
        skipped[piece] += 1
        report.gaps_skipped += 1
        return False

    warm = 0

    while True:
        now = time.monotonic()
        if (clouds and report.clouds >= clouds) or (duration_s and now - start >= duration_s):
            break
        report.stopped = should_stop()
        if report.stopped:
            break
        if host.engine(task) is not serving:
            report.stopped = "the serving engine changed during the run"
            break
        host.wait_for_gap(timeout_s=0.25)
        latest = host.latest_frame()
        if latest is None or latest.number == seen:
            if now - last_new > NO_CLOUDS_S:
                report.stopped = f"no clouds for {NO_CLOUDS_S:.0f} s"
                break
            continue
        if latest.bev is None:  # a device frame: ask the host to read its input back from now on
            host.keep_host_input = True
            continue
        seen, last_new = latest.number, now
        recent.append(latest.total_ms > frame_deadline_ms)
        if sum(recent) >= PRESSURE_LATE:
            report.stopped = (f"deadline pressure: {sum(recent)} of the host's last {len(recent)} frames took over "
                              f"{frame_deadline_ms:.0f} ms")
            break
        if pending is not None:  # this gap: the serving engine on the same input, for the pair's timing
            if not fits("serving"):
                continue
            bev, candidate_ms = pending
            pending = None
            t0 = time.perf_counter()
            serving.run(bev)
            serving_ms = (time.perf_counter() - t0) * 1e3
            spent["serving"].append(serving_ms)
            time.sleep(serving_ms / 1e3 * YIELD_FRACTION)
            serving_times.append(serving_ms)
            pairs.append(candidate_ms / max(serving_ms, 1e-6))
            continue
        served = latest.results.get(task)
        if served is None:
            continue
        if not fits("candidate"):
            continue
        if warm < WARMUP_RUNS:  # in a gap too, then idle as long
            t0 = time.perf_counter()
            try:
                candidate.run(latest.bev)
            except Exception:  # the timed run below reports a failing candidate
                pass
            warm += 1
            time.sleep(time.perf_counter() - t0)
            continue
        try:
            t0 = time.perf_counter()
            result = candidate.run(latest.bev)
            candidate_ms = (time.perf_counter() - t0) * 1e3
            comparison.add(report.clouds, result, served, latest.bev)
        except Exception as exc:  # a failing candidate ends its shadow run, never the host
            report.stopped = f"the candidate failed: {type(exc).__name__}: {exc}"
            report.failures.append(report.stopped)
            break
        piece_s = time.perf_counter() - t0  # the run and the comparison
        spent["candidate"].append(piece_s * 1e3)
        time.sleep(piece_s * YIELD_FRACTION)
        report.clouds += 1
        pending = (latest.bev, candidate_ms)
        if progress is not None and report.clouds % 10 == 0:
            _fill(report, comparison, pairs, live_p99(), budget_ms, max_latency_factor, start)
            progress(report)
    _fill(report, comparison, pairs, live_p99(), budget_ms, max_latency_factor, start)
    report.failures += _gate_failures(report)
    return report


def _fill(report: ShadowReport, comparison: Comparison, pairs: List[float], live_p99: Optional[float],
          budget_ms: float, factor: float, start: float) -> None:
    report.duration_s = round(time.monotonic() - start, 2)
    if comparison.agreements:
        report.agreement = round(float(np.mean(comparison.agreements)), 4)
        report.min_agreement = round(float(np.min(comparison.agreements)), 4)
    report.per_class = comparison.per_class()
    report.boxes_matched, report.boxes_candidate, report.boxes_serving = comparison.boxes
    report.near_person_disagreements = list(comparison.near[:MAX_LISTED])
    report.near_person_count = len(comparison.near)
    report.timed_pairs = len(pairs)
    if pairs and live_p99:
        projection = Projection(float(np.median(pairs)), live_p99, budget_ms, factor)
        report.latency_ratio = round(projection.ratio, 3)
        report.serving_live_p99_ms = round(live_p99, 2)
        report.projected_p99_ms = round(projection.p99_ms, 2)
        report.limit_ms = round(projection.limit_ms, 2)


def _gate_failures(report: ShadowReport) -> List[str]:
    """The shadow gates: enough clouds, agreement within the manifest's tolerance, no near-field
    person seen by one engine only, the projected P99 within the budget rule of validation."""
    out = []
    if report.clouds == 0:
        out.append("no cloud was compared")
        return out
    if report.min_agreement < report.needed:
        out.append(f"agreement {report.min_agreement:.3f} on its worst cloud, the manifest asks {report.needed}")
    if report.near_person_count:
        out.append(f"{report.near_person_count} near-field persons seen by one engine only")
    if not np.isfinite(report.projected_p99_ms):
        out.append("latency not measured (no timed pair)")
    elif report.projected_p99_ms > report.limit_ms and report.latency_ratio > validation.SAME_SPEED:
        out.append(f"projected P99 {report.projected_p99_ms:.1f} ms over the budget of {report.limit_ms:.1f} ms")
    if report.stopped:
        out.append(f"stopped early: {report.stopped}")
    return out


def table(report: Dict[str, object]) -> str:
    """A shadow report (``as_dict``, or an audit record's ``shadow`` field) as a text table."""
    g = report.get
    rows = [("task", g("task")), ("candidate / serving", f"{g('candidate')} / {g('serving')}"),
            ("clouds compared", report.get("clouds")), ("duration (s)", report.get("duration_s")),
            ("agreement mean / worst (needed)",
             f"{report.get('agreement')} / {report.get('min_agreement')} (>= {report.get('needed')})")]
    if report.get("task") == "detection":
        rows.append(("boxes matched (candidate / serving)",
                     f"{g('boxes_matched')} ({g('boxes_candidate')} / {g('boxes_serving')})"))
    rows += [("latency ratio (timed pairs)", f"{report.get('latency_ratio')} ({report.get('timed_pairs')})"),
             ("projected P99 / budget (ms)", f"{report.get('projected_p99_ms')} / {report.get('limit_ms')} "
                                             f"(serving live P99 {report.get('serving_live_p99_ms')})"),
             ("near-field persons seen by one only", report.get("near_person_count", 0)),
             ("gaps skipped (too short)", report.get("gaps_skipped", 0)),
             ("stopped early", report.get("stopped") or "no"),
             ("verdict", "PASS" if report.get("passed") else "FAIL: " + "; ".join(report.get("failures") or []))]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    per_class = report.get("per_class") or {}
    if per_class:
        lines += ["", "per class agreement:"] + [f"  {k:12s} {v:.4f}" for k, v in per_class.items()]
    near = report.get("near_person_disagreements") or []
    if near:
        lines += ["", "near-field persons seen by one engine only:"]
        lines += [f"  cloud {d['cloud']:4d}  {d['seen_by']:14s}  x {d['x_m']:7.2f}  y {d['y_m']:7.2f}  "
                  f"range {d['range_m']:5.2f} m" for d in near[:50]]
        if report.get("near_person_count", 0) > min(len(near), 50):
            lines.append(f"  ... {report.get('near_person_count', 0) - min(len(near), 50)} more")
    return "\n".join(lines)
