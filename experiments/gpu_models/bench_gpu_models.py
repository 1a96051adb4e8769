#!/usr/bin/env python3
"""GPU latency of the networks (PyTorch, CUDA events) and of 2:4 sparse against dense layers.

    python experiments/gpu_models/bench_gpu_models.py --networks segmentation:teacher=models/teachers/segmentation.pt \
        segmentation:1.0.0=models/segmentation-1.0.0.pt ... --sparse segmentation=build/.../sparsity.pt \
        --json docs/results/gpu/gpu_models.json

Each network runs on one cloud's encoding of ``--points`` points (S = 256 raster), FP32 and
FP16, eager and replayed as a CUDA graph (a stand-in for a TensorRT engine, which is not
installable here): P50 / P99 over ``--runs`` runs after warm-up.

2:4: each linear layer of the given networks (and reference GEMM shapes of a per-point head
on 124k points) as dense FP16 against the same weight as a ``torch.sparse.SparseSemiStructuredTensor``
(cuSPARSELt), with the 2:4 mask applied to both; layers too small for the sparse kernels are
listed as not eligible.
"""

import argparse
import json
import statistics

import torch
from torch import nn

from airside_perception.compression import sparsity
from airside_perception.training import checkpoint, export


def timed(fn, runs: int, warmup: int = 10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    out.sort()
    p99 = out[min(len(out) - 1, int(0.99 * len(out)))]
    return {"p50_ms": round(statistics.median(out), 4), "p99_ms": round(p99, 4)}


def graphed(net, inputs):
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            net(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        net(*inputs)
    return g.replay


def bench_network(task, path, points, runs):
    net = checkpoint.load_network(task, path, "teacher" if "teachers" in path else "student").cuda().eval()
    out = {"params": sum(p.numel() for p in net.parameters())}
    for dtype, name in ((torch.float32, "fp32"), (torch.float16, "fp16")):
        n = net.to(dtype)
        inputs = [x.cuda() for x in export.example_inputs(task, 256, points)]
        inputs = [x.to(dtype) if x.is_floating_point() else x for x in inputs]
        with torch.no_grad():
            out[f"{name}_eager"] = timed(lambda n=n, inputs=inputs: n(*inputs), runs)
            out[f"{name}_cuda_graph"] = timed(graphed(n, inputs), runs)
    return out


def bench_linear(weight: torch.Tensor, rows: int, runs: int):
    from torch.sparse import to_sparse_semi_structured

    w = (weight * sparsity.mask_2_4(weight)).half().cuda()
    x = torch.randn(rows, w.shape[1], dtype=torch.float16, device="cuda")
    dense = timed(lambda: torch.nn.functional.linear(x, w), runs)
    try:
        ws = to_sparse_semi_structured(w)
    except (RuntimeError, ValueError) as exc:
        return {"shape": list(w.shape), "rows": rows, "dense": dense, "sparse": None,
                "not_eligible": str(exc).splitlines()[0][:160]}
    sparse = timed(lambda: torch.nn.functional.linear(x, ws), runs)
    return {"shape": list(w.shape), "rows": rows, "dense": dense, "sparse": sparse,
            "speedup_p50": round(dense["p50_ms"] / sparse["p50_ms"], 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="*", default=[], metavar="TASK:NAME=FILE")
    ap.add_argument("--sparse", nargs="*", default=[], metavar="NAME=FILE[:TASK]")
    ap.add_argument("--points", type=int, default=124_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "points": args.points,
              "networks": {}, "two_four": {}}
    for item in args.networks:
        key, _, path = item.partition("=")
        task = key.split(":")[0]
        result["networks"][key] = bench_network(task, path, args.points, args.runs)
        print(key, json.dumps(result["networks"][key]), flush=True)
    rows = args.points
    layers = {}
    for item in args.sparse:
        name, _, spec = item.partition("=")
        path, _, task = spec.partition(":")
        net = checkpoint.load_network(task or "segmentation", path, "teacher" if "teachers" in path else "student")
        for lname, m in net.named_modules():
            if isinstance(m, nn.Linear):
                layers[f"{name}.{lname}"] = m.weight.detach()
    for k in (128, 256, 512):  # reference per-point heads of wider networks
        layers[f"reference_{k}x{k}"] = torch.randn(k, k)
    for lname, w in layers.items():
        result["two_four"][lname] = bench_linear(w, rows, args.runs)
        print(lname, json.dumps(result["two_four"][lname]), flush=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
