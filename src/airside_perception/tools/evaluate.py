"""Accuracy of the engines on a held-out synthetic split.

    python -m airside_perception.tools.evaluate --task all --split test --scans 200
    python -m airside_perception.tools.evaluate --task detection --version 1.0.0 --write-manifest
    python -m airside_perception.tools.evaluate --task segmentation --data semantickitti:DIR \
        --class-map config/class_maps/semantickitti.yaml --sensor-pose "0 0 1.73 0 0 0" --intensity-max 1 \
        --json out.json

Reproduces the ``metrics`` recorded in each manifest (same split, same scans).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Optional

import numpy as np

from airside_perception import classes, cli
from airside_perception.engines.manifest import TASKS, write_manifest
from airside_perception.errors import AirsideError
from airside_perception.evaluation.metrics import MIN_GT_POINTS, DetectionMeter, OccupancyMeter, SegmentationMeter
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.sim.world import make_scan, split_seeds
from airside_perception.tools.bench import configured_versions

PROG = "airside_perception.tools.evaluate"
DEFAULT_ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


#: Range bands of the breakdown (metres from the vehicle, BEV distance).
RANGE_BANDS = ((0.0, 20.0), (20.0, 40.0), (40.0, float("inf")))


def band_name(lo: float, hi: float) -> str:
    return f"{lo:g}-{hi:g}m" if hi != float("inf") else f"{lo:g}m+"


def scan_conditions(scan) -> List[str]:
    """The condition buckets of one scan: day/night, wet/dry, busy/empty (normal traffic: neither)."""
    out = ["night" if scan.is_night else "day", "wet" if scan.is_wet else "dry"]
    if scan.traffic in ("busy", "empty"):
        out.append(scan.traffic)
    return out


class _Meters:
    """One meter of each hosted task."""

    def __init__(self):
        self.seg, self.det, self.occ = SegmentationMeter(), DetectionMeter(), OccupancyMeter()

    def add(self, host, scan, frame, point_mask=None, box_band=None, cell_mask=None) -> None:
        if "segmentation" in frame.results:
            labels, truth = frame.results["segmentation"].labels, scan.labels
            if point_mask is not None:
                labels, truth = labels[point_mask], truth[point_mask]
            self.seg.add(truth, labels)
        if "detection" in frame.results:
            boxes = frame.results["detection"].boxes
            det_names = classes.DETECTION_CLASS_NAMES
            gt, gt_labels, gt_points = scan.boxes, [classes.CLASS_NAMES[i] for i in scan.box_labels], scan.box_points
            pred, pred_labels, scores = boxes.boxes, [det_names[i] for i in boxes.labels], boxes.scores
            if box_band is not None:  # objects and detections whose centre lies in the band
                g = _in_band(gt, box_band)
                q = _in_band(pred, box_band)
                gt, gt_points = gt[g], gt_points[g]
                gt_labels = [n for n, k in zip(gt_labels, g) if k]
                pred, scores = pred[q], scores[q]
                pred_labels = [n for n, k in zip(pred_labels, q) if k]
            self.det.add(gt, gt_labels, gt_points, pred, pred_labels, scores,
                         host.engine("detection").decode.score_threshold)
        if "occupancy" in frame.results:
            truth, occupied = scan.occupancy, frame.results["occupancy"].grid.cells == 100
            if cell_mask is not None:
                truth, occupied = truth[..., cell_mask], occupied[..., cell_mask]
            self.occ.add(truth, occupied)

    def summary(self, tasks, only_present: bool = False) -> Dict[str, Dict[str, object]]:
        """``only_present``: classes without ground truth in the subset do not score."""
        out: Dict[str, Dict[str, object]] = {}
        if "segmentation" in tasks:
            out["segmentation"] = self.seg.summary(only_present=only_present)
        if "detection" in tasks:
            out["detection"] = self.det.summary()
        if "occupancy" in tasks:
            out["occupancy"] = self.occ.summary()
        return out


def _in_band(boxes: np.ndarray, band) -> np.ndarray:
    r = np.hypot(boxes[:, 0], boxes[:, 1]) if len(boxes) else np.zeros(0)
    return (r >= band[0]) & (r < band[1])


def _cell_range(shape) -> np.ndarray:
    """BEV distance of each occupancy cell centre (rows y, columns x, centred on the vehicle)."""
    from airside_perception.ops.bev import BevSpec

    spec = BevSpec()
    n = shape[-1]
    c = (np.arange(n) + 0.5) * (2 * spec.half_extent_m / n) - spec.half_extent_m
    return np.hypot(c[None, :], c[:, None])


def evaluate(host: PerceptionHost, split: str, n_scans: int, density: str = "default",
             progress: bool = True, breakdown: bool = False) -> Dict[str, Dict[str, object]]:
    """Runs ``host`` on the first ``n_scans`` of ``split``; metrics of every hosted task.

    With ``breakdown``, each task's metrics also hold ``by_range`` (0-20, 20-40, 40+ m) and
    ``by_condition`` (day/night, wet/dry, busy/empty) in the same shape.
    """
    from tqdm import tqdm

    total = _Meters()
    bands = {band_name(*b): _Meters() for b in RANGE_BANDS}
    conditions: Dict[str, _Meters] = {}
    failures: List[str] = []
    cell_range = None
    for seed in tqdm(split_seeds(split, n_scans), desc=f"evaluate {split}", disable=not progress, unit="scan"):
        scan = make_scan(int(seed), density)
        frame = host.process(scan.points)
        failures.extend(f"seed {seed} {t}: {e}" for t, e in frame.errors.items())
        total.add(host, scan, frame)
        if not breakdown:
            continue
        point_range = np.hypot(scan.points[:, 0], scan.points[:, 1])
        if cell_range is None and "occupancy" in frame.results:
            cell_range = _cell_range(scan.occupancy.shape)
        for band in RANGE_BANDS:
            in_band = (point_range >= band[0]) & (point_range < band[1])
            cells = None if cell_range is None else (cell_range >= band[0]) & (cell_range < band[1])
            bands[band_name(*band)].add(host, scan, frame, point_mask=in_band, box_band=band, cell_mask=cells)
        for name in scan_conditions(scan):
            conditions.setdefault(name, _Meters()).add(host, scan, frame)
    out = total.summary(host.tasks)
    if breakdown:
        by_band = {name: m.summary(host.tasks, only_present=True) for name, m in bands.items()}
        by_cond = {name: m.summary(host.tasks, only_present=True) for name, m in sorted(conditions.items())}
        for task in out:
            out[task]["by_range"] = {name: _headline(v[task]) for name, v in by_band.items()}
            out[task]["by_condition"] = {name: _headline(v[task]) for name, v in by_cond.items()}
    common = {"split": split, "scans": n_scans, "first_seed": int(split_seeds(split, 1)[0]), "density": density}
    for task in out:
        out[task].update(common)
    for task in out:
        out[task]["inference_failures"] = sum(1 for f in failures if f" {task}: " in f)
    return out


def _headline(summary: Dict[str, object]) -> Dict[str, object]:
    """The per-class part of a task summary, for the breakdown tables."""
    keep = ("miou", "iou", "map", "ap", "person_recall_20m", "near_persons", "gt_objects", "points")
    return {k: v for k, v in summary.items() if k in keep}


def evaluate_own_data(host: PerceptionHost, root: str, class_map_path: str, sensor_pose: str, intensity_max: float,
                      progress: bool = True) -> Dict[str, Dict[str, object]]:
    """Segmentation accuracy on labelled scans in the SemanticKITTI layout (see tools.semantickitti);
    classes without ground-truth points in the data are left out of the mIoU."""
    from tqdm import tqdm

    from airside_perception.evaluation import semantickitti
    from airside_perception.frames import IntensityScale, parse_sensor_pose

    class_map = semantickitti.load_class_map(class_map_path)
    pose = parse_sensor_pose(sensor_pose)
    scale = IntensityScale(intensity_max, host.bev_spec.intensity_max)
    files = semantickitti.scan_files(root)
    meter = SegmentationMeter()
    bands = {band_name(*b): SegmentationMeter() for b in RANGE_BANDS}
    flagged = 0
    for scan in tqdm(semantickitti.read_scans(root, class_map, pose, scale), total=len(files), desc="evaluate",
                     disable=not progress, unit="scan"):
        frame = host.process(scan.points)
        if "segmentation" in frame.errors:
            raise AirsideError(f"{scan.name}: {frame.errors['segmentation']}")
        scored = scan.labels != classes.UNLABELLED
        predicted = frame.results["segmentation"].labels
        meter.add(scan.labels[scored], predicted[scored])
        point_range = np.hypot(scan.points[:, 0], scan.points[:, 1])
        for band in RANGE_BANDS:
            in_band = scored & (point_range >= band[0]) & (point_range < band[1])
            bands[band_name(*band)].add(scan.labels[in_band], predicted[in_band])
        score = frame.trust.get("segmentation")
        flagged += bool(score and score.is_out_of_distribution)
    has_monitor = host.engine("segmentation").monitor is not None
    summary = {**meter.summary(only_present=True), "data": root, "class_map": class_map.name, "scans": len(files),
               "sensor_pose": sensor_pose, "intensity_max": intensity_max,
               # a version without a monitor says nothing about distribution shift: unknown, not 0
               "frames_out_of_distribution": flagged if has_monitor else None,
               "by_range": {name: {k: v for k, v in m.summary(only_present=True).items() if k in ("miou", "iou",
                                                                                                  "points")}
                            for name, m in bands.items()},
               # rows: the labelled class, columns: the predicted one (points)
               "confusion": {"classes": list(meter.names), "points": meter.confusion.tolist()}}
    return {"segmentation": summary}


def confusion_table(confusion: Dict[str, object]) -> str:
    """The confusion matrix as text: rows labelled, columns predicted, in % of each row."""
    names, points = confusion["classes"], np.array(confusion["points"], float)
    short = [n[:9] for n in names]
    lines = ["labelled \\ predicted (% of the row)   " + " ".join(f"{n:>9s}" for n in short)]
    for name, row in zip(names, points):
        if row.sum() == 0:
            continue
        lines.append(f"{name:37s} " + " ".join(f"{100 * v / row.sum():9.1f}" for v in row))
    return "\n".join(lines)


def evaluate_kitti_objects(host: PerceptionHost, root: str, class_map_path: str, sensor_pose: str,
                           intensity_max: float, progress: bool = True) -> Dict[str, Dict[str, object]]:
    """Detection accuracy on labelled boxes in the KITTI object layout (``evaluation.kitti_object``):
    AP per class present, near-field person recall, and the same by range band."""
    from tqdm import tqdm

    from airside_perception.evaluation import kitti_object
    from airside_perception.frames import IntensityScale, parse_sensor_pose

    class_map = kitti_object.load_class_map(class_map_path)
    files = kitti_object.scan_files(root)
    scale = IntensityScale(intensity_max, host.bev_spec.intensity_max)
    total = DetectionMeter()
    bands = {band_name(*b): DetectionMeter() for b in RANGE_BANDS}
    engine = host.engine("detection")
    names = classes.DETECTION_CLASS_NAMES
    flagged = objects = 0
    columns = list(names) + ["missed"]
    confusion = np.zeros((len(names), len(columns)), np.int64)  # labelled class x what the nearest box says
    for scan in tqdm(kitti_object.read_scans(root, class_map, parse_sensor_pose(sensor_pose), scale),
                     total=len(files), desc="evaluate", disable=not progress, unit="scan"):
        frame = host.process(scan.points)
        if "detection" in frame.errors:
            raise AirsideError(f"{scan.name}: {frame.errors['detection']}")
        boxes = frame.results["detection"].boxes
        pred, pred_labels = boxes.boxes, [names[i] for i in boxes.labels]
        threshold = engine.decode.score_threshold
        total.add(scan.boxes, scan.labels, scan.box_points, pred, pred_labels, boxes.scores, threshold)
        for band in RANGE_BANDS:
            g, q = _in_band(scan.boxes, band), _in_band(pred, band)
            bands[band_name(*band)].add(scan.boxes[g], [n for n, k in zip(scan.labels, g) if k], scan.box_points[g],
                                        pred[q], [n for n, k in zip(pred_labels, q) if k], boxes.scores[q], threshold)
        objects += len(scan.labels)
        confident = boxes.scores >= threshold
        scored = (np.abs(scan.boxes[:, 0]) < total.range_m) & (np.abs(scan.boxes[:, 1]) < total.range_m) \
            & (scan.box_points >= MIN_GT_POINTS) if len(scan.boxes) else np.zeros(0, bool)
        for box, label, keep in zip(scan.boxes, scan.labels, scored):  # as AP scores them: in range, enough returns
            if not keep:
                continue
            d = np.hypot(*(pred[confident, :2] - box[:2]).T) if confident.any() else np.zeros(0)
            hit = names[boxes.labels[confident][int(d.argmin())]] if len(d) and d.min() <= 2.0 else "missed"
            confusion[names.index(label), columns.index(hit)] += 1
        score = frame.trust.get("detection")
        flagged += bool(score and score.is_out_of_distribution)
    summary = total.summary()
    present = {n for n, v in (summary.get("gt_objects") or {}).items() if v} if isinstance(
        summary.get("gt_objects"), dict) else None
    if present is not None:  # classes the data does not contain do not score
        summary["ap"] = {k: v for k, v in summary["ap"].items() if k in present}
        scored = [v for v in summary["ap"].values() if v == v]
        summary["map"] = float(np.mean(scored)) if scored else float("nan")
    summary["confusion"] = {"classes": list(names), "predicted": columns, "objects": confusion.tolist()}
    summary.update(data=root, class_map=os.path.basename(class_map_path), scans=len(files), objects=objects,
                   sensor_pose=sensor_pose, intensity_max=intensity_max,
                   frames_out_of_distribution=flagged if engine.monitor is not None else None,
                   by_range={name: {k: v for k, v in m.summary().items() if k in ("map", "ap", "person_recall_20m",
                                                                                  "gt_objects")}
                             for name, m in bands.items()})
    return {"detection": summary}


def measured(host: PerceptionHost, backend: str, argv: Optional[List[str]]) -> Dict[str, Dict[str, object]]:
    """What each task's figures were measured on: version, model checksum, backend, machine, command."""
    out = {}
    for task in host.tasks:
        engine = host.engine(task)
        out[task] = {"version": engine.version, "model_sha256": engine.manifest.sha256,
                     "precision": engine.manifest.precision, "backend": engine.backend.name,
                     "machine": cli.machine(), "command": cli.command_line(argv, PROG)}
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.Parser(prog=PROG, description="Accuracy of engines on the synthetic test split.")
    parser.add_argument("--task", choices=list(TASKS) + ["all"], default="all")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--scans", type=cli.positive_int, default=200)
    parser.add_argument("--engines-dir", default=os.path.abspath(DEFAULT_ENGINES))
    parser.add_argument("--version", action="append", default=None, metavar="[TASK=]V",
                        help="V: this version of every task; TASK=V: of one task (repeatable); default: the "
                             "versions in config/inference_host.yaml, as the inference host starts")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="onnxruntime")
    parser.add_argument("--write-manifest", action="store_true", help="record the metrics in the manifests")
    parser.add_argument("--json", type=cli.writable_file, help="also write the metrics to this JSON file (its "
                                                               "folder is created)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also by range band (0-20, 20-40, 40+ m) and condition (day/night, wet/dry, busy/empty)")
    parser.add_argument("--data", help="the team's own labelled scans instead of the split: semantickitti:DIR "
                                       "(point labels, --task segmentation) or kitti:DIR (boxes: velodyne/, "
                                       "label_2/, calib/; --task detection)")
    parser.add_argument("--class-map", help="with --data: YAML {name, labels: {<source id or type>: <airside class>}} "
                                            "(default for kitti:DIR: config/class_maps/kitti_object.yaml)")
    parser.add_argument("--sensor-pose", default="0 0 0 0 0 0",
                        help="with --data: \"x y z roll pitch yaw\" of the sensor in base_link (metres, radians)")
    parser.add_argument("--intensity-max", type=float, default=255.0,
                        help="with --data: the largest intensity in the scans (1.0 for 0..1)")
    args = parser.parse_args(argv)
    tasks = list(TASKS) if args.task == "all" else [args.task]
    try:
        args.versions = cli.task_versions(args.version, tasks, configured_versions())
    except (ValueError, AirsideError) as exc:
        cli.fail(PROG, str(exc), cli.code_of(exc))
    if args.data:
        return _main_own_data(args, argv)
    try:
        manifests = [store.load_version(args.engines_dir, t, args.versions[t]) for t in tasks]
        host = PerceptionHost([store.open_engine(m, args.backend, intra_op_threads=2) for m in manifests])
    except AirsideError as exc:
        cli.fail(PROG, str(exc), cli.code_of(exc))
    metrics = evaluate(host, args.split, args.scans, breakdown=args.breakdown)
    for task, what in measured(host, args.backend, argv).items():
        metrics[task] = {**what, "data": f"synthetic {args.split} split", "scans": args.scans, **metrics[task]}
    host.close()
    _emit(metrics, args.json)
    if args.write_manifest:
        for manifest in manifests:
            recorded = {k: v for k, v in metrics[manifest.task].items() if k not in ("by_range", "by_condition")
                        and k not in RUN_KEYS}
            updated = manifest.__class__(**{**manifest.__dict__, "metrics": _rounded(recorded)})
            write_manifest(updated, manifest.directory)
            print(f"metrics written to {manifest.directory}/manifest.yaml")
    return 0


RUN_KEYS = ("version", "model_sha256", "precision", "backend", "machine", "command", "data")


def _main_own_data(args, argv=None) -> int:
    from airside_perception.evaluation import semantickitti

    if args.data.startswith("kitti:"):
        return _main_kitti_objects(args, argv)
    if args.task != "segmentation":
        cli.fail(PROG, "--data semantickitti:DIR evaluates segmentation (point labels): pass --task segmentation, "
                       "or --task detection --data kitti:DIR for labelled boxes")
    if args.write_manifest:
        cli.fail(PROG, "--write-manifest records the synthetic test split only: leave it out with --data")
    try:
        root = semantickitti.data_dir(args.data)
        if not args.class_map:
            raise AirsideError("--data needs --class-map FILE (e.g. config/class_maps/semantickitti.yaml)")
        semantickitti.load_class_map(args.class_map)
        semantickitti.scan_files(root)
        host, warnings = _own_data_host(args, "segmentation", root)
        metrics = evaluate_own_data(host, root, args.class_map, args.sensor_pose, args.intensity_max)
    except AirsideError as exc:
        cli.fail(PROG, str(exc), cli.code_of(exc))
    metrics["segmentation"] = {**measured(host, args.backend, argv)["segmentation"], **metrics["segmentation"],
                               "warnings": warnings}
    host.close()
    _emit(metrics, args.json)
    print(confusion_table(metrics["segmentation"]["confusion"]), file=sys.stderr)
    return 0


def _main_kitti_objects(args, argv=None) -> int:
    from airside_perception.evaluation import kitti_object

    if args.task != "detection":
        cli.fail(PROG, "--data kitti:DIR holds labelled boxes (the KITTI object layout): pass --task detection "
                       "(segmentation scores --data semantickitti:DIR)")
    if args.write_manifest:
        cli.fail(PROG, "--write-manifest records the synthetic test split only: leave it out with --data")
    root = args.data[len("kitti:"):]
    class_map = args.class_map or os.path.join(os.path.dirname(os.path.abspath(DEFAULT_ENGINES)), "config",
                                               "class_maps", "kitti_object.yaml")
    try:
        kitti_object.load_class_map(class_map)
        kitti_object.scan_files(root)
        host, warnings = _own_data_host(args, "detection", root)
        metrics = evaluate_kitti_objects(host, root, class_map, args.sensor_pose, args.intensity_max)
    except AirsideError as exc:
        cli.fail(PROG, str(exc), cli.code_of(exc))
    metrics["detection"] = {**measured(host, args.backend, argv)["detection"], **metrics["detection"],
                            "warnings": warnings}
    host.close()
    _emit(metrics, args.json)
    return 0


def _own_data_host(args, task: str, root: str):
    """The checked pose and scale of ``--data``, the warnings where they contradict the scans
    (printed), and a host of the task's version: (host, warnings). Raises AirsideError."""
    from airside_perception.evaluation import semantickitti
    from airside_perception.frames import parse_sensor_pose

    parse_sensor_pose(args.sensor_pose)
    if not args.intensity_max > 0:
        raise AirsideError(f"--intensity-max {args.intensity_max} must be positive (1.0 for 0..1 drivers)")
    warnings = semantickitti.settings_warnings(root, args.sensor_pose, args.intensity_max)
    for line in warnings:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    manifest = store.load_version(args.engines_dir, task, args.versions[task])
    return PerceptionHost([store.open_engine(manifest, args.backend, intra_op_threads=2)]), warnings


def _emit(metrics, json_path: Optional[str]) -> None:
    """The metrics on stdout and, with --json, in that file (NaN as null)."""
    print(json.dumps(json_safe(metrics), indent=2, default=float))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(json_safe(metrics), fh, indent=2, default=float)


def json_safe(value):
    """NaN and infinities as null: strict JSON readers reject the bare NaN json.dump writes."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 2)
    return value


if __name__ == "__main__":
    sys.exit(main())
