"""Release gates: may a candidate engine replace the baseline engine on the vehicle?

Both engines run on the same held-out scans. Gates (drops in points of the metric):
segmentation mIoU drop < 3, person IoU drop < 1, aircraft IoU drop < 2; detection mAP drop
< 3, person AP drop < 1, aircraft AP drop < 2; occupancy IoU drop < 3; no person within 20 m
that the baseline finds and the candidate misses (segmentation: by the person's own points;
detection: by group, see below); warm P99 latency within the task's budget; no inference
failure over N consecutive frames.

Detection finds a person when a confident person box is matched to it one-to-one within
``PERSON_MATCH_M``. Where persons stand closer than twice that radius, which of them a box is
matched to is decided by a few centimetres: two engines that each put one box on a close pair
"find" different members of it. So the persons are grouped (chained within ``2 * PERSON_MATCH_M``)
and the gate fails when, in any group, the candidate finds fewer near persons than the baseline;
the individual disagreements inside groups where it finds as many are listed in the detail.

Latency is measured apart from the accuracy pass, each engine alone and warm, on
default-density (about 100k-point) clouds of the split: interleaved with the other engine
and with new scans, the P99 mostly measured the caches.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Set, Tuple

import numpy as np

from airside_perception import classes
from airside_perception.engines.manifest import Manifest
from airside_perception.evaluation.metrics import (
    MIN_GT_POINTS,
    NEAR_FIELD_M,
    PERSON_MATCH_M,
    DetectionMeter,
    OccupancyMeter,
    SegmentationMeter,
    match_centres,
)
from airside_perception.ops.bev import encode
from airside_perception.pipelines.tasks import TaskEngine, TaskResult
from airside_perception.sim.world import Scan, make_scan, split_seeds
from airside_perception.stats import Percentiles, time_calls

LATENCY_CLOUDS = 8
LATENCY_RUNS = 200
LATENCY_WARMUP = 5


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    value: float
    limit: float
    detail: str


def _persons(scan: Scan) -> List[int]:
    """Indices of the scan's persons with enough returns to be scored."""
    return [i for i, (lab, n) in enumerate(zip(scan.box_labels, scan.box_points))
            if lab == classes.PERSON and n >= MIN_GT_POINTS]


def _near_persons(scan: Scan) -> List[int]:
    return [i for i in _persons(scan) if np.hypot(*scan.boxes[i, :2]) < NEAR_FIELD_M]


def persons_found(task: str, scan: Scan, result: TaskResult, score_threshold: float) -> Set[int]:
    """Indices of the near-field persons of ``scan`` that ``result`` finds: segmentation, half of
    a person's points labelled person; detection, a confident person box matched one-to-one
    (against every person of the scan, near or not) within ``PERSON_MATCH_M`` of its centre."""
    if task == "segmentation":
        return {i for i in _near_persons(scan)
                if (result.labels[scan.object_ids == i] == classes.PERSON).mean() >= 0.5}
    b = result.boxes
    person = (b.labels == classes.DETECTION_CLASS_NAMES.index("person")) & (b.scores >= score_threshold)
    objects = _persons(scan)
    taken = match_centres(scan.boxes[objects, :2], b.boxes[person, :2], b.scores[person], PERSON_MATCH_M)
    near = set(_near_persons(scan))
    return {i for i, hit in zip(objects, taken) if hit and i in near}


def person_groups(scan: Scan) -> Dict[int, int]:
    """Person index -> group (the smallest index of its group): the persons with enough returns,
    chained where two stand within ``2 * PERSON_MATCH_M`` of each other."""
    persons = _persons(scan)
    group = {i: i for i in persons}

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    xy = scan.boxes[persons, :2] if persons else np.zeros((0, 2))
    for a in range(len(persons)):
        close = np.flatnonzero(np.hypot(*(xy[a + 1:] - xy[a]).T) < 2 * PERSON_MATCH_M) + a + 1
        for b in close:
            ra, rb = root(persons[a]), root(persons[int(b)])
            group[max(ra, rb)] = min(ra, rb)
    return {i: root(i) for i in persons}


def lost_persons(task: str, baseline: Set[Tuple[int, int]], candidate: Set[Tuple[int, int]],
                 groups: Dict[Tuple[int, int], Tuple[int, int]]) -> Tuple[List, List]:
    """(lost, swapped): near persons the baseline finds and the candidate misses, split into
    those that count (segmentation: every one; detection: the shortfall of each group in which
    the candidate finds fewer than the baseline) and those inside groups where the candidate
    finds as many (detection only)."""
    missed = sorted(baseline - candidate)
    if task != "detection":
        return missed, []
    short = Counter(groups[p] for p in baseline)
    short.subtract(groups[p] for p in candidate)  # per group: how many fewer the candidate finds
    lost, swapped = [], []
    for p in missed:
        g = groups[p]
        if short[g] > 0:
            short[g] -= 1
            lost.append(p)
        else:
            swapped.append(p)
    return lost, swapped


class _Run:
    """Metrics and near-field persons of one engine."""

    def __init__(self, task: str):
        self.task = task
        self.seg, self.det, self.occ = SegmentationMeter(), DetectionMeter(), OccupancyMeter()
        self.persons: Set[Tuple[int, int]] = set()

    def add(self, scan: Scan, engine: TaskEngine, result: TaskResult) -> None:
        if self.task == "segmentation":
            self.seg.add(scan.labels, result.labels)
        elif self.task == "detection":
            names = classes.DETECTION_CLASS_NAMES
            b = result.boxes
            self.det.add(scan.boxes, [classes.CLASS_NAMES[i] for i in scan.box_labels], scan.box_points, b.boxes,
                         [names[i] for i in b.labels], b.scores, engine.decode.score_threshold)
        else:
            self.occ.add(scan.occupancy, result.grid.cells == 100)
        if self.task != "occupancy":
            threshold = engine.decode.score_threshold if self.task == "detection" else 0.0
            self.persons |= {(scan.seed, i) for i in persons_found(self.task, scan, result, threshold)}

    def summary(self) -> Dict[str, object]:
        return {"segmentation": self.seg.summary, "detection": self.det.summary,
                "occupancy": self.occ.summary}[self.task]()


def _drop_gates(task: str, base: Dict, cand: Dict) -> List[Gate]:
    def drop(name, b, c, limit):
        d = b - c
        return Gate(name, bool(d < limit), round(d, 3), limit, f"{b:.2f} -> {c:.2f}")
    if task == "segmentation":
        return [drop("miou_drop", base["miou"], cand["miou"], 3.0),
                drop("person_iou_drop", base["iou"]["person"], cand["iou"]["person"], 1.0),
                drop("aircraft_iou_drop", base["iou"]["aircraft"], cand["iou"]["aircraft"], 2.0)]
    if task == "detection":
        return [drop("map_drop", base["map"], cand["map"], 3.0),
                drop("person_ap_drop", base["ap"]["person"], cand["ap"]["person"], 1.0),
                drop("aircraft_ap_drop", base["ap"]["aircraft"], cand["ap"]["aircraft"], 2.0)]
    return [drop("iou_drop", base["iou"], cand["iou"], 3.0)]


def run_gates(baseline: TaskEngine, candidate: TaskEngine, n_scans: int, n_frames: int, budget_ms: float,
              split: str = "test", progress: bool = True, shifted_scans: Optional[int] = None,
              kitti_dir: Optional[str] = None) -> Dict[str, object]:
    """Compares ``candidate`` with ``baseline`` and returns the report (``passed`` and every gate).
    ``shifted_scans``: scans of each simulated shifted source (``evaluation.shifted``; default a
    quarter of ``n_scans``, at least 10; 0 leaves the shifted-data gate out)."""
    from tqdm import tqdm

    task = candidate.task
    runs = {"baseline": _Run(task), "candidate": _Run(task)}
    groups: Dict[Tuple[int, int], Tuple[int, int]] = {}  # detection: (seed, person) -> (seed, group)
    for seed in tqdm(split_seeds(split, n_scans), desc="gates: accuracy", disable=not progress, unit="scan"):
        scan = make_scan(int(seed))
        x = encode(scan.points, candidate.bev_spec)
        for name, engine in (("baseline", baseline), ("candidate", candidate)):
            runs[name].add(scan, engine, engine.run(x))
        if task == "detection":
            groups.update({(scan.seed, i): (scan.seed, g) for i, g in person_groups(scan).items()})
    base, cand = runs["baseline"].summary(), runs["candidate"].summary()
    gates = _drop_gates(task, base, cand)
    if task != "occupancy":
        lost, swapped = lost_persons(task, runs["baseline"].persons, runs["candidate"].persons, groups)
        detail = (f"{len(runs['baseline'].persons)} near persons found by the baseline; candidate misses "
                  f"{len(lost)} of them" + (f" (seed, object): {lost[:10]}" if lost else ""))
        if task == "detection":
            detail += (f"; {len(swapped)} more found by the baseline alone in groups where the candidate "
                       "finds as many persons" + (f" {swapped[:10]}" if swapped else ""))
        gates.append(Gate("no_new_person_misses_20m", not lost, float(len(lost)), 0.0, detail))
    clouds = [encode(make_scan(int(seed)).points, candidate.bev_spec) for seed in
              split_seeds(split, min(n_scans, LATENCY_CLOUDS))]
    latency = {name: _latency(engine, clouds, progress) for name, engine in
               (("baseline", baseline), ("candidate", candidate))}
    p99 = Percentiles.of(latency["candidate"]).p99
    gates.append(Gate("latency_p99_ms", bool(p99 <= budget_ms), round(p99, 2), budget_ms,
                      f"warm P99 {p99:.1f} ms over {LATENCY_RUNS} runs on this machine against the "
                      f"{budget_ms:.0f} ms budget (baseline engine {Percentiles.of(latency['baseline']).p99:.1f} ms)"))
    failures, longest_ok = _soak(candidate, n_frames, progress)
    gates.append(Gate("no_inference_failure", failures == 0, float(failures), 0.0,
                      f"{failures} failed or non-finite frames of {n_frames} consecutive ones"))
    shifted_report = None
    n_shifted = max(10, n_scans // 4) if shifted_scans is None else shifted_scans
    if n_shifted:
        from airside_perception.evaluation.shifted import shifted_gates

        more, shifted_report = shifted_gates(baseline, candidate, n_shifted, kitti_dir, progress)
        gates += [Gate(**g) for g in more]
    return {"task": task, "baseline_version": baseline.version, "candidate_version": candidate.version,
            "candidate_sha256": candidate.manifest.sha256, "split": split, "scans": n_scans, "frames": n_frames,
            "passed": all(g.passed for g in gates), "gates": [asdict(g) for g in gates],
            "baseline_metrics": base, "candidate_metrics": cand,
            "latency_ms": latency, "shifted": shifted_report,
            "confusion": runs["candidate"].seg.confusion.tolist() if task == "segmentation" else None}


def _latency(engine: TaskEngine, clouds: List, progress: bool) -> List[float]:
    """Milliseconds of inference and post-processing per cloud, the engine alone and warm."""
    from tqdm import tqdm

    return time_calls(lambda i: engine.run(clouds[i % len(clouds)]), LATENCY_RUNS, LATENCY_WARMUP,
                      lambda n: tqdm(range(n), desc=f"gates: latency {engine.version}", disable=not progress,
                                     unit="run"))


def _soak(engine: TaskEngine, n_frames: int, progress: bool) -> Tuple[int, int]:
    """Runs ``n_frames`` consecutive frames (clouds of every density, cycled); counts failures."""
    from tqdm import tqdm

    from airside_perception.errors import InferenceError

    inputs = [encode(make_scan(s, d).points, engine.bev_spec) for s, d in
              ((120_000, "compact"), (120_001, "default"), (120_002, "dense"))]
    failures = 0
    for i in tqdm(range(n_frames), desc="gates: consecutive frames", disable=not progress, unit="frame"):
        try:
            engine.run(inputs[i % len(inputs)])
        except InferenceError:
            failures += 1
    return failures, n_frames - failures


def write_reports(report: Dict[str, object], out_dir: str, manifest: Optional[Manifest] = None) -> List[str]:
    """JSON and Markdown reports with plots; ``gate_report.json`` beside the candidate manifest."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    json_path = os.path.join(out_dir, "gate_report.json")
    with open(json_path, "w") as fh:
        json.dump(report, fh, indent=2, default=float)
    written.append(json_path)
    if manifest is not None:
        beside = os.path.join(manifest.directory, "gate_report.json")
        with open(beside, "w") as fh:
            json.dump({k: v for k, v in report.items() if k not in ("latency_ms", "confusion")}, fh, indent=2,
                      default=float)
        written.append(beside)
    plots = _plots(report, out_dir)
    md = _markdown(report, plots)
    md_path = os.path.join(out_dir, "gate_report.md")
    with open(md_path, "w") as fh:
        fh.write(md)
    return written + [md_path] + plots


def _plots(report: Dict[str, object], out_dir: str) -> List[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name, values in report["latency_ms"].items():
        ax.hist(values, bins=40, alpha=0.6, label=f"{name} ({report[name + '_version']})")
    ax.set_xlabel("inference + post-processing (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"{report['task']}: latency on this machine")
    ax.legend()
    path = os.path.join(out_dir, "latency_histogram.png")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    paths.append(path)
    if report.get("confusion"):
        conf = np.asarray(report["confusion"], float)
        norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
        im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
        names = classes.CLASS_NAMES
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"candidate {report['candidate_version']}: confusion (row-normalised)")
        fig.colorbar(im)
        path = os.path.join(out_dir, "confusion_matrix.png")
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def _markdown(report: Dict[str, object], plots: List[str]) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [f"# Gate report: {report['task']} {report['candidate_version']} vs {report['baseline_version']}",
             "", f"**{verdict}** on {report['scans']} scans of the {report['split']} split and "
             f"{report['frames']} consecutive frames.", "", "| gate | passed | value | limit | detail |",
             "|---|---|---|---|---|"]
    for g in report["gates"]:
        lines.append(f"| {g['name']} | {'yes' if g['passed'] else '**no**'} | {g['value']} | {g['limit']} | "
                     f"{g['detail']} |")
    base, cand = report["baseline_metrics"], report["candidate_metrics"]
    per_class = base.get("iou") or base.get("ap")
    if isinstance(per_class, dict):
        key = "iou" if "iou" in base and isinstance(base["iou"], dict) else "ap"
        lines += ["", f"| class | baseline {key} | candidate {key} | change |", "|---|---|---|---|"]
        for name, value in per_class.items():
            c = cand[key][name]
            lines.append(f"| {name} | {value} | {c} | {c - value:+.2f} |")
    lines += [""] + [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in plots]
    return "\n".join(lines) + "\n"
