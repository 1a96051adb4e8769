#!/usr/bin/env python3
"""Camera -> LiDAR distillation: does a teacher that sees colour teach the LiDAR-only student
the distinctions colour makes (person vs cone, FOD vs apron paint)?

    PYTHONPATH=src python3 experiments/cross_modal/cross_modal.py --out-dir models/cross_modal \\
        --json docs/results/training/cross_modal.json [--teacher-steps 1500 --student-steps 2500]

1. Teachers: the LiDAR segmentation teacher (``models/teachers/segmentation.pt``) fine-tuned two
   ways on the same simulated batches (camera colour included): as it is (LiDAR only), and
   widened to read each point's camera colour and visibility (``models.add_point_inputs``,
   the new weights starting at zero: it begins as the LiDAR teacher). Same seeds, data, steps.
2. Students: the shipped LiDAR-only student (``models/segmentation-1.0.0.pt``) fine-tuned on the
   same batches three ways: alone, distilled from the LiDAR teacher, distilled from the colour
   teacher (``config/distillation/segmentation.yaml``).
3. Scoring on the test split (``--scans``, the scans ``tools.evaluate`` reads): mIoU and IoU by
   class, and the confusions colour can resolve: person points called cone and cone points
   called person; FOD points called ground, ground points on apron paint called FOD.

Each stage saves its networks in ``--out-dir`` and is skipped when they are there (a run that
stops resumes at the stage it was in). Needs a GPU for the training (CPU works, slowly).
"""

import argparse
import copy
import json
import multiprocessing
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "src"))

from airside_perception import classes  # noqa: E402
from airside_perception.evaluation.metrics import SegmentationMeter  # noqa: E402
from airside_perception.ops.bev import BevSpec, encode  # noqa: E402
from airside_perception.sim.camera import SURROUND, point_colours  # noqa: E402
from airside_perception.sim.scene import generate_scene  # noqa: E402
from airside_perception.sim.world import render_scan, split_seeds  # noqa: E402
from airside_perception.training import checkpoint, distill, models  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")
P, C, F, G = classes.PERSON, classes.CONE, classes.FOD, classes.GROUND


def test_scan(seed):
    scene = generate_scene(int(seed))  # once: the scan, its camera colours and the paint all read it
    scan = render_scan(scene, "default")
    enc = encode(scan.points, BevSpec())
    rgb, seen = point_colours(scan, SURROUND, scene=scene)
    labels = scan.labels[enc.kept].astype(np.int64)
    pts = scan.points[enc.kept]
    paint = np.zeros(len(labels), bool)
    ground = labels == G
    paint[ground] = scene.ground.is_marking(pts[ground, 0].astype(np.float64), pts[ground, 1].astype(np.float64))
    colour = np.column_stack([rgb[enc.kept], seen[enc.kept]]).astype(np.float32)
    return enc.bev, enc.point_cells, enc.point_features, colour, labels, paint


@torch.no_grad()
def score(net, scans, device):
    meter = SegmentationMeter()
    counts = dict.fromkeys(("person", "person_as_cone", "cone", "cone_as_person", "fod", "fod_as_ground",
                            "paint", "paint_as_fod", "plain_ground", "plain_ground_as_fod"), 0)
    net.eval().to(device)
    for bev, cells, feats, colour, labels, paint in scans:
        batch = {"bev": torch.from_numpy(bev).to(device), "point_cells": torch.from_numpy(cells).to(device),
                 "point_features": torch.from_numpy(feats).to(device),
                 "point_colour": torch.from_numpy(colour).to(device)}
        batch["point_batch"] = torch.zeros_like(batch["point_cells"])
        pred = distill.SegmentationAdaptor().forward(net, batch).argmax(1).cpu().numpy()
        meter.add(labels, pred)
        counts["person"] += int((labels == P).sum())
        counts["person_as_cone"] += int(((labels == P) & (pred == C)).sum())
        counts["cone"] += int((labels == C).sum())
        counts["cone_as_person"] += int(((labels == C) & (pred == P)).sum())
        counts["fod"] += int((labels == F).sum())
        counts["fod_as_ground"] += int(((labels == F) & (pred == G)).sum())
        counts["paint"] += int(paint.sum())
        counts["paint_as_fod"] += int((paint & (pred == F)).sum())
        plain = (labels == G) & ~paint
        counts["plain_ground"] += int(plain.sum())
        counts["plain_ground_as_fod"] += int((plain & (pred == F)).sum())
    s = meter.summary()
    rate = lambda a, b: round(100.0 * counts[a] / max(counts[b], 1), 3)  # noqa: E731
    return {"miou": round(s["miou"], 2), "iou": s["iou"],
            "confusion_pct": {"person_as_cone": rate("person_as_cone", "person"),
                              "cone_as_person": rate("cone_as_person", "cone"),
                              "fod_as_ground": rate("fod_as_ground", "fod"),
                              "paint_as_fod": rate("paint_as_fod", "paint"),
                              "plain_ground_as_fod": rate("plain_ground_as_fod", "plain_ground")},
            "counts": counts}


def save_state(net, path):
    """fp16 where the values fit (batch-norm variances of the teachers reach 1e10: kept fp32)."""
    torch.save({k: v.half() if v.is_floating_point() and float(v.abs().max()) < 6e4 else v
                for k, v in net.state_dict().items()}, path)


def load_state(net, path):
    net.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in torch.load(path, map_location="cpu").items()})
    return net


def plot(result, path):
    """Bars of each confusion (per cent of the true class's points) for every network scored."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = ("person_as_cone", "cone_as_person", "fod_as_ground", "paint_as_fod")
    names = list(result["networks"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(16, 4.5))
    for ax, kind in zip(axes, kinds):
        values = [result["networks"][n]["confusion_pct"][kind] for n in names]
        ax.barh(names, values, color=["#888" if n.startswith("teacher") else "#3a7" for n in names])
        ax.set_title(kind.replace("_", " ") + " (%)")
        ax.invert_yaxis()
        if ax is not axes[0]:
            ax.set_yticklabels([])
    fig.suptitle(f"camera -> LiDAR distillation, {result['test_scans']} test scans")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--teacher-steps", type=int, default=1500)
    ap.add_argument("--student-steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--reuse", type=int, default=2, help="draws per simulated batch (replay buffer)")
    ap.add_argument("--scans", type=int, default=200, help="test scans scored")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--replot", action="store_true", help="only draw the plot of an existing --json")
    args = ap.parse_args()
    if args.replot:
        plot(json.load(open(args.json)), os.path.splitext(args.json)[0] + ".png")
        return 0
    os.makedirs(args.out_dir, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    recipe = distill.load_recipe(os.path.join(ROOT, "config/distillation/segmentation.yaml"))
    adaptor = distill.SegmentationAdaptor()
    timings, curves = {}, {}
    curve_path = os.path.join(args.out_dir, "curves.json")
    if os.path.isfile(curve_path):
        curves = json.load(open(curve_path))

    lidar_path = os.path.join(args.out_dir, "teacher_lidar.pt")
    colour_path = os.path.join(args.out_dir, "teacher_colour.pt")
    base_teacher = checkpoint.load_network("segmentation", os.path.join(ROOT, "models/teachers/segmentation.pt"),
                                           "teacher")
    if not (os.path.isfile(lidar_path) and os.path.isfile(colour_path)):
        torch.manual_seed(args.seed)
        jobs = [distill.Job("teacher_lidar", distill.Distiller(copy.deepcopy(base_teacher), None, adaptor, recipe),
                            5e-4),
                distill.Job("teacher_colour", distill.Distiller(models.add_point_inputs(base_teacher, 4), None,
                                                                adaptor, recipe), 5e-4)]
        start = time.time()
        distill.train_jobs(jobs, distill.sim_batches(args.batch, args.workers, args.seed, reuse=args.reuse,
                                                     colour=True), args.teacher_steps, device, desc="teachers")
        timings["teachers_s"] = round(time.time() - start, 1)
        save_state(jobs[0].distiller.student, lidar_path)
        save_state(jobs[1].distiller.student, colour_path)
        curves.update({j.name: j.curve for j in jobs})
        json.dump(curves, open(curve_path, "w"))
    t_lidar = load_state(copy.deepcopy(base_teacher), lidar_path)
    t_colour = load_state(models.add_point_inputs(base_teacher, 4), colour_path)

    students_path = os.path.join(args.out_dir, "students.pt")
    names = ("alone", "from_lidar_teacher", "from_colour_teacher")
    shipped = checkpoint.load_network("segmentation", os.path.join(ROOT, "models/segmentation-1.0.0.pt"))
    if not os.path.isfile(students_path):
        torch.manual_seed(args.seed + 1)
        jobs = [distill.Job(name, distill.Distiller(copy.deepcopy(shipped), teacher, adaptor, recipe), 5e-4)
                for name, teacher in zip(names, (None, t_lidar.to(device), t_colour.to(device)))]
        start = time.time()
        distill.train_jobs(jobs, distill.sim_batches(args.batch, args.workers, args.seed + 50_000,
                                                     reuse=args.reuse, colour=True),
                           args.student_steps, device, desc="students")
        timings["students_s"] = round(time.time() - start, 1)
        torch.save({j.name: j.distiller.student.state_dict() for j in jobs}, students_path)
        curves.update({j.name: j.curve for j in jobs})
        json.dump(curves, open(curve_path, "w"))
    states = torch.load(students_path, map_location="cpu")
    students = {n: copy.deepcopy(shipped).cpu().float().eval() for n in names}
    for n in names:
        students[n].load_state_dict(states[n])

    seeds = [int(s) for s in split_seeds("test", args.scans)]
    with multiprocessing.get_context("spawn").Pool(max(1, args.workers)) as pool:
        scans = pool.map(test_scan, seeds, chunksize=1)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "test_scans": len(scans), "teacher_steps": args.teacher_steps, "student_steps": args.student_steps,
              "batch": args.batch, "reuse": args.reuse, "recipe": recipe.__dict__ if hasattr(recipe, "__dict__")
              else str(recipe), "timings": timings, "networks": {}}
    result["recipe"] = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in result["recipe"].items()}
    for name, net in (("teacher_start", base_teacher), ("teacher_lidar", t_lidar), ("teacher_colour", t_colour),
                      ("student_shipped", shipped), *((f"student_{n}", students[n]) for n in names)):
        result["networks"][name] = score(net, scans, device)
        print(name, result["networks"][name]["miou"], result["networks"][name]["confusion_pct"], flush=True)
    with open(args.json, "w") as fh:
        json.dump(result, fh, indent=1)
    plot(result, os.path.splitext(args.json)[0] + ".png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
