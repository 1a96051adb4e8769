"""Near persons (within 20 m) that detectors find, against a baseline, on the test split.

    python experiments/near_persons/compare_near_persons.py --baseline 1.0.0 --candidates 2.1.0 [ROOT:]V ... \
        [--scans 200] [--json OUT.json]

For each candidate: the near persons it finds, those the baseline finds and it misses (each
one), the groups (persons chained within twice the matching radius) in which it finds fewer
than the baseline, which is what the release gate counts, and the misses inside groups where it
finds as many (swaps: both engines put one box on a close pair, matched to different persons).
``ROOT:V`` takes version V from another engines directory.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))

from airside_perception.evaluation.gates import lost_persons, person_groups, persons_found  # noqa: E402
from airside_perception.ops.bev import encode  # noqa: E402
from airside_perception.pipelines import store  # noqa: E402
from airside_perception.sim.world import make_scan, split_seeds  # noqa: E402

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "engines")


def _open(spec: str):
    root, version = spec.split(":", 1) if ":" in spec else (ENGINES, spec)
    return store.open_engine(store.load_version(root, "detection", version), "onnxruntime", 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", default="1.0.0")
    parser.add_argument("--candidates", nargs="+", required=True)
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--json")
    args = parser.parse_args()
    engines = {spec: _open(spec) for spec in [args.baseline] + args.candidates}
    found = {spec: set() for spec in engines}
    groups = {}
    for seed in split_seeds("test", args.scans):
        scan = make_scan(int(seed))
        x = encode(scan.points, engines[args.baseline].bev_spec)
        groups.update({(int(seed), i): (int(seed), g) for i, g in person_groups(scan).items()})
        for spec, engine in engines.items():
            result = engine.run(x)
            found[spec] |= {(int(seed), i) for i in
                            persons_found("detection", scan, result, engine.decode.score_threshold)}
    report = {"baseline": args.baseline, "scans": args.scans, "baseline_found": len(found[args.baseline]),
              "candidates": {}}
    print(f"baseline {args.baseline}: finds {len(found[args.baseline])} near persons on {args.scans} test scans")
    for spec in args.candidates:
        lost, swapped = lost_persons("detection", found[args.baseline], found[spec], groups)
        shortfall = {groups[p] for p in lost}
        row = {"found": len(found[spec]), "missed_individually": len(found[args.baseline] - found[spec]),
               "gained": len(found[spec] - found[args.baseline]), "groups_with_fewer": len(shortfall),
               "lost_by_group": len(lost), "swaps": [list(p) for p in swapped], "lost": [list(p) for p in lost]}
        report["candidates"][spec] = row
        print(f"{spec}: finds {row['found']}; misses {row['missed_individually']} the baseline finds "
              f"(gains {row['gained']}); groups with fewer persons {row['groups_with_fewer']} "
              f"({row['lost_by_group']} persons); swaps inside close pairs {len(swapped)}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
