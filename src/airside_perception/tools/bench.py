"""Core benchmarks without ROS: every stage on 100k-point clouds, P50 / P99 / max.

    python -m airside_perception.tools.bench --out bench_results/core.txt

Preprocessing, each engine alone (inference + post-processing), the three together as the
inference host runs them (concurrently, preprocessing shared), the RANSAC baseline pinned to
one core, and the simplex decision. Numbers go to the console and to ``--out`` (+ .json).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable, Dict, List, Optional

import numpy as np
import psutil

from airside_perception import cli, config, memory, node_configs
from airside_perception.engines.manifest import TASKS
from airside_perception.errors import AirsideError
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.pipelines import store
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.sim.world import make_scan, split_seeds
from airside_perception.stats import Percentiles, time_calls

PROG = "airside_perception.tools.bench"
PACKAGE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..")
DEFAULT_ENGINES = os.path.join(PACKAGE_DIR, "engines")
HOST_CONFIG = os.path.join(PACKAGE_DIR, "config", "inference_host.yaml")


def configured_versions(path: str = HOST_CONFIG) -> Dict[str, str]:
    """The versions the inference host starts with (``versions`` of its config, checked as the
    node checks it)."""
    cfg = config.parse(config.load_yaml(path), node_configs.INFERENCE_HOST, path)
    return {t: str(v) for t, v in cfg["versions"].items()}


def timed(fn: Callable[[int], object], n: int, warmup: int = 3) -> Percentiles:
    return Percentiles.of(time_calls(fn, n, warmup))


def run(engines_dir: str, versions: Dict[str, str], backend: str, n_runs: int, n_clouds: int,
        threads: int) -> Dict[str, object]:
    clouds = [make_scan(int(s)).points for s in split_seeds("test", n_clouds)]
    spec = BevSpec()
    results: Dict[str, object] = {"points_mean": float(np.mean([len(c) for c in clouds])),
                                  "cpu_count": os.cpu_count(), "backend": backend, "versions": versions,
                                  "threads": threads}
    rows: Dict[str, Percentiles] = {}
    rows["preprocessing (pillar encoding)"] = timed(lambda i: encode(clouds[i % n_clouds], spec), n_runs)
    encoded = [encode(c, spec) for c in clouds]
    process = psutil.Process()
    for task in TASKS:
        manifest = store.load_version(engines_dir, task, versions[task])
        engine = store.open_engine(manifest, backend, intra_op_threads=threads)
        rows[f"{task} (inference + post, {threads} thread{'s' if threads > 1 else ''})"] = timed(
            lambda i, e=engine: e.run(encoded[i % n_clouds]), n_runs)
        engine.close()
    host = PerceptionHost([store.open_engine(store.load_version(engines_dir, t, versions[t]), backend, threads)
                           for t in TASKS])
    rss_before = process.memory_info().rss
    rows["all three, host frame (concurrent, preprocessing shared)"] = timed(
        lambda i: host.process(clouds[i % n_clouds]), n_runs)
    results["host_rss_mb"] = process.memory_info().rss / 1e6
    results["host_rss_growth_mb"] = (process.memory_info().rss - rss_before) / 1e6
    host.close()
    rows.update(_baseline_one_core(clouds, n_runs))
    rows["simplex decision + near-field fusion"] = _simplex(n_runs * 10)
    results["rows"] = {k: {"p50": v.p50, "p99": v.p99, "max": v.max, "n": v.count} for k, v in rows.items()}
    results["throughput_hz"] = 1000.0 / rows["all three, host frame (concurrent, preprocessing shared)"].p50
    return results


def _baseline_one_core(clouds, n_runs: int) -> Dict[str, Percentiles]:
    from airside_perception.baseline.pipeline import BaselineParams, run_baseline

    params = BaselineParams()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity:
        os.sched_setaffinity(0, {min(affinity)})
    try:
        p = timed(lambda i: run_baseline(clouds[i % len(clouds)], params), n_runs)
    finally:
        if affinity:
            os.sched_setaffinity(0, affinity)
    return {"RANSAC baseline (one core)": p}


def _simplex(n: int) -> Percentiles:
    from airside_perception.simplex.decision import Evidence, SimplexParams, SimplexState, decide
    from airside_perception.simplex.fusion import missed_near_obstacles

    rng = np.random.default_rng(0)
    adv = np.column_stack([rng.uniform(-30, 30, (60, 2)), np.zeros(60), np.ones((60, 3)), np.zeros(60)])
    base = np.column_stack([rng.uniform(-30, 30, (80, 2)), np.zeros(80), np.ones((80, 3)), np.zeros(80)])
    params, state = SimplexParams(), SimplexState()
    evidence = Evidence(True, True, 50.0, 0.9, None, True, 10.0)

    def once(_):
        decide(state, evidence, params)
        missed_near_obstacles(adv, base, 20.0)
    return timed(once, n)


def report(results: Dict[str, object]) -> str:
    engines = ", ".join(f"{t} {v}" for t, v in results["versions"].items())
    lines = [f"core benchmark: {results['points_mean']:.0f} points per cloud (mean), backend {results['backend']}, "
             f"{results['cpu_count']} CPUs, {results['threads']} ONNX Runtime threads per engine",
             f"engines: {engines}", ""]
    width = max(len(k) for k in results["rows"])
    for name, r in results["rows"].items():
        lines.append(f"  {name:{width}s}  P50 {r['p50']:7.2f} ms  P99 {r['p99']:7.2f} ms  max {r['max']:7.2f} ms")
    lines += ["", f"  host throughput (1 / P50 frame): {results['throughput_hz']:.1f} clouds/s; "
                  f"process RSS {results['host_rss_mb']:.0f} MB"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    memory.keep_frame_buffers()  # as the nodes run
    parser = cli.Parser(prog=PROG, description="Core latency benchmarks (P50 / P99 / max).")
    parser.add_argument("--engines-dir", default=os.path.abspath(DEFAULT_ENGINES))
    parser.add_argument("--version", action="append", default=None, metavar="[TASK=]V",
                        help="V: this version of every task; TASK=V: of one task (repeatable); default: the "
                             "versions in config/inference_host.yaml, as the inference host starts")
    parser.add_argument("--backend", choices=["auto", "onnxruntime", "tensorrt"], default="onnxruntime")
    parser.add_argument("--runs", type=cli.positive_int, default=100)
    parser.add_argument("--clouds", type=cli.positive_int, default=10)
    parser.add_argument("--threads", type=cli.positive_int, default=2,
                        help="ONNX Runtime threads per engine (config/inference_host.yaml: intra_op_threads)")
    parser.add_argument("--out", type=cli.writable_file, default="bench_results/core.txt")
    args = parser.parse_args(argv)
    try:
        versions = cli.task_versions(args.version, TASKS, configured_versions())
        results = run(args.engines_dir, versions, args.backend, args.runs, args.clouds, args.threads)
    except (AirsideError, ValueError) as exc:
        cli.fail(PROG, str(exc), cli.code_of(exc))
    manifests = {t: store.load_version(args.engines_dir, t, v) for t, v in versions.items()}
    results["model_sha256"] = {t: m.sha256 for t, m in manifests.items()}
    results["precision"] = {t: m.precision for t, m in manifests.items()}
    results["machine"], results["command"] = cli.machine(), cli.command_line(argv, PROG)
    results["data"] = f"synthetic test split, {args.clouds} clouds (seeds from {split_seeds('test', 1)[0]})"
    text = report(results)
    print(text, end="")
    with open(args.out, "w") as fh:
        fh.write(text)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as fh:
        json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
