"""Command line of the synthetic airside world.

    python -m airside_perception.sim scan --seed S --out FILE.npz
    python -m airside_perception.sim bag --seed S --frames F --out FILE.bag
    python -m airside_perception.sim render --seed S --out-dir DIR
"""

from __future__ import annotations

import os
import sys
import time
from typing import List, Optional

import numpy as np

from airside_perception import cli

PROG = "airside_perception.sim"


def _parser() -> cli.Parser:
    parser = cli.Parser(prog=PROG, description="Synthetic airside LiDAR world.")
    sub = parser.add_subparsers(dest="command", parser_class=cli.Parser)
    sub.required = True
    density = dict(choices=["compact", "default", "dense"], default="default",
                   help="sensor resolution: about 35k, 100k or 200k points (default: default)")

    p = sub.add_parser("scan", help="one labelled scan to an .npz file")
    p.add_argument("--seed", type=cli.non_negative_int, required=True)
    p.add_argument("--out", type=cli.writable_file, required=True, help="output .npz")
    p.add_argument("--density", **density)

    sub.add_parser("bag", add_help=False,
                   help="a 10 Hz sequence with ground truth to a bag file (ROS layer: python -m "
                        "airside_perception.ros.bag_writer --help)")

    p = sub.add_parser("render", help="bird's-eye and side views of a scan as PNG")
    p.add_argument("--seed", type=cli.non_negative_int, required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--density", **density)

    p = sub.add_parser("bench", help="time labelled scans (P50/P99/max) and write them to a file")
    p.add_argument("--scans", type=cli.positive_int, default=30)
    p.add_argument("--out", type=cli.writable_file, default="sim_bench.txt")
    p.add_argument("--density", **density)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bag"]:  # bags are written by the ROS layer, in its own process
        command = [sys.executable, "-m", "airside_perception.ros.bag_writer", *argv[1:]]
        os.execv(sys.executable, command)
    args = _parser().parse_args(argv)
    if args.command == "scan":
        from airside_perception.sim.world import make_scan

        scan = make_scan(args.seed, args.density)
        np.savez_compressed(args.out, **scan.to_npz_dict())
        print(f"{args.out}: {len(scan.points)} points, {len(scan.boxes)} objects, seed {args.seed}")
    elif args.command == "render":
        try:
            os.makedirs(args.out_dir, exist_ok=True)  # created before the work, as every tool does
        except OSError as exc:
            cli.fail(PROG, f"--out-dir {args.out_dir} cannot be created ({exc.strerror}): pick another folder")
        from airside_perception.sim.render import render_views
        from airside_perception.sim.world import make_scan

        scan = make_scan(args.seed, args.density)
        bev = os.path.join(args.out_dir, "sim_bev.png")
        side = os.path.join(args.out_dir, "sim_side.png")
        render_views(scan, bev, side)
        print(f"wrote {bev} and {side}")
    else:
        _bench(args)
    return 0


def _bench(args) -> None:
    from airside_perception.sim.world import make_scan

    times, sizes = [], []
    for seed in range(args.scans):
        start = time.perf_counter()
        scan = make_scan(110_000 + seed, args.density)
        times.append((time.perf_counter() - start) * 1000.0)
        sizes.append(len(scan.points))
    t = np.asarray(times)
    line = (f"sim scan ({args.density}, mean {np.mean(sizes):.0f} points, {args.scans} scans, one core): "
            f"P50 {np.percentile(t, 50):.1f} ms  P99 {np.percentile(t, 99):.1f} ms  max {t.max():.1f} ms")
    print(line)
    with open(args.out, "w") as fh:
        fh.write(line + "\n")


if __name__ == "__main__":
    sys.exit(main())
