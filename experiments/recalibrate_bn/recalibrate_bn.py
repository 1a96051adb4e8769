#!/usr/bin/env python3
"""Re-estimates the batch-norm statistics of a network file from simulated training scans.

    python experiments/recalibrate_bn/recalibrate_bn.py --task segmentation --network models/teachers/segmentation.pt \
        --arch teacher --batches 24

For a network whose stored statistics were lost (e.g. a running variance beyond fp16's range
in a compact copy): the weights are kept, each BatchNorm's mean and variance are recomputed
as the plain average over the batches, and the file is rewritten in its own form (fp16
weights stay fp16; the statistics are stored in float32).
"""

import argparse

import torch
from torch import nn

from airside_perception.training import checkpoint
from airside_perception.training.distill import adaptor_for, sim_batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", required=True, choices=["segmentation", "detection", "occupancy"])
    parser.add_argument("--network", required=True)
    parser.add_argument("--arch", default="teacher")
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    stored = torch.load(args.network, map_location="cpu", weights_only=False)
    net = checkpoint.load_network(args.task, args.network, args.arch)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    net.train()
    adaptor = adaptor_for(args.task)
    batches = sim_batches(args.batch, args.workers, start_seed=77_000)
    with torch.no_grad():
        for i in range(args.batches):
            adaptor.forward(net, next(batches))
            print(f"batch {i + 1}/{args.batches}", flush=True)
    state = net.eval().state_dict()
    if isinstance(stored, dict) and any(v.dtype == torch.float16 for v in stored.values()):
        state = {k: v.half() if v.is_floating_point() and "running_" not in k else v for k, v in state.items()}
    torch.save(state, args.network)
    print(f"{args.network}: batch-norm statistics recomputed from {args.batches * args.batch} scans")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
