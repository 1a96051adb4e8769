"""Safety-aware against plain magnitude pruning, same ratios and fine-tuning budget.

    python -m airside_perception.compression.study train --task segmentation --ratios 0.3 0.5 \
        --steps 800 --out-dir build/prune_study          # on a GPU machine (or slowly on the CPU)
    python -m airside_perception.compression.study measure --task segmentation --out-dir build/prune_study \
        --json docs/results/compression/pruning_study.json           # on the machine the engines are timed on

``train`` prunes the base network once per (method, ratio) and fine-tunes every variant on the
same simulated batches (hard labels, same seeds and steps). ``measure`` exports each variant
before and after fine-tuning and runs the release gates against the base version: mIoU,
person / FOD IoU, person recall within 20 m, CPU latency beside the base in one run.
"""

from __future__ import annotations

import copy
import json
import os
import time

import torch

from airside_perception import cli
from airside_perception.compression import prune
from airside_perception.compression.recipe import SAFETY_CLASSES
from airside_perception.training import checkpoint
from airside_perception.training.distill import Distiller, DistillRecipe, Job, adaptor_for, sim_batches, train_jobs

BASES = {"segmentation": ("1.2.0", "models/segmentation-1.0.0.pt"), "detection": ("1.0.0", "models/detection-1.0.0.pt")}


def train(args) -> int:
    version, ck = BASES[args.task]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = checkpoint.load_network(args.task, ck)
    calib_it = sim_batches(4, min(args.workers, 4), 90_000)
    calib = [next(calib_it) for _ in range(args.calibration_batches)]
    jobs, reports = [], {}
    adaptor = adaptor_for(args.task)
    os.makedirs(args.out_dir, exist_ok=True)
    for method in ("magnitude", "safety"):
        for ratio in args.ratios:
            name = f"{method}-{int(round(ratio * 100))}"
            net = copy.deepcopy(base)
            reports[name] = prune.prune(net, args.task, method, ratio, calib if method == "safety" else None, device,
                                        protect=SAFETY_CLASSES[args.task], protect_share=args.protect_share)
            checkpoint.save_network(net, os.path.join(args.out_dir, f"{name}-pruned.pt"))
            jobs.append(Job(name, Distiller(net.to(device), None, adaptor, DistillRecipe()), args.lr))
    start = time.time()
    batches = sim_batches(args.batch, args.workers, 3000, reuse=args.reuse)
    train_jobs(jobs, batches, args.steps, device, desc="fine-tune")
    for job in jobs:
        checkpoint.save_network(job.distiller.student, os.path.join(args.out_dir, f"{job.name}-finetuned.pt"))
        reports[job.name]["curve"] = job.curve
    with open(os.path.join(args.out_dir, "train.json"), "w") as fh:
        json.dump({"task": args.task, "base_version": version, "steps": args.steps, "batch": args.batch,
                   "lr": args.lr, "seconds": round(time.time() - start, 1), "variants": reports}, fh, indent=1)
    print(f"{len(jobs)} variants fine-tuned for {args.steps} steps in {time.time() - start:.0f} s", flush=True)
    return 0


def measure(args) -> int:
    from airside_perception.config import load_budget
    from airside_perception.evaluation.gates import run_gates
    from airside_perception.ota.package import package_version
    from airside_perception.pipelines import store
    from airside_perception.training import export

    with open(os.path.join(args.out_dir, "train.json")) as fh:
        trained = json.load(fh)
    base_version = trained["base_version"]
    base_engine = store.open_engine(store.load_version(args.engines_dir, args.task, base_version), "onnxruntime", 2)
    budget = load_budget(args.budget).stage(args.task)
    root = os.path.join(args.out_dir, "engines")
    rows = []
    for name in sorted(trained["variants"]):
        for stage in ("pruned", "finetuned"):
            net = checkpoint.load_network(args.task, os.path.join(args.out_dir, f"{name}-{stage}.pt"))
            raw = os.path.join(args.out_dir, f"{name}-{stage}.onnx")
            export.export_onnx(net, args.task, raw)
            manifest = package_version(raw, args.task, f"{name}-{stage}", root, overwrite=True, with_golden=False)
            engine = store.open_engine(manifest, "onnxruntime", 2)
            report = run_gates(base_engine, engine, args.scans, 20, budget)
            engine.close()
            m, b = report["candidate_metrics"], report["baseline_metrics"]
            lost = next(g for g in report["gates"] if g["name"] == "no_new_person_misses_20m")
            from airside_perception.stats import Percentiles

            row = {"variant": name, "stage": stage, "params": sum(p.numel() for p in net.parameters()),
                   "cpu_p50_ms": round(Percentiles.of(report["latency_ms"]["candidate"]).p50, 2),
                   "cpu_p99_ms": round(Percentiles.of(report["latency_ms"]["candidate"]).p99, 2),
                   "base_cpu_p50_ms": round(Percentiles.of(report["latency_ms"]["baseline"]).p50, 2),
                   "near_person_misses": int(lost["value"]), "gates_passed": report["passed"]}
            if args.task == "segmentation":
                row.update(miou=round(m["miou"], 2), person=m["iou"]["person"], fod=m["iou"]["fod"],
                           cone=m["iou"]["cone"], aircraft=m["iou"]["aircraft"],
                           base=dict(miou=round(b["miou"], 2), person=b["iou"]["person"], fod=b["iou"]["fod"]))
            else:
                row.update(map=round(m["map"], 2), person=m["ap"]["person"], cone=m["ap"]["cone"],
                           person_recall_20m=m.get("person_recall_20m"),
                           base=dict(map=round(b["map"], 2), person=b["ap"]["person"]))
            rows.append(row)
            print(json.dumps(row), flush=True)
    base_engine.close()
    out = {"task": args.task, "base_version": base_version, "scans": args.scans, "fine_tune_steps": trained["steps"],
           "batch": trained["batch"], "rows": rows,
           "command": "python -m airside_perception.compression.study train|measure --task " + args.task}
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


def main(argv=None) -> int:
    parser = cli.Parser(prog="airside_perception.compression.study", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", parser_class=cli.Parser)
    sub.required = True
    p = sub.add_parser("train")
    p.add_argument("--task", choices=sorted(BASES), required=True)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--steps", type=cli.positive_int, default=800)
    p.add_argument("--batch", type=cli.positive_int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--calibration-batches", type=cli.positive_int, default=8)
    p.add_argument("--protect-share", type=float, default=0.2)
    p.add_argument("--reuse", type=int, default=1, help="draws per simulated batch (replay buffer)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--out-dir", required=True)
    p = sub.add_parser("measure")
    p.add_argument("--task", choices=sorted(BASES), required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--engines-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines"))
    p.add_argument("--budget", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "config",
                                                    "budget.yaml"))
    p.add_argument("--scans", type=cli.positive_int, default=200)
    p.add_argument("--json")
    args = parser.parse_args(argv)
    return train(args) if args.verb == "train" else measure(args)


if __name__ == "__main__":
    raise SystemExit(main())
