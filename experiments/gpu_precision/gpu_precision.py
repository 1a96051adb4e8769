#!/usr/bin/env python3
"""FP8 and INT8 against FP16 / FP32 for the three networks on a Hopper GPU, same run.

    PYTHONPATH=src python3 experiments/gpu_precision/gpu_precision.py --kitti DIR --json docs/results/gpu/gpu_precision.json

Each default network (batch norms folded) runs as a CUDA graph (a stand-in for a TensorRT
engine): FP32 and FP16 with cuDNN's convolutions, and every Conv2d / Linear lowered to GEMMs
(``compression.lowp_gemm``) in FP16 (the lowering's own cost), FP8 E4M3 (``torch._scaled_mm``)
and INT8 (``torch._int_mm``); output heads stay in float, as in the Q/DQ models. Input maxima
are calibrated on three simulated scans; timing and fidelity on a real KITTI scan (or a dense
simulated one): P50 / P99 of ``--runs`` CUDA-event timings, and how far each variant's outputs
lie from FP32 (largest difference; segmentation: share of points with the FP32 label;
detection / occupancy: share of cells on the same side of the 0.5 probability). Batch 1 (the
vehicle) and ``--batch`` (a throughput batch, where the GEMMs, not the launches, dominate).
Accuracy on the test split comes from ``tools.evaluate`` on the FP8 Q/DQ versions
(``engine_tool quantize --precision fp8``), not from here.
"""

import argparse
import copy
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "gpu_models"))

from bench_gpu_models import graphed, timed  # noqa: E402

from airside_perception.compression import lowp_gemm, qat  # noqa: E402
from airside_perception.evaluation.semantickitti import kitti_clouds  # noqa: E402
from airside_perception.ops import bev  # noqa: E402
from airside_perception.sim.world import make_scan  # noqa: E402
from airside_perception.training import checkpoint  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")
NETWORKS = {"segmentation": ("models/segmentation-1.0.0.pt", ("mlp.4",)),
            "detection": ("models/detection-1.0.0.pt", ("heatmap", "regression")),
            "occupancy": ("models/occupancy-1.1.0.pt", ("refine.2",))}


def feeds_of(task, points, device, batch=1):
    e = bev.encode(points, bev.BevSpec())
    grid = torch.from_numpy(e.bev).to(device).repeat(batch, 1, 1, 1)
    if task == "segmentation":
        return [grid, torch.from_numpy(e.point_cells).to(device), torch.from_numpy(e.point_features).to(device)]
    return [grid]


def as_dtype(feeds, dtype):
    return [f.to(dtype) if f.is_floating_point() else f for f in feeds]


def outputs(net, feeds):
    with torch.no_grad():
        out = net(*feeds)
    return [o.float() for o in (out if isinstance(out, (tuple, list)) else [out])]


def fidelity(task, ref, got):
    worst = max(float((r - g).abs().max()) for r, g in zip(ref, got))
    if task == "segmentation":
        agree = float((ref[0].argmax(1) == got[0].argmax(1)).float().mean())
    else:
        agree = float(((ref[0] > 0) == (got[0] > 0)).float().mean())
    return {"largest_difference": round(worst, 4), "agreement": round(agree, 5)}


def variants(task, base, amax, keep, rowwise):
    yield "fp32_cudnn", copy.deepcopy(base).float(), torch.float32
    yield "fp16_cudnn", copy.deepcopy(base).half(), torch.float16
    for mode, dtype in (("fp16", torch.float16), ("fp8", torch.bfloat16 if rowwise else torch.float16),
                        ("int8", torch.float16)):
        net = copy.deepcopy(base).to(dtype)
        yield f"{mode}_gemm", lowp_gemm.lower(net, mode, amax, keep, dtype, rowwise_fp8=rowwise), dtype


def rowwise_supported():
    a = torch.zeros(32, 32, device="cuda").to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(a, a.t(), scale_a=torch.ones(32, 1, device="cuda"), scale_b=torch.ones(1, 32, device="cuda"),
                         out_dtype=torch.bfloat16)
        return True
    except RuntimeError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kitti", default="", help="a KITTI recording (DIR/velodyne/*.bin); default: a dense "
                    "simulated scan")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16, help="the throughput batch (BEV networks)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cloud = next(iter(kitti_clouds(args.kitti))).points if args.kitti else make_scan(110001, "dense").points
    calib = [make_scan(120000 + i, "default").points for i in range(3)]
    rowwise = rowwise_supported()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "points": int(len(cloud)),
              "fp8_weight_scales": "per output channel (row-wise _scaled_mm)" if rowwise else "per tensor",
              "networks": {}}
    for task, (path, keep) in NETWORKS.items():
        base = checkpoint.load_network(task, os.path.join(ROOT, path)).eval()
        qat.fold_batch_norms(base)
        base = base.cuda()
        amax = lowp_gemm.input_maxima(base, lambda n, f: n(*f), [feeds_of(task, c, "cuda") for c in calib])
        batches = [1] if task == "segmentation" else [1, args.batch]
        entry = {"kept_float": list(keep)}
        for batch in batches:
            feeds32 = feeds_of(task, cloud, "cuda", batch)
            ref = outputs(base.float(), feeds32)
            for name, net, dtype in variants(task, base, amax, keep, rowwise):
                feeds = as_dtype(feeds32, dtype)
                row = fidelity(task, ref, outputs(net, feeds))
                with torch.no_grad():
                    row.update(timed(graphed(net, feeds), args.runs))
                entry.setdefault(f"batch_{batch}", {})[name] = row
                print(task, batch, name, row, flush=True)
        result["networks"][task] = entry
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
