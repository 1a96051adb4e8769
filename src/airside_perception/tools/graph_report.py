"""The graph benchmark's report (``bench.launch``): end-to-end latency per output, clouds
answered, stages from the nodes' diagnostics, the swap under load, per-hop times, CPU and memory;
written as text and JSON. ``rec`` is the recorder (``ros.bench_recorder``) with what it measured."""

from __future__ import annotations

import json
import os
from typing import Dict, List

from airside_perception.stats import Percentiles

NEURAL_OUTPUTS = ("/perception/segmentation", "/perception/detections", "/perception/occupancy")
NODES = ("inference_host", "baseline", "simplex", "simplex_standby", "model_manager", "cloud_replay", "bench_recorder")


def swap_lines(rec, result: Dict) -> List[str]:
    """P99 of the swapped task's stamp-to-publish latency in the 3 s around the swap against
    the rest of the run, and the clouds without that output around the swap."""
    if not rec.swap_window:
        return []
    topic = {"segmentation": "/perception/segmentation", "detection": "/perception/detections",
             "occupancy": "/perception/occupancy"}[rec.swap_task]
    t0, t1 = rec.swap_window
    mid = (t0 + t1) / 2
    lo, hi = min(t0, mid - 1.5), max(t1, mid + 1.5)
    near = [lat for t, lat, _ in rec.arrivals[topic] if lo <= t <= hi]
    far = [lat for t, lat, _ in rec.arrivals[topic] if not lo <= t <= hi]
    p_near, p_far = Percentiles.of(near), Percentiles.of(far)
    ratio = p_near.p99 / p_far.p99 if far and near else float("nan")
    dropped = result["outputs"][topic]["dropped"]
    met = ratio <= 1.10 and dropped == 0
    result["swap_under_load"] = {"task": rec.swap_task, "answer": rec.swap_answer, "call_s": t1 - t0,
                                 "p99_around_ms": p_near.p99, "p99_outside_ms": p_far.p99, "ratio": ratio,
                                 "frames_around": len(near), "dropped": dropped, "met": met}
    return ["", f"swap under load ({rec.swap_answer}; call took {t1 - t0:.1f} s):",
            f"  {topic} P99 in the {hi - lo:.1f} s around the swap {p_near.p99:.1f} ms ({len(near)} frames), "
            f"outside {p_far.p99:.1f} ms: {ratio:.2f}x (target <= 1.10), {dropped} clouds without output: "
            f"{'met' if met else 'NOT met'}"]

def hop_stats(rec):
    """Percentiles of each hop, and of the time outside the host's own work per cloud."""
    with rec.lock:
        hops = dict(rec.hops)
        seg = {stamp: lat for _, lat, stamp in rec.arrivals["/perception/segmentation"]}
    if not hops:
        return {}, {}
    names = sorted({k for h in hops.values() for k in h})
    stats = {}
    for name in names:
        p = Percentiles.of([h[name] for h in hops.values() if name in h])
        stats[name] = {"p50": p.p50, "p99": p.p99, "max": p.max}
    outside = [seg[s] - h["own work"] for s, h in hops.items() if s in seg]
    if not outside:
        return stats, {}
    p_out, p_e2e = Percentiles.of(outside), Percentiles.of([seg[s] for s in hops if s in seg])
    return stats, {"p50_ms": p_out.p50, "p99_ms": p_out.p99, "share": p_out.p50 / max(p_e2e.p50, 1e-9)}

def write(rec, elapsed: float, cpu: Dict[str, float], rss: Dict[str, float]) -> str:
    n_clouds = len(rec.clouds)
    lines = [f"graph benchmark: {elapsed:.0f} s at 10 Hz, {n_clouds} clouds published by the replay",
             "", "end-to-end latency, input stamp -> output received (ms):"]
    result = {"duration_s": elapsed, "clouds": n_clouds, "outputs": {}, "cpu_percent": cpu, "rss_peak_mb": rss,
              "shadow": getattr(rec, "shadow_answer", None) or None}
    for topic, values in rec.latency.items():
        p = Percentiles.of(values)
        answered = len(rec.stamps[topic] & set(rec.clouds))
        dropped = n_clouds - answered
        lines.append(f"  {topic:28s} {p.line()}  dropped {dropped}/{n_clouds}")
        result["outputs"][topic] = {"p50": p.p50, "p99": p.p99, "max": p.max, "count": p.count,
                                    "dropped": dropped, "answered": answered}
    lines += ["", "stages, from the nodes' /diagnostics (rolling window):"]
    stages = {}
    for name, values in sorted(rec.diag.items()):
        keep = {k: v for k, v in values.items() if "(ms)" in k and ("P50" in k or "P99" in k or "max" in k)}
        if keep:
            stages[name] = keep
            lines.append(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in keep.items()))
        if name.endswith(": input"):
            lines.append(f"  {name}: dropped {values.get('dropped (not processed in time)')}, "
                         f"rejected {values.get('rejected')}, stale {values.get('stale')}")
    result["stages"] = stages
    worst = max((result["outputs"][t]["p99"] for t in NEURAL_OUTPUTS), default=float("nan"))
    dropped = sum(result["outputs"][t]["dropped"] for t in NEURAL_OUTPUTS)
    met = n_clouds > 0 and worst < rec.target_ms and dropped == 0
    result["target"] = {"p99_ms": rec.target_ms, "worst_p99_ms": worst, "dropped": dropped, "met": met}
    lines.insert(1, f"target: every neural output P99 under {rec.target_ms:.0f} ms, no dropped frames: "
                    f"{'met' if met else 'NOT met'} (worst P99 {worst:.1f} ms, {dropped} dropped)")
    if n_clouds == 0:
        lines.insert(0, "ERROR: no cloud arrived from the replay: see cloud_replay's log (is the bag path right?)")
    lines += swap_lines(rec, result)
    lines += ["", "simplex decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(rec.simplex_active.items())),
              "", "processes (CPU % of one core, averaged; peak RSS):"]
    result["simplex"] = rec.simplex_active
    result["hops"], result["overhead"] = hop_stats(rec)
    result["host_kills"] = rec.host_kills
    if result["hops"]:
        lines += ["", "inference host, per hop (ms): " + ", ".join(
            f"{k} P50 {v['p50']:.1f} / P99 {v['p99']:.1f}" for k, v in result["hops"].items())]
    if result["overhead"]:
        outside = result["overhead"]
        lines.append(f"outside the host's own work (transport, queueing): P50 {outside['p50_ms']:.1f} ms, "
                     f"{100 * outside['share']:.0f} % of the segmentation output's P50")
    for name in NODES:
        if name in cpu:
            lines.append(f"  {name:16s} CPU {cpu[name]:6.1f} %   RSS {rss.get(name, float('nan')):7.1f} MB")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(rec.out)), exist_ok=True)
    with open(rec.out, "w") as fh:
        fh.write(text)
    with open(os.path.splitext(rec.out)[0] + ".json", "w") as fh:
        json.dump(result, fh, indent=2, default=float)
    return text
