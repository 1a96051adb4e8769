"""See and compare engine versions: ``engine_tool list`` and ``engine_tool compare``.

``list``: one line per version under the engines root: accuracy recorded in the manifest (the
synthetic test split), the person figure, latency on this machine where ``engine_tool bench``
measured that very model (matched by its sha256 in the bench results), gate status (the gate
report beside the manifest, against which base), precision, the share of zero weights (50 % for
a 2:4-sparse model), parameters, model size, how the
version is trusted (bundled, signed by a key, unsigned, revoked, expired) and whether it serves.

``compare``: two versions of one task side by side in one run, on the same clouds: accuracy
per class (the synthetic test split, or the team's own labelled scans for segmentation), near
persons found, latency interleaved, and agreement between the two, cloud by cloud (the shadow
run's comparison); a table, a JSON and a plot.
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Dict, List, Optional

import numpy as np

from airside_perception import cli
from airside_perception.engines import signing
from airside_perception.engines.active import ActiveVersions
from airside_perception.engines.manifest import TASKS, Manifest, load_manifest
from airside_perception.engines.trust import TrustPolicy, check
from airside_perception.errors import AirsideError
from airside_perception.pipelines import store

ACCURACY = {"segmentation": ("miou", "mIoU"), "detection": ("map", "mAP"), "occupancy": ("iou", "IoU")}


def _bench_latencies(bench_dir: str) -> Dict[str, Dict[str, object]]:
    """sha256 -> the newest latency ``tools.bench`` measured for that model file here."""
    found: Dict[str, Dict[str, object]] = {}
    for path in sorted(glob.glob(os.path.join(bench_dir, "**", "*.json"), recursive=True), key=os.path.getmtime):
        try:
            with open(path) as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not isinstance(data.get("model_sha256"), dict):
            continue
        for task, sha in data["model_sha256"].items():
            row = next((v for k, v in (data.get("rows") or {}).items() if k.startswith(f"{task} (")), None)
            if row:
                found[sha] = {"p50": row["p50"], "p99": row["p99"], "file": path,
                              "when": time.strftime("%Y-%m-%d", time.localtime(os.path.getmtime(path)))}
    return found


def _parameters(model_path: str):
    """(parameters, share of zero weights in the weight tensors (2-D and up), e.g. 0.5 for 2:4), or Nones."""
    try:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(model_path, load_external_data=False)
        params = int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
        weights = [numpy_helper.to_array(t) for t in model.graph.initializer if len(t.dims) >= 2]
        total = sum(w.size for w in weights)
        zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
        return params, (zeros / total if total else 0.0)
    except Exception:  # a listing never fails on one odd file
        return None, None


def _gate(manifest: Manifest) -> str:
    path = os.path.join(manifest.directory, "gate_report.json")
    try:
        with open(path) as fh:
            report = json.load(fh)
    except (OSError, ValueError):
        return "-"
    if report.get("candidate_sha256") not in (None, manifest.sha256):
        return "stale report"
    return f"{'pass' if report.get('passed') else 'FAIL'} vs {report.get('baseline_version', '?')}"


def _trust(manifest: Manifest, engines_root: str, trusted_keys_dir: str) -> str:
    verdict = check(manifest.directory, manifest.task, manifest.version, engines_root,
                    TrustPolicy(True, trusted_keys_dir))
    if verdict.trusted:
        return "bundled" if verdict.how == "bundled" else f"signed {verdict.key_id}"
    for word in ("revoked", "expired"):
        if word in verdict.reason:
            return word
    if not os.path.isfile(os.path.join(manifest.directory, signing.SIGNATURE_FILE)):
        return "unsigned"
    return "signature not trusted"


def list_versions(engines_root: str, tasks=TASKS, bench_dir: str = "bench_results", trusted_keys_dir: str = "",
                  serving: Optional[Dict[str, str]] = None) -> List[Dict[str, object]]:
    """One row per version directory of ``tasks`` under ``engines_root``."""
    latencies = _bench_latencies(bench_dir) if os.path.isdir(bench_dir) else {}
    rows = []
    for task in tasks:
        task_dir = os.path.join(engines_root, task)
        names = sorted(n for n in (os.listdir(task_dir) if os.path.isdir(task_dir) else [])
                       if not n.startswith(".") and os.path.isfile(os.path.join(task_dir, n, "manifest.yaml")))
        for name in names:
            row: Dict[str, object] = {"task": task, "version": name}
            real = os.path.realpath(os.path.join(task_dir, name))
            if os.path.dirname(real) != os.path.realpath(task_dir):
                row["problem"] = f"resolves to {real}, outside {task_dir}: every door refuses it"
                rows.append(row)
                continue
            try:
                manifest = load_manifest(os.path.join(task_dir, name), verify_checksum=False)
            except AirsideError as exc:
                row["problem"] = str(exc)
                rows.append(row)
                continue
            key, _ = ACCURACY[task]
            person = (manifest.metrics.get("iou") or {}).get("person") if task == "segmentation" else \
                (manifest.metrics.get("ap") or {}).get("person") if task == "detection" else None
            lat = latencies.get(manifest.sha256)
            size = os.path.getsize(manifest.model_path) if os.path.isfile(manifest.model_path) else 0
            params, sparsity = _parameters(manifest.model_path)
            row.update(accuracy=manifest.metrics.get(key), person=person,
                       p50_ms=lat and round(float(lat["p50"]), 2), p99_ms=lat and round(float(lat["p99"]), 2),
                       latency_from=lat and lat["file"], gate=_gate(manifest), precision=manifest.precision,
                       parameters=params, sparsity=None if sparsity is None else round(sparsity, 3),
                       size_mb=round(size / 1e6, 2),
                       trust=_trust(manifest, engines_root, trusted_keys_dir),
                       serving=bool(serving and serving.get(task) == name), sha256=manifest.sha256,
                       monitor=bool(manifest.monitor), not_after=manifest.not_after)
            rows.append(row)
    return rows


def list_table(rows: List[Dict[str, object]]) -> str:
    def fmt(v, spec=""):
        return "-" if v is None else format(v, spec) if spec else str(v)

    head = ("task", "version", "accuracy", "person", "P50/P99 ms", "gate", "precision", "zeros", "params", "MB",
            "trust", "monitor", "serving")
    lines = [head]
    for r in rows:
        if "problem" in r:
            lines.append((r["task"], r["version"], str(r["problem"])[:100]) + ("",) * 10)
            continue
        name = ACCURACY[str(r["task"])][1]
        lat = f"{r['p50_ms']:.1f}/{r['p99_ms']:.1f}" if r["p50_ms"] is not None else "not measured"
        lines.append((r["task"], r["version"], f"{name} {fmt(r['accuracy'])}", fmt(r["person"]), lat, r["gate"],
                      r["precision"], "-" if r["sparsity"] is None else f"{100 * r['sparsity']:.0f} %",
                      fmt(r["parameters"], ","), fmt(r["size_mb"]), r["trust"],
                      "yes" if r["monitor"] else "none", "SERVING" if r["serving"] else ""))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)


def serving_versions(state_file: str) -> Dict[str, str]:
    """What the graph serves: the state file's active versions over the configured ones."""
    from airside_perception.tools.bench import configured_versions

    try:
        configured = configured_versions()
    except AirsideError:
        configured = {}
    return {t: ActiveVersions(state_file, configured).version(t) or configured.get(t, "") for t in TASKS}


def main_list(args) -> int:
    tasks = [args.task] if args.task else list(TASKS)
    serving = serving_versions(args.state_file)
    rows = list_versions(args.engines_dir, tasks, args.bench_dir, args.trusted_keys_dir, serving)
    if not rows:
        cli.fail("engine_tool list", f"no version under {args.engines_dir} for {', '.join(tasks)}: check "
                                     "--engines-dir")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2, default=str)
    print(list_table(rows))
    print(f"\n{len(rows)} versions under {args.engines_dir}; accuracy: the manifest's (synthetic test split); "
          f"latency: engine_tool bench results in {args.bench_dir} for the same model file")
    return 0


def default_state_file() -> str:
    return os.path.join(os.environ.get("ROS_HOME", os.path.expanduser("~/.ros")), "airside_perception",
                        "active_engines.yaml")


# ---------------------------------------------------------------------------- compare
def compare(engines_root: str, task: str, a: str, b: str, scans: int, backend: str = "onnxruntime",
            data: Optional[Dict[str, object]] = None, progress: bool = True) -> Dict[str, object]:
    """``a`` (the base) and ``b`` side by side: accuracy of each on the same scans (the synthetic
    test split with its range bands, or ``data``: the team's labelled SemanticKITTI scans for
    segmentation: {root, class_map, sensor_pose, intensity_max}), latency interleaved on the same
    encoded clouds, agreement and near-field persons seen by one only, cloud by cloud."""
    from airside_perception.evaluation import semantickitti
    from airside_perception.frames import IntensityScale, parse_sensor_pose
    from airside_perception.ops.bev import encode
    from airside_perception.ota.shadow import Comparison
    from airside_perception.pipelines.host import PerceptionHost
    from airside_perception.sim.world import make_scan, split_seeds
    from airside_perception.stats import Percentiles
    from airside_perception.tools import evaluate

    manifests = {v: store.load_version(engines_root, task, v) for v in (a, b)}
    hosts = {v: PerceptionHost([store.open_engine(m, backend, intra_op_threads=1)]) for v, m in manifests.items()}
    try:
        if data:
            accuracy = {v: evaluate.evaluate_own_data(h, str(data["root"]), str(data["class_map"]),
                                                      str(data["sensor_pose"]), float(data["intensity_max"]),
                                                      progress)[task] for v, h in hosts.items()}
            scale = IntensityScale(float(data["intensity_max"]), hosts[a].bev_spec.intensity_max)
            clouds = [s.points for s in semantickitti.read_scans(
                str(data["root"]), None, parse_sensor_pose(str(data["sensor_pose"])), scale, need_labels=False)]
        else:
            accuracy = {v: evaluate.evaluate(h, "test", scans, progress=progress, breakdown=True)[task]
                        for v, h in hosts.items()}
            clouds = [make_scan(int(seed)).points for seed in split_seeds("test", scans)]
        engines = {v: h.engine(task) for v, h in hosts.items()}
        spec = hosts[a].bev_spec
        comparison = Comparison(task, manifests[b].class_names, spec)
        times: Dict[str, List[float]] = {a: [], b: []}
        for _ in range(2):  # warm-up
            for e in engines.values():
                e.run(encode(clouds[0], spec))
        for i, cloud in enumerate(clouds):
            bev = encode(cloud, spec)
            out = {}
            for v in ((a, b) if i % 2 == 0 else (b, a)):  # order alternates: neither always runs second
                t0 = time.perf_counter()
                out[v] = engines[v].run(bev)
                times[v].append((time.perf_counter() - t0) * 1e3)
            comparison.add(i, out[b], out[a], bev)
    finally:
        for h in hosts.values():
            h.close()
    latency = {v: {"p50_ms": round(Percentiles.of(t).p50, 2), "p99_ms": round(Percentiles.of(t).p99, 2)}
               for v, t in times.items()}
    return {"task": task, "a": a, "b": b, "clouds": len(clouds),
            "data": str(data["root"]) if data else f"synthetic test split, {scans} scans",
            "versions": {v: {"version": v, "model_sha256": m.sha256, "precision": m.precision}
                         for v, m in manifests.items()},
            "accuracy": accuracy, "latency": latency,
            "latency_ratio": round(float(np.median(np.array(times[b]) / np.maximum(times[a], 1e-6))), 3),
            "agreement": {"mean": round(float(np.mean(comparison.agreements)), 4),
                          "worst": round(float(np.min(comparison.agreements)), 4), "per_class": comparison.per_class()},
            "near_person_disagreements": len(comparison.near), "near_person_examples": comparison.near[:20],
            "machine": cli.machine(), "backend": backend}


def compare_table(r: Dict[str, object]) -> str:
    a, b, task = r["a"], r["b"], r["task"]
    acc = r["accuracy"]
    key, name = ACCURACY[task]
    per_class_key = "iou" if task == "segmentation" else "ap" if task == "detection" else None
    lines = [f"{task}: {a} (A) against {b} (B) on {r['clouds']} clouds ({r['data']}), {r['machine']}", "",
             f"{'':28s} {'A ' + a:>14s} {'B ' + b:>14s}"]

    def row(label, va, vb, spec=".2f"):
        fa = "-" if va is None or va != va else format(va, spec)
        fb = "-" if vb is None or vb != vb else format(vb, spec)
        lines.append(f"{label:28s} {fa:>14s} {fb:>14s}")
    row(name, acc[a].get(key), acc[b].get(key))
    if per_class_key:
        for cls in sorted(set(acc[a].get(per_class_key) or {}) | set(acc[b].get(per_class_key) or {})):
            row(f"  {cls}", (acc[a].get(per_class_key) or {}).get(cls), (acc[b].get(per_class_key) or {}).get(cls))
    if task == "detection":
        row("near persons found (%)", acc[a].get("person_recall_20m"), acc[b].get("person_recall_20m"))
    for band, va in (acc[a].get("by_range") or {}).items():
        vb = (acc[b].get("by_range") or {}).get(band, {})
        row(f"  {name} {band}", va.get(key), vb.get(key))
    row("latency P50 (ms)", r["latency"][a]["p50_ms"], r["latency"][b]["p50_ms"])
    row("latency P99 (ms)", r["latency"][a]["p99_ms"], r["latency"][b]["p99_ms"])
    lines += ["", f"B / A time, interleaved: {r['latency_ratio']}x",
              f"agreement of B with A: mean {r['agreement']['mean']}, worst cloud {r['agreement']['worst']}",
              f"near-field persons seen by one only: {r['near_person_disagreements']}"]
    return "\n".join(lines)


def compare_plot(r: Dict[str, object], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b, task = r["a"], r["b"], r["task"]
    per_class_key = "iou" if task == "segmentation" else "ap" if task == "detection" else None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 1]})
    if per_class_key:
        names = sorted(set(r["accuracy"][a].get(per_class_key) or {}) | set(r["accuracy"][b].get(per_class_key) or {}))
        x = np.arange(len(names))
        for k, v in enumerate((a, b)):
            values = [(r["accuracy"][v].get(per_class_key) or {}).get(n, np.nan) for n in names]
            axes[0].bar(x + (k - 0.5) * 0.4, values, 0.4, label=v)
        axes[0].set_xticks(x, names, rotation=30)
        axes[0].set_ylabel(per_class_key.upper())
    else:
        axes[0].bar([0, 1], [r["accuracy"][a].get("iou", np.nan), r["accuracy"][b].get("iou", np.nan)],
                    tick_label=[a, b])
        axes[0].set_ylabel("occupied IoU")
    axes[0].legend()
    axes[0].set_title(f"{task}: accuracy per class")
    axes[1].bar([a, b], [r["latency"][a]["p50_ms"], r["latency"][b]["p50_ms"]], label="P50")
    axes[1].plot([a, b], [r["latency"][a]["p99_ms"], r["latency"][b]["p99_ms"]], "k_", markersize=20, label="P99")
    axes[1].set_ylabel("ms")
    axes[1].set_title("latency, interleaved")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main_compare(args) -> int:
    data = None
    if args.data:
        from airside_perception.evaluation import semantickitti

        if args.task != "segmentation":
            cli.fail("engine_tool compare", "--data scores segmentation only: pass --task segmentation")
        if not args.class_map:
            cli.fail("engine_tool compare", "--data needs --class-map FILE (e.g. config/class_maps/semantickitti.yaml)")
        data = {"root": semantickitti.data_dir(args.data), "class_map": args.class_map,
                "sensor_pose": args.sensor_pose, "intensity_max": args.intensity_max}
    if args.a == args.b:
        cli.fail("engine_tool compare", f"A and B are both {args.a}: give two versions")
    out_dir = args.out_dir or os.path.join("bench_results", f"compare-{args.task}-{args.a}-{args.b}")
    os.makedirs(out_dir, exist_ok=True)
    result = compare(args.engines_dir, args.task, args.a, args.b, args.scans, args.backend, data)
    result["command"] = cli.command_line(None, "engine_tool")
    from airside_perception.tools.evaluate import json_safe

    with open(os.path.join(out_dir, "compare.json"), "w") as fh:
        json.dump(json_safe(result), fh, indent=2, default=float)
    compare_plot(result, os.path.join(out_dir, "compare.png"))
    print(compare_table(result))
    print(f"\nwrote {out_dir}/compare.json and compare.png")
    return 0
