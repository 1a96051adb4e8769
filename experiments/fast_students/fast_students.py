#!/usr/bin/env python3
"""Segmentation students for the 2x budget, each distilled and alone on the same batches.

    PYTHONPATH=src python3 experiments/fast_students/fast_students.py --out-dir models/fast_students \\
        --json docs/results/training/fast_students.json --steps 3200 --students p50 h16
    PYTHONPATH=src python3 experiments/fast_students/fast_students.py --out-dir docs/results/training/logs/fast_students/mlp \\
        --json docs/results/training/fast_students_mlp.json --start experiments/fast_students/segmentation-p50_alone.pt \\
        --steps 3200 --students m16-16 m16-12

Students, each from ``--start`` (default segmentation 2.0.0, the 1.0.0 network with half its
channels pruned safety-aware, distilled and fine-tuned):

- ``p50``: the start as it is, trained further;
- ``hN``: the start's backbone with a one-layer point MLP of N (the first layer's N strongest
  rows, a fresh output layer);
- ``mA-B``: the start's point MLP pruned to widths A and B with Torch-Pruning, safety-aware
  (``compression.prune``: channels among the top 20 % of a safety class's Taylor importance
  are kept), the backbone untouched. On 124k-point clouds the per-point MLP, not the
  backbone, is most of the time.

Each is trained twice on the same simulated batches (same seeds, data, steps): distilled from
the segmentation teacher (``models/teachers/segmentation.pt``, recipe
``config/distillation/segmentation.yaml``) and alone (the hard labels only). Scored in
PyTorch on the test split (``--scans``): mIoU, IoU by class, the colour-free confusions. The
networks are written as whole modules to ``--out-dir/students.pt``; a run that finds them
there only scores. Needs a GPU for the training (CPU works, slowly).
"""

import argparse
import copy
import functools
import json
import multiprocessing
import os
import sys
import time

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))
sys.path.insert(0, os.path.join(HERE, "..", "cross_modal"))

from cross_modal import score, test_scan  # noqa: E402

from airside_perception.compression.recipe import SAFETY_CLASSES  # noqa: E402
from airside_perception.sim.world import split_seeds  # noqa: E402
from airside_perception.training import checkpoint, distill, models  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")


def one_layer_head(net: models.SegmentationNet, hidden: int) -> models.SegmentationNet:
    """``net`` with its point MLP replaced by one hidden layer of ``hidden``: the first layer's
    ``hidden`` rows of largest norm (with their biases), a fresh output layer."""
    out = copy.deepcopy(net)
    first, last = net.mlp[0], net.mlp[-1]
    keep = torch.argsort(first.weight.norm(dim=1), descending=True)[:hidden].sort().values
    layer = nn.Linear(first.in_features, hidden)
    with torch.no_grad():
        layer.weight.copy_(first.weight[keep])
        layer.bias.copy_(first.bias[keep])
    out.mlp = nn.Sequential(layer, nn.ReLU(inplace=True), nn.Linear(hidden, last.out_features))
    return out


def pruned_mlp(net: models.SegmentationNet, widths, batches, device) -> models.SegmentationNet:
    """A copy of ``net`` with its hidden point-MLP layers pruned to ``widths`` (safety-aware)."""
    from airside_perception.compression import prune

    out = copy.deepcopy(net)
    hidden = [m for m in out.mlp if isinstance(m, nn.Linear)][:-1]
    if len(hidden) != len(widths):
        raise SystemExit(f"the point MLP has {len(hidden)} hidden layers, not {len(widths)}")
    names = [n for n, m in out.named_modules() if any(m is h for h in hidden)]
    ratios = {n: 1.0 - w / h.out_features for n, h, w in zip(names, hidden, widths)}
    prune.prune(out, "segmentation", "safety", 0.0, batches=batches, device=device, ratios=ratios,
                protect=SAFETY_CLASSES["segmentation"], protect_share=0.2, round_to=1)
    got = [m.out_features for m in out.mlp if isinstance(m, nn.Linear)][:-1]
    if got != list(widths):
        raise SystemExit(f"pruning gave point-MLP widths {got}, not {list(widths)}")
    return out.cpu()


def student(spec: str, start: models.SegmentationNet, calibration, device) -> models.SegmentationNet:
    if spec == "p50":
        return start
    if spec.startswith("h"):
        return one_layer_head(start, int(spec[1:]))
    if spec.startswith("m"):
        return pruned_mlp(start, [int(w) for w in spec[1:].split("-")], calibration(), device)
    raise SystemExit(f"unknown student '{spec}': p50, hN or mA-B")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--start", default=os.path.join(ROOT, "models/segmentation-2.0.0.pt"))
    ap.add_argument("--teacher", default=os.path.join(ROOT, "models/teachers/segmentation.pt"))
    ap.add_argument("--steps", type=int, default=3200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--students", nargs="+", default=["p50", "h16"], help="p50, hN (one layer of N), mA-B (pruned)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--reuse", type=int, default=4, help="draws per simulated batch (replay buffer)")
    ap.add_argument("--scans", type=int, default=200, help="test scans scored")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recipe = distill.load_recipe(os.path.join(ROOT, "config/distillation/segmentation.yaml"))
    adaptor = distill.SegmentationAdaptor()
    start = checkpoint.load_network("segmentation", args.start)
    path = os.path.join(args.out_dir, "students.pt")
    timings = {}
    if not os.path.isfile(path):
        torch.manual_seed(args.seed)
        calibration = functools.lru_cache(maxsize=None)(  # simulated once, for every pruned student
            lambda: [b for _, b in zip(range(8), distill.sim_batches(4, args.workers, 95_000))])
        starts = {spec: student(spec, start, calibration, device) for spec in args.students}
        teacher = checkpoint.load_network("segmentation", args.teacher, "teacher").to(device)
        jobs = []
        for name, net in starts.items():
            jobs.append(distill.Job(f"{name}_distilled", distill.Distiller(copy.deepcopy(net), teacher, adaptor,
                                                                           recipe), args.lr))
            jobs.append(distill.Job(f"{name}_alone", distill.Distiller(copy.deepcopy(net), None, adaptor, recipe),
                                    args.lr))
        t0 = time.time()
        distill.train_jobs(jobs, distill.sim_batches(args.batch, args.workers, args.seed * 10_000,
                                                     reuse=args.reuse), args.steps, device, desc="students")
        timings["train_s"] = round(time.time() - t0, 1)
        # train_jobs released the feature taps: the students are plain modules again
        torch.save({j.name: j.distiller.student.cpu().eval() for j in jobs}, path)
        with open(os.path.join(args.out_dir, "curves.json"), "w") as fh:
            json.dump({j.name: j.curve for j in jobs}, fh)
    nets = torch.load(path, map_location="cpu", weights_only=False)
    seeds = [int(s) for s in split_seeds("test", args.scans)]
    with multiprocessing.get_context("spawn").Pool(max(1, args.workers)) as pool:
        scans = pool.map(test_scan, seeds, chunksize=1)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "test_scans": len(scans),
              "steps": args.steps, "batch": args.batch, "reuse": args.reuse, "lr": args.lr, "seed": args.seed,
              "timings": timings, "networks": {}}
    for name, net in ((f"start_{os.path.basename(args.start)}", start), *nets.items()):
        row = score(net, scans, device)
        row["parameters"] = models.count_params(net)
        result["networks"][name] = row
        print(name, row["parameters"], row["miou"], {k: row["iou"][k] for k in ("person", "cone", "fod")},
              flush=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
