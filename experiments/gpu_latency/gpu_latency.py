"""GPU latency of the reference networks (PyTorch on CUDA, timed with CUDA events).

    PYTHONPATH=src python3 experiments/gpu_latency/gpu_latency.py --checkpoints models --out DIR

TensorRT is not available on the GPU machine: these are PyTorch eager numbers, FP32 and FP16
autocast, batch 1, a 100k-point cloud's BEV input; an upper bound for a TensorRT engine.
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
from airside_perception import classes  # noqa: E402
from airside_perception.ops.bev import BevSpec, encode  # noqa: E402
from airside_perception.sim.world import make_scan  # noqa: E402
from airside_perception.training import models  # noqa: E402


def time_cuda(fn, runs=200, warmup=30):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    t = np.asarray(times)
    return np.percentile(t, 50), np.percentile(t, 99), t.max()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoints", default="models")
    parser.add_argument("--version", default="1.0.0")
    parser.add_argument("--out", default=".")
    args = parser.parse_args()
    dev = torch.device("cuda")
    b = encode(make_scan(110016).points, BevSpec())
    bev = torch.from_numpy(b.bev).to(dev)
    cells = torch.from_numpy(b.point_cells).to(dev)
    feats = torch.from_numpy(b.point_features).to(dev)
    nets = {"segmentation": models.SegmentationNet(len(classes.CLASS_NAMES)),
            "detection": models.DetectionNet(len(classes.DETECTION_CLASS_NAMES)), "occupancy": models.OccupancyNet()}
    lines = [f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}; cloud of {len(b.kept)} points",
             f"{'model':14s} {'precision':9s} {'P50 ms':>7s} {'P99 ms':>7s} {'max ms':>7s}"]
    for task, net in nets.items():
        net.load_state_dict(torch.load(os.path.join(args.checkpoints, f"{task}-{args.version}.pt"), map_location="cpu"))
        net = net.to(dev).eval()
        run = (lambda n=net: n(bev, cells, feats)) if task == "segmentation" else (lambda n=net: n(bev))
        for precision in ("fp32", "fp16"):
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=precision == "fp16"):
                p50, p99, mx = time_cuda(run)
            lines.append(f"{task:14s} {precision:9s} {p50:7.3f} {p99:7.3f} {mx:7.3f}")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "gpu_latency.txt"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
