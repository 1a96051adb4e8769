"""Accuracy of the RANSAC baseline on a held-out synthetic split.

    python -m airside_perception.tools.evaluate_baseline --split test --scans 200

Ground segmentation: precision, recall and F1 of ground points (classified points only);
obstacles: recall of persons within 20 m (a person counts as seen when its centre lies in a
baseline obstacle box grown by 0.3 m), and of every object class within 20 m.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional

import numpy as np

from airside_perception import classes, cli
from airside_perception.baseline.pipeline import BaselineParams, run_baseline
from airside_perception.sim.world import make_scan, split_seeds
from airside_perception.simplex.fusion import inside_boxes
from airside_perception.stats import Percentiles

PROG = "airside_perception.tools.evaluate_baseline"
NEAR_M = 20.0
MARGIN_M = 0.3
MIN_POINTS = 5


def covered(centres: np.ndarray, boxes: np.ndarray, margin_m: float = MARGIN_M) -> np.ndarray:
    """(M,) bool: which BEV ``centres`` (M, 2) lie in any of ``boxes`` (B, 7) grown by ``margin_m``."""
    if len(boxes) == 0 or len(centres) == 0:
        return np.zeros(len(centres), bool)
    return inside_boxes(centres[:, None, :], boxes[None, :, :], margin_m).any(axis=1)


def evaluate(split: str, n_scans: int, progress: bool = True) -> Dict[str, object]:
    from tqdm import tqdm

    params = BaselineParams()
    tp = fp = fn = 0
    seen: Dict[str, List[int]] = {n: [0, 0] for n in classes.CLASS_NAMES if n not in ("ground", "unknown")}
    times: List[float] = []
    for seed in tqdm(split_seeds(split, n_scans), desc=f"baseline {split}", disable=not progress, unit="scan"):
        scan = make_scan(int(seed))
        result = run_baseline(scan.points, params)
        times.append(result.timings_ms["total"])
        m = result.labels != classes.UNLABELLED
        truth, pred = scan.labels[m] == classes.GROUND, result.labels[m] == 0
        tp += int((truth & pred).sum())
        fp += int((~truth & pred).sum())
        fn += int((truth & ~pred).sum())
        near = (np.hypot(scan.boxes[:, 0], scan.boxes[:, 1]) < NEAR_M) & (scan.box_points >= MIN_POINTS)
        hit = covered(scan.boxes[near, :2], result.boxes)
        for label, ok in zip(scan.box_labels[near], hit):
            name = classes.CLASS_NAMES[label]
            if name in seen:
                seen[name][0] += int(ok)
                seen[name][1] += 1
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    p = Percentiles.of(times)
    return {"split": split, "scans": n_scans,
            "ground": {"precision": round(precision * 100, 2), "recall": round(recall * 100, 2),
                       "f1": round(200 * precision * recall / max(precision + recall, 1e-9), 2)},
            "recall_within_20m": {n: {"found": f, "objects": t, "recall": round(100 * f / t, 2) if t else None}
                                  for n, (f, t) in seen.items()},
            "person_recall_20m": round(100 * seen["person"][0] / max(seen["person"][1], 1), 2),
            "processing_ms": {"p50": round(p.p50, 2), "p99": round(p.p99, 2), "max": round(p.max, 2)}}


def main(argv: Optional[List[str]] = None) -> int:
    parser = cli.Parser(prog=PROG, description="Ground F1 and obstacle recall of the RANSAC baseline.")
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--scans", type=cli.positive_int, default=200)
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    metrics = evaluate(args.split, args.scans)
    print(json.dumps(metrics, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(metrics, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
