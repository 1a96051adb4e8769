#!/usr/bin/env python3
"""The Orin's segmentation versions against their parent, with the GPU runtime that is here.

    PYTHONPATH=src python3 scripts/gpu_orin_versions.py --kitti DIR --out docs/results/gpu_orin_versions.json

Versions: the parent (``models/segmentation-2.2.0.pt``) and its 2:4-sparse fine-tune
(``-sparse``); the quantization-aware INT8 version exists as Q/DQ ONNX only, which no runtime
here runs on the GPU (see ``INT8_NOTE``). Each network runs on the largest KITTI scan (fused GPU encoding),
captured as a CUDA graph; P50 / P99 / max of ``--runs`` replays with CUDA events, and each
version's labels against the parent's on every scan.

What this runtime can show: PyTorch runs 2:4 weights on dense kernels (zeros cost the same). What
it cannot:
TensorRT's sparse tensor-core kernels (``--sparsity``) and its INT8 kernels with Q/DQ folded
into them (``--int8``), on the Orin's Ampere GPU. Two kernel-level proxies are measured here:
the per-point head's layers as semi-structured sparse (cuSPARSELt) against dense, FP16, and
the head's first GEMM as INT8 (``torch._int_mm``) against FP16 and FP32, on the scan's points.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "src"))

from airside_perception import cli  # noqa: E402
from airside_perception.evaluation.semantickitti import kitti_clouds  # noqa: E402
from airside_perception.ops import bev  # noqa: E402

VERSIONS = {"2.2.0": "models/segmentation-2.2.0.pt", "2.2.0-sparse": "models/segmentation-2.2.0-sparse.pt"}
INT8_NOTE = ("2.2.0-int8 is a Q/DQ ONNX model; no runtime here runs INT8 on this GPU (PyTorch has no INT8 "
             "convolution path for it, ONNX Runtime here has no CUDA provider, TensorRT is not installable): its "
             "accuracy is in its gate report (ONNX Runtime, CPU), its GPU figure here is the INT8 GEMM proxy")


def summary(values):
    v = np.asarray(values, float)
    return {"p50_ms": round(float(np.percentile(v, 50)), 4), "p99_ms": round(float(np.percentile(v, 99)), 4),
            "max_ms": round(float(v.max()), 4)}


def event_times(torch, fn, runs):
    out = []
    for _ in range(10):
        fn()
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out


def graphed(torch, net, inputs):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(side):
        for _ in range(3):
            net(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        out = net(*inputs)
    return g, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", required=True)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--sparse", default=VERSIONS["2.2.0-sparse"], help="the 2:4 network (default: the shipped one)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    VERSIONS["2.2.0-sparse"] = args.sparse
    import torch

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    scans = kitti_clouds(args.kitti)
    spec = bev.BevSpec()
    encoded = [bev.encode(s.points, spec) for s in scans]
    big = max(range(len(scans)), key=lambda i: len(scans[i].points))
    dev = torch.device("cuda")

    def feeds(enc, dtype=torch.float32):
        return (torch.from_numpy(enc.bev).to(dev, dtype), torch.from_numpy(enc.point_cells).to(dev),
                torch.from_numpy(enc.point_features).to(dev, dtype))

    from airside_perception.training import checkpoint

    nets = {v: checkpoint.load_network("segmentation", p if os.path.isabs(p) else os.path.join(ROOT, p)).to(dev).eval()
            for v, p in VERSIONS.items()}
    result = {"device": torch.cuda.get_device_name(0), "points": int(len(scans[big].points)),
              "encoded_points": int(len(encoded[big].kept)), "versions": {}}
    with torch.no_grad():
        parent_labels = [nets["2.2.0"](*feeds(e)).argmax(1) for e in encoded]
        for version, net in nets.items():
            g, _ = graphed(torch, net, feeds(encoded[big]))
            agree = [float((net(*feeds(e)).argmax(1) == p).float().mean()) for e, p in zip(encoded, parent_labels)]
            zeros = sum(int((m.weight == 0).sum()) for m in net.modules() if hasattr(m, "weight")
                        and isinstance(m.weight, torch.Tensor) and m.weight.dim() > 1)
            total = sum(int(m.weight.numel()) for m in net.modules() if hasattr(m, "weight")
                        and isinstance(m.weight, torch.Tensor) and m.weight.dim() > 1)
            result["versions"][version] = {"fp32_graph": summary(event_times(torch, g.replay, args.runs)),
                                           "labels_agree_with_parent": [round(a, 5) for a in agree],
                                           "zero_weight_share": round(zeros / max(total, 1), 4)}
            print(version, result["versions"][version], flush=True)
        result["proxies"] = proxies(torch, nets, encoded[big], args.runs)
    result["int8"] = INT8_NOTE
    result.update({"machine": cli.machine(), "date": time.strftime("%Y-%m-%d"),
                   "command": "PYTHONPATH=src python3 scripts/gpu_orin_versions.py " + " ".join(sys.argv[1:])})
    print(json.dumps(result["proxies"], indent=1))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return 0


def proxies(torch, nets, enc, runs):
    """Kernel-level figures of what TensorRT would do with the Orin versions' head layers."""
    out = {}
    k = len(enc.kept)
    sparse_head = [m for m in nets["2.2.0-sparse"].mlp if isinstance(m, torch.nn.Linear)]
    rows = {}
    for layer in sparse_head:
        w = layer.weight.detach().half().cuda()
        name = f"linear {w.shape[1]}->{w.shape[0]}"
        a = torch.randn(k, w.shape[1], device="cuda", dtype=torch.float16)
        dense = summary(event_times(torch, lambda a=a, w=w: torch.nn.functional.linear(a, w), runs))
        try:
            from torch.sparse import to_sparse_semi_structured

            sw = to_sparse_semi_structured(w)
            sparse = summary(event_times(torch, lambda a=a, sw=sw: torch.nn.functional.linear(a, sw), runs))
        except Exception as exc:  # cuSPARSELt's shape and pattern rules
            sparse = f"refused: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rows[name] = {"dense_fp16": dense, "semi_structured_fp16": sparse}
    out["2_4_head_layers"] = rows
    a8 = torch.randint(-127, 127, (k, 32), device="cuda", dtype=torch.int8)
    b8 = torch.randint(-127, 127, (32, 16), device="cuda", dtype=torch.int8)
    a16, b16 = a8.half(), b8.half()
    a32, b32 = a8.float(), b8.float()
    gemm = {"shape": [k, 32, 16],
            "fp32": summary(event_times(torch, lambda: a32 @ b32, runs)),
            "fp16": summary(event_times(torch, lambda: a16 @ b16, runs))}
    try:
        gemm["int8"] = summary(event_times(torch, lambda: torch._int_mm(a8, b8), runs))
    except Exception as exc:
        gemm["int8"] = f"refused: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    out["int8_head_gemm"] = gemm
    return out


if __name__ == "__main__":
    raise SystemExit(main())
