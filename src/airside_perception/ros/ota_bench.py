"""What OTA costs the running graph, on real-size clouds at 10 Hz (``make bench-ota``):

- a shadow run of segmentation 2.0.0 (the candidate of the swap-under-load scenario) beside the
  serving 2.2.0 over the whole measurement, against the same graph without it, alternating
  (neural and simplex P99, every cloud answered, what the shadow compared);
- the rollback by version to segmentation 1.0.0 with 2.2.0 serving, under load: accepted or
  refused with the validation's numbers, and the P99 around the swap.

    python -m airside_perception.ros.ota_bench --out docs/results/ota/shadow_cost.json [--duration-s 40] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from airside_perception.ros.common import package_path
from airside_perception.ros.scenarios import NEURAL, SIMPLEX, _worst, machine, make_feeds, run_scenario

TARGET = 1.05


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="airside_perception.ros.ota_bench", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/results/ota/shadow_cost.json")
    ap.add_argument("--work-dir", default="bench_results/ota")
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--rounds", type=int, default=3, help="runs with and without the shadow run, alternating")
    args = ap.parse_args(argv)
    work = os.path.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    feeds = make_feeds(os.path.join(os.path.dirname(work), "scenarios"), 30)
    older = package_path("engines", "segmentation", "1.0.0")
    candidate = package_path("engines", "segmentation", "2.0.0")
    base = {"bag": feeds["clouds"], "swap_path": "none"}
    p99 = {w: {"neural": [], "simplex": []} for w in ("without", "with")}
    answered, reports = {"without": [], "with": []}, []
    for k in range(args.rounds):
        for which, extra in (("without", {}), ("with", {"shadow_task": "segmentation", "shadow_path": candidate})):
            raw = run_scenario(f"shadow_{which}_{k}", {**base, **extra}, work, args.duration_s)
            p99[which]["neural"].append(round(_worst(raw["outputs"], NEURAL)["p99_ms"], 2))
            p99[which]["simplex"].append(round(_worst(raw["outputs"], SIMPLEX)["p99_ms"], 2))
            answered[which].append(min(o["answered"] for t, o in raw["outputs"].items() if t in NEURAL + SIMPLEX))
            answered[which].append(raw["clouds"])
            if which == "with":
                reports.append(raw.get("shadow"))
    ratio = {k: float(np.median(p99["with"][k]) / np.median(p99["without"][k])) for k in ("neural", "simplex")}
    raw = run_scenario("rollback_to_1_0_0", {**base, "swap_task": "segmentation", "swap_path": older}, work,
                       args.duration_s)
    rollback = raw.get("swap_under_load")
    result = {"machine": machine(), "command": "make bench-ota (python -m airside_perception.ros.ota_bench "
              f"--duration-s {args.duration_s:g} --rounds {args.rounds})",
              "clouds": "KITTI HDL-64E scans at 10 Hz" if "kitti" in feeds["clouds"] else feeds["clouds"],
              "shadow": {"candidate": "segmentation 2.0.0", "serving": "segmentation 2.2.0", "rounds": args.rounds,
                         "duration_s": args.duration_s, "p99_ms": p99, "ratio": ratio,
                         "answered_and_clouds": answered, "target": TARGET,
                         "met": ratio["neural"] <= TARGET, "reports": reports},
              "rollback_to_1_0_0": rollback}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2, default=float)
    print(f"shadow run: neural P99 {ratio['neural']:.3f}x, simplex P99 {ratio['simplex']:.3f}x of the graph "
          f"without it (target <= {TARGET}); rollback to 1.0.0: {rollback and rollback.get('answer')}\n"
          f"wrote {args.out}")
    return 0 if result["shadow"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
