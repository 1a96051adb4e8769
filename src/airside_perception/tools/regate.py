"""The shifted-data gate of every default version against its base, in one table and file.

    python -m airside_perception.tools.regate [--scans 40] [--out docs/results/shifted_gates.json]

Pairs (candidate against base): the configured default of each task against the version it
was gated against when it became the default, plus the Orin's versions against their parent.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import List, Optional

from airside_perception import cli
from airside_perception.evaluation.shifted import shifted_gates
from airside_perception.pipelines import store
from airside_perception.tools.bench import DEFAULT_ENGINES, configured_versions

PROG = "airside_perception.tools.regate"
#: version -> the base it was gated against when it was made
BASES = {("segmentation", "2.2.0"): ["1.4.0", "1.0.0"], ("segmentation", "2.2.0-int8"): ["2.2.0"],
         ("segmentation", "2.2.0-sparse"): ["2.2.0"], ("segmentation", "1.0.0"): [],
         ("detection", "2.1.0"): ["1.0.0"], ("occupancy", "1.1.0"): ["1.0.0"]}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("--scans", type=cli.positive_int, default=40, help="scans of each simulated shifted source")
    ap.add_argument("--engines-dir", default=DEFAULT_ENGINES)
    ap.add_argument("--kitti-dir", default=None)
    ap.add_argument("--pairs", nargs="*", default=None, help="TASK:CANDIDATE:BASE (default: the defaults and the "
                                                              "Orin's versions)")
    ap.add_argument("--out", type=cli.writable_file, default=None)
    args = ap.parse_args(argv)
    if args.pairs:
        pairs = [tuple(p.split(":")) for p in args.pairs]
    else:
        defaults = configured_versions()
        pairs = [(t, v, b) for t, v in defaults.items() for b in BASES.get((t, v), [])]
        pairs += [("segmentation", v, "2.2.0") for v in ("2.2.0-int8", "2.2.0-sparse")
                  if os.path.isdir(os.path.join(args.engines_dir, "segmentation", v))]
    results = []
    for task, cand_v, base_v in pairs:
        base = store.open_engine(store.load_version(args.engines_dir, task, base_v), "onnxruntime", 2)
        cand = store.open_engine(store.load_version(args.engines_dir, task, cand_v), "onnxruntime", 2)
        gates, report = shifted_gates(base, cand, args.scans, args.kitti_dir)
        base.close()
        cand.close()
        failed = [g["name"] for g in gates if not g["passed"]]
        results.append({"task": task, "candidate": cand_v, "base": base_v, "passed": not failed, "failed": failed,
                        "gates": gates, "report": report})
        print(f"{task} {cand_v} against {base_v}: {'PASS' if not failed else 'FAIL ' + ', '.join(failed)}")
        for g in gates:
            print(f"    {'PASS' if g['passed'] else 'FAIL'} {g['name']:40s} {g['value']:>8} (limit {g['limit']}): "
                  f"{g['detail']}")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"scans_per_source": args.scans, "pairs": results, "machine": cli.machine(),
                       "command": cli.command_line(argv, PROG), "date": time.strftime("%Y-%m-%d")}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
