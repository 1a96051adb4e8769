#!/usr/bin/env python3
"""Scaling figures of the teacher runs made by ``experiments/ddp_scaling/ddp_scaling.sh``.

    python experiments/ddp_scaling/summarize_ddp.py models/ddp --machine "4x NVIDIA H200, 64 cores" \
        --out docs/results/ddp_scaling.json

Reads each run directory (``run.txt``, ``train.log``, ``curve.csv``, ``check.csv``) and writes
per run: GPUs, steps, wall time (checks excluded), steady throughput (from step 500 on,
simulation included), scaling efficiency against the mean of the clean 1-GPU runs, time to the
target validation mIoU (first reached, and held from then on), final test mIoU, per-rank
waiting/computing. Runs listed with ``--shared`` ran beside others on the same host (CPU
shared), so their times are reported but not used for throughput or time to target. A plot of
validation mIoU over training time goes beside the JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
from typing import Dict, List, Optional


def _rows(path: str) -> List[Dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def first_reached(checks: List[Dict[str, str]], target: float) -> Optional[Dict[str, float]]:
    for r in checks:
        if float(r["miou"]) >= target:
            return {"step": int(r["step"]), "trained_s": float(r["trained_s"])}
    return None


def held_from(checks: List[Dict[str, str]], target: float) -> Optional[Dict[str, float]]:
    """The first check from which every later check stays at or above ``target``."""
    out = None
    for r in checks:
        if float(r["miou"]) >= target:
            out = out or {"step": int(r["step"]), "trained_s": float(r["trained_s"])}
        else:
            out = None
    return out


def read_run(path: str, targets: List[float]) -> Dict[str, object]:
    run_txt = open(os.path.join(path, "run.txt")).read()
    gpus = len([g for g in re.search(r"GPUs ([\d,]+)", run_txt).group(1).split(",") if g])
    seed = int(re.search(r"seed (\d+)", run_txt).group(1))
    per_rank = int(re.search(r"batch (\d+) x", run_txt).group(1))
    curve = _rows(os.path.join(path, "curve.csv"))
    checks = _rows(os.path.join(path, "check.csv"))
    val = [r for r in checks if r["split"] == "val"]
    test = [r for r in checks if r["split"] == "test"]
    log = open(os.path.join(path, "train.log")).read()
    timing = re.search(r"rank timing: (.*)", log).group(1)
    steps = int(curve[-1]["step"])
    start = next(r for r in curve if int(r["step"]) >= 500)
    span_s = float(curve[-1]["elapsed_s"]) - float(start["elapsed_s"])
    steady = (steps - int(start["step"])) * per_rank * gpus / span_s
    out: Dict[str, object] = {
        "name": os.path.basename(path.rstrip("/")), "gpus": gpus, "seed": seed, "batch_per_rank": per_rank,
        "global_batch": per_rank * gpus, "steps": steps, "wall_s": float(val[-1]["trained_s"]) if val else None,
        "scans_per_s": round(steady, 1),
        "final_metric": float(test[-1]["miou"]) if test else None,
        "person_iou": float(test[-1]["person_iou"]) if test else None,
        "fod_iou": float(test[-1]["fod_iou"]) if test else None,
        "final_val_miou": float(val[-1]["miou"]) if val else None,
        "rank_timing": timing,
        "log": os.path.join(path, "train.log"), "curve": os.path.join(path, "curve.csv"),
        "checks": os.path.join(path, "check.csv"),
    }
    for t in targets:
        out[f"to_{t:g}"] = {"first_reached": first_reached(val, t), "held_from": held_from(val, t)}
    return out


def plot(runs: List[Dict[str, object]], path: str, targets: List[float]) -> Optional[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colours = {1: "tab:blue", 2: "tab:orange", 4: "tab:green"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        val = [c for c in _rows(r["checks"]) if c["split"] == "val"]
        ax.plot([float(c["trained_s"]) for c in val], [float(c["miou"]) for c in val],
                color=colours.get(r["gpus"], "grey"), linestyle="--" if r.get("shared_cpu") else "-",
                marker=".", label=f"{r['gpus']} GPU {r['name']}" + (" (CPU shared)" if r.get("shared_cpu") else ""))
    for t in targets:
        ax.axhline(t, color="grey", linewidth=0.8)
    ax.set_ylim(85, 99.5)
    ax.set_xlabel("training time, s (checks excluded)")
    ax.set_ylabel("validation mIoU (48 scans)")
    ax.set_title("Segmentation teacher, global batch 8, 4000 steps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", help="directory of run directories (models/ddp)")
    ap.add_argument("--shared", nargs="*", default=[], help="runs that shared the host's CPUs with another run")
    ap.add_argument("--partial", nargs="*", default=[], help="runs cut short on purpose (throughput only)")
    ap.add_argument("--targets", nargs="*", type=float, default=[97.0, 98.0])
    ap.add_argument("--machine", required=True)
    ap.add_argument("--command", default="experiments/ddp_scaling/ddp_scaling.sh NAME:GPUS:SEED ... (torchrun --standalone "
                    "--nproc_per_node N -m airside_perception.training.train --arch teacher --tasks segmentation "
                    "--steps 4000 --no-export --lr 2e-3 --batch 8/N --workers 15 --start-seed SEED "
                    "--check-every 250 --check-scans 48 --final-check-scans 200)")
    ap.add_argument("--note", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    runs = []
    for name in sorted(os.listdir(args.root)):
        path = os.path.join(args.root, name)
        if not os.path.isfile(os.path.join(path, "check.csv")):
            continue
        r = read_run(path, args.targets)
        r["shared_cpu"] = name in args.shared
        r["partial"] = name in args.partial
        runs.append(r)
    clean = [r for r in runs if not r["shared_cpu"]]
    one = [r["scans_per_s"] for r in clean if r["gpus"] == 1]
    if not one:
        raise SystemExit("no clean 1-GPU run: efficiency needs one")
    base = statistics.mean(one)
    for r in runs:
        r["scaling_efficiency"] = None if r["shared_cpu"] else round(r["scans_per_s"] / (r["gpus"] * base), 3)
    summary = {}
    for g in sorted({r["gpus"] for r in runs}):
        full = [r for r in runs if r["gpus"] == g and not r["partial"]]
        finals = [r["final_metric"] for r in full]
        speed = [r["scans_per_s"] for r in clean if r["gpus"] == g]
        summary[str(g)] = {
            "runs": len(full), "final_metric_mean": round(statistics.mean(finals), 2),
            "final_metric_spread": [min(finals), max(finals)],
            "scans_per_s_mean": round(statistics.mean(speed), 1) if speed else None,
            "scaling_efficiency": round(statistics.mean(speed) / (g * base), 3) if speed else None,
        }
        for t in args.targets:
            held = [r[f"to_{t:g}"]["held_from"] for r in full if not r["shared_cpu"]]
            summary[str(g)][f"time_to_{t:g}_s"] = [h["trained_s"] if h else None for h in held]
    result = {"task": "segmentation",
              "network": "teacher (TeacherBackbone U-Net + transformer block, 3.15M parameters)",
              "machine": args.machine, "command": args.command,
              "metric": "mIoU: final on 200 test scans, during training on 48 validation scans (default density)",
              "targets": args.targets, "note": args.note, "by_gpus": summary, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    png = plot(runs, os.path.splitext(args.out)[0] + ".png", args.targets)
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
