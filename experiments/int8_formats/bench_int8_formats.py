#!/usr/bin/env python3
"""Which INT8 form runs fastest on this CPU? One FP32 version quantized by ONNX Runtime's static
quantizer as Q/DQ S8S8, Q/DQ U8S8 and QOperator U8S8 (per-channel weights, same calibration
scans, heads kept in float), timed side by side with the FP32 model on real-size clouds.

    python experiments/int8_formats/bench_int8_formats.py --task segmentation --version 2.0.0 --json docs/results/compression/int8_formats.json
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

from airside_perception import memory
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.pipelines import store
from airside_perception.stats import Percentiles
from airside_perception.tools.quantize import quantize_int8, select_calibration

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "side_by_side"))
from bench_side_by_side import clouds  # noqa: E402

FORMATS = {"qdq_s8s8": ("qdq", "s8"), "qdq_u8s8": ("qdq", "u8"), "qoperator_u8s8": ("qoperator", "u8")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="segmentation")
    ap.add_argument("--version", default="2.0.0")
    ap.add_argument("--engines-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "engines"))
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    memory.keep_frame_buffers()
    manifest = store.load_version(args.engines_dir, args.task, args.version)
    names_in = [t.name for t in manifest.inputs]
    names_out = [t.name for t in manifest.outputs]
    calibration = select_calibration(16)
    tmp = tempfile.mkdtemp()
    models = {"fp32": manifest.model_path}
    for name, (fmt, act) in FORMATS.items():
        path = os.path.join(tmp, f"{name}.onnx")
        quantize_int8(manifest.model_path, path, calibration, names_in, names_out, quant_format=fmt, activations=act)
        models[name] = path
    pts, source = clouds()
    feeds = []
    for p in pts:
        x = encode(p, BevSpec())
        full = {"bev": x.bev, "point_cells": x.point_cells, "point_features": x.point_features}
        feeds.append({k: full[k] for k in names_in})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sessions = {k: ort.InferenceSession(v, opts, providers=["CPUExecutionProvider"]) for k, v in models.items()}
    times = {k: [] for k in sessions}
    for s in sessions.values():
        for f in feeds:
            s.run(None, f)
    for i in range(0, args.runs, 10):
        for k, s in sessions.items():
            for j in range(10):
                t0 = time.perf_counter()
                s.run(None, feeds[(i + j) % len(feeds)])
                times[k].append((time.perf_counter() - t0) * 1e3)
    ref = np.median(times["fp32"])
    out = {"task": args.task, "version": args.version, "clouds": source, "machine": f"{os.cpu_count()} cores",
           "threads": 2, "runs": args.runs, "formats": {}}
    for k, t in times.items():
        p = Percentiles.of(t)
        out["formats"][k] = {"p50_ms": round(p.p50, 2), "p99_ms": round(p.p99, 2),
                             "speedup_p50": round(float(ref / np.median(t)), 2),
                             "file_kb": round(os.path.getsize(models[k]) / 1024, 1)}
        print(k, out["formats"][k], flush=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
