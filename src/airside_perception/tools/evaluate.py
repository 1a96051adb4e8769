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
from airside_perception.engines import store
from airside_perception.engines.manifest import TASKS, write_manifest
from airside_perception.errors import AirsideError
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.sim.world import make_scan, split_seeds
from airside_perception.tools.metrics import DetectionMeter, OccupancyMeter, SegmentationMeter

PROG = "airside_perception.tools.evaluate"
DEFAULT_ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


def evaluate(host: PerceptionHost, split: str, n_scans: int, density: str = "default",
             progress: bool = True) -> Dict[str, Dict[str, object]]:
    """Runs ``host`` on the first ``n_scans`` of ``split``; metrics of every hosted task."""
    from tqdm import tqdm

    seg, det, occ = SegmentationMeter(), DetectionMeter(), OccupancyMeter()
    failures: List[str] = []
    for seed in tqdm(split_seeds(split, n_scans), desc=f"evaluate {split}", disable=not progress, unit="scan"):
        scan = make_scan(int(seed), density)
        frame = host.process(scan.points)
        failures.extend(f"seed {seed} {t}: {e}" for t, e in frame.errors.items())
        if "segmentation" in frame.results:
            seg.add(scan.labels, frame.results["segmentation"].labels)
        if "detection" in frame.results:
            boxes = frame.results["detection"].boxes
            det_names = classes.DETECTION_CLASS_NAMES
            engine = host.engine("detection")
            det.add(scan.boxes, [classes.CLASS_NAMES[i] for i in scan.box_labels], scan.box_points,
                    boxes.boxes, [det_names[i] for i in boxes.labels], boxes.scores,
                    engine.decode.score_threshold)
        if "occupancy" in frame.results:
            occ.add(scan.occupancy, frame.results["occupancy"].grid.cells == 100)
    out: Dict[str, Dict[str, object]] = {}
    common = {"split": split, "scans": n_scans, "first_seed": int(split_seeds(split, 1)[0]), "density": density}
    if "segmentation" in host.tasks:
        out["segmentation"] = {**seg.summary(), **common}
    if "detection" in host.tasks:
        out["detection"] = {**det.summary(), **common}
    if "occupancy" in host.tasks:
        out["occupancy"] = {**occ.summary(), **common}
    for task in out:
        out[task]["inference_failures"] = sum(1 for f in failures if f" {task}: " in f)
    return out


def evaluate_own_data(host: PerceptionHost, root: str, class_map_path: str, sensor_pose: str, intensity_max: float,
                      progress: bool = True) -> Dict[str, Dict[str, object]]:
    """Segmentation accuracy on labelled scans in the SemanticKITTI layout (see tools.semantickitti);
    classes without ground-truth points in the data are left out of the mIoU."""
    from tqdm import tqdm

    from airside_perception.frames import IntensityScale, parse_sensor_pose
    from airside_perception.tools import semantickitti

    class_map = semantickitti.load_class_map(class_map_path)
    pose = parse_sensor_pose(sensor_pose)
    scale = IntensityScale(intensity_max, host.bev_spec.intensity_max)
    files = semantickitti.scan_files(root)
    meter = SegmentationMeter()
    flagged = 0
    for scan in tqdm(semantickitti.read_scans(root, class_map, pose, scale), total=len(files), desc="evaluate",
                     disable=not progress, unit="scan"):
        frame = host.process(scan.points)
        if "segmentation" in frame.errors:
            raise AirsideError(f"{scan.name}: {frame.errors['segmentation']}")
        scored = scan.labels != classes.UNLABELLED
        meter.add(scan.labels[scored], frame.results["segmentation"].labels[scored])
        score = frame.trust.get("segmentation")
        flagged += bool(score and score.is_out_of_distribution)
    summary = {**meter.summary(only_present=True), "data": root, "class_map": class_map.name, "scans": len(files),
               "sensor_pose": sensor_pose, "intensity_max": intensity_max,
               "frames_out_of_distribution": flagged}
    return {"segmentation": summary}


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.Parser(prog=PROG, description="Accuracy of engines on the synthetic test split.")
    parser.add_argument("--task", choices=list(TASKS) + ["all"], default="all")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--scans", type=cli.positive_int, default=200)
    parser.add_argument("--engines-dir", default=os.path.abspath(DEFAULT_ENGINES))
    parser.add_argument("--version", default="1.0.0", help="version directory of each task")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="onnxruntime")
    parser.add_argument("--write-manifest", action="store_true", help="record the metrics in the manifests")
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    parser.add_argument("--data", help="semantickitti:DIR: the vehicle's own labelled scans instead of the split")
    parser.add_argument("--class-map", help="with --data: YAML {name, labels: {<source id>: <airside class>}}")
    parser.add_argument("--sensor-pose", default="0 0 0 0 0 0",
                        help="with --data: \"x y z roll pitch yaw\" of the sensor in base_link (metres, radians)")
    parser.add_argument("--intensity-max", type=float, default=255.0,
                        help="with --data: the largest intensity in the scans (1.0 for 0..1)")
    args = parser.parse_args(argv)
    if args.data:
        return _main_own_data(args)
    tasks = list(TASKS) if args.task == "all" else [args.task]
    try:
        manifests = [store.load_version(args.engines_dir, t, args.version) for t in tasks]
        host = PerceptionHost([store.open_engine(m, args.backend, intra_op_threads=2) for m in manifests])
    except AirsideError as exc:
        cli.fail(PROG, str(exc))
    metrics = evaluate(host, args.split, args.scans)
    host.close()
    print(json.dumps(metrics, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(metrics, fh, indent=2, default=float)
    if args.write_manifest:
        for manifest in manifests:
            updated = manifest.__class__(**{**manifest.__dict__, "metrics": _rounded(metrics[manifest.task])})
            write_manifest(updated, manifest.directory)
            print(f"metrics written to {manifest.directory}/manifest.yaml")
    return 0


def _main_own_data(args) -> int:
    from airside_perception.frames import parse_sensor_pose
    from airside_perception.tools import semantickitti

    if args.task != "segmentation":
        cli.fail(PROG, "--data evaluates segmentation only: pass --task segmentation")
    if args.write_manifest:
        cli.fail(PROG, "--write-manifest records the synthetic test split only: leave it out with --data")
    try:
        root = semantickitti.data_dir(args.data)
        if not args.class_map:
            raise AirsideError("--data needs --class-map FILE (e.g. config/class_maps/semantickitti.yaml)")
        semantickitti.load_class_map(args.class_map)
        parse_sensor_pose(args.sensor_pose)
        if not args.intensity_max > 0:
            raise AirsideError(f"--intensity-max {args.intensity_max} must be positive (1.0 for 0..1 drivers)")
        semantickitti.scan_files(root)
        manifest = store.load_version(args.engines_dir, "segmentation", args.version)
        host = PerceptionHost([store.open_engine(manifest, args.backend, intra_op_threads=2)])
        metrics = evaluate_own_data(host, root, args.class_map, args.sensor_pose, args.intensity_max)
    except AirsideError as exc:
        cli.fail(PROG, str(exc))
    host.close()
    print(json.dumps(metrics, indent=2, default=float))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(metrics, fh, indent=2, default=float)
    return 0


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if np.isnan(value) else round(value, 2)
    return value


if __name__ == "__main__":
    sys.exit(main())
