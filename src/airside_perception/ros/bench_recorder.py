"""Graph benchmark recorder: end-to-end latency of every output, dropped frames, CPU, memory.

Runs beside ``full.launch`` while a bag replays at 10 Hz. Latency is the time from the input
cloud's stamp (set by the replay when it publishes) to the arrival of each output here.
At the end it reads the last ``/diagnostics`` of every node for the per-stage percentiles,
writes everything to ``~out`` and shuts the launch down.

Per cloud it also keeps the inference host's hop times (``InferenceStatus``): stamp -> arrival,
arrival -> start of work, conditioning, encoding, each task, publish; the time outside the
host's own work (transport and queueing) is the segmentation output's end-to-end latency less
conditioning, encoding, the slowest task and publishing. ``~kill_host``: the inference host is
killed (SIGKILL) when the measurement starts and again whenever it respawns, so the simplex
runs on the baseline alone.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Dict, List

import psutil
import rospy
from diagnostic_msgs.msg import DiagnosticArray

from airside_perception.msg import InferenceStatus, SimplexStatus
from airside_perception.ros.common import header_of_raw
from airside_perception.stats import Percentiles

# Outputs are received raw and only their header is read: the recorder must not load the
# machine it measures with deserializing 100k-point messages.
OUTPUTS = ("/perception/segmentation", "/perception/detections", "/perception/occupancy", "/baseline/obstacles",
           "/perception/obstacles", "/perception/safety_grid")
NODES = ("inference_host", "baseline", "simplex", "model_manager", "cloud_replay", "bench_recorder")
OUTPUT_GRACE_S = 1.0
NEURAL_OUTPUTS = ("/perception/segmentation", "/perception/detections", "/perception/occupancy")


def node_processes(nodes) -> Dict[str, psutil.Process]:
    """The running process of each named node (launched with ``__name:=<node>``), by node name."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        for node in nodes:
            if f"__name:={node}" in cmd:
                found[node] = p
    return found


class BenchRecorder:
    def __init__(self):
        self.duration_s = float(rospy.get_param("~duration_s", 60.0))
        self.warmup_s = float(rospy.get_param("~warmup_s", 5.0))
        self.out = rospy.get_param("~out")
        self.target_ms = float(rospy.get_param("~target_p99_ms", 100.0))
        self.swap_path = rospy.get_param("~swap_path", "")  # a swap under load half-way through, when set
        if self.swap_path == "none":
            self.swap_path = ""
        self.swap_task = rospy.get_param("~swap_task", "detection")
        self.kill_host = bool(rospy.get_param("~kill_host", False))
        self.host_kills = 0
        self.hops: Dict[int, Dict[str, float]] = {}  # stamp ns -> hop -> ms
        self.swap_window: List[float] = []  # monotonic start, end of the swap call
        self.swap_answer = ""
        self.arrivals: Dict[str, List] = {t: [] for t in OUTPUTS}  # (monotonic arrival, latency ms, stamp ns)
        self.lock = threading.Lock()
        self.recording = False  # outputs are kept
        self.counting_clouds = False  # clouds are counted (stops OUTPUT_GRACE_S before the outputs)
        self.clouds: Dict[int, int] = {}
        self.latency: Dict[str, List[float]] = {t: [] for t in OUTPUTS}
        self.stamps: Dict[str, set] = {t: set() for t in OUTPUTS}
        self.simplex_active: Dict[str, int] = {}
        self.diag: Dict[str, Dict[str, str]] = {}
        self.subs = [rospy.Subscriber(t, rospy.AnyMsg, self._on_output, t, queue_size=20, buff_size=1 << 24)
                     for t in OUTPUTS]
        self.subs.append(rospy.Subscriber("/airside_av/lidar/aggregated", rospy.AnyMsg, self._on_cloud,
                                          queue_size=20, buff_size=1 << 25))
        self.subs.append(rospy.Subscriber("/simplex/status", SimplexStatus, self._on_status, queue_size=20))
        self.subs.append(rospy.Subscriber("/diagnostics", DiagnosticArray, self._on_diag, queue_size=50))
        self.subs.append(rospy.Subscriber("/inference_host/status", InferenceStatus, self._on_host_status,
                                          queue_size=20))

    def _on_cloud(self, raw) -> None:
        stamp, _ = header_of_raw(raw._buff)
        if self.counting_clouds:
            with self.lock:
                self.clouds[stamp.to_nsec()] = 1

    def _on_output(self, raw, topic: str) -> None:
        now = rospy.Time.now()
        stamp, _ = header_of_raw(raw._buff)
        if self.recording:
            with self.lock:
                self.latency[topic].append((now - stamp).to_sec() * 1e3)
                self.stamps[topic].add(stamp.to_nsec())
                self.arrivals[topic].append((time.monotonic(), (now - stamp).to_sec() * 1e3, stamp.to_nsec()))

    def _on_status(self, msg) -> None:
        if self.recording:
            with self.lock:
                key = f"{msg.active} ({msg.reason.split(' ')[0]})"
                self.simplex_active[key] = self.simplex_active.get(key, 0) + 1

    def _on_host_status(self, msg) -> None:
        if not self.recording:
            return
        hops = {"stamp to arrival": msg.arrival_ms, "arrival to start of work": msg.queue_ms,
                "conditioning": msg.conditioning_ms, "encoding": msg.encoding_ms, "publish": msg.publish_ms,
                "stamp to report": msg.latency_ms}
        hops.update({f"task {t}": ms for t, ms in zip(msg.tasks, msg.task_ms)})
        hops["own work"] = msg.conditioning_ms + msg.encoding_ms + max(msg.task_ms, default=0.0) + msg.publish_ms
        with self.lock:
            self.hops[msg.header.stamp.to_nsec()] = hops

    def _kill_host(self, procs: Dict[str, psutil.Process]) -> None:
        """SIGKILL of the inference host (again after each respawn): the baseline-only scenario."""
        for p in node_processes(("inference_host",)).values():
            try:
                p.kill()
                self.host_kills += 1
            except psutil.Error:
                pass
        procs.pop("inference_host", None)

    def _on_diag(self, msg) -> None:
        for s in msg.status:
            self.diag[s.name] = {kv.key: kv.value for kv in s.values}
            self.diag[s.name]["_message"] = s.message

    def run(self) -> None:
        rospy.sleep(self.warmup_s)
        procs = node_processes(NODES)
        if self.kill_host:
            self._kill_host(procs)
        for p in procs.values():
            p.cpu_percent(None)
        self.recording = self.counting_clouds = True
        start = time.time()
        rss_peak: Dict[str, float] = {}
        swap_thread = None
        while time.time() - start < self.duration_s and not rospy.is_shutdown():
            time.sleep(1.0)
            if self.kill_host:
                self._kill_host(procs)
            if self.swap_path and swap_thread is None and time.time() - start > self.duration_s / 2:
                swap_thread = threading.Thread(target=self._swap, daemon=True)
                swap_thread.start()
            for name, p in procs.items():
                try:
                    rss_peak[name] = max(rss_peak.get(name, 0.0), p.memory_info().rss / 1e6)
                except psutil.Error:
                    pass
        self.counting_clouds = False
        time.sleep(OUTPUT_GRACE_S)  # the outputs of the last clouds counted are still on their way
        self.recording = False
        elapsed = time.time() - start - OUTPUT_GRACE_S
        cpu = {}
        for name, p in procs.items():
            try:
                cpu[name] = p.cpu_percent(None)
            except psutil.Error:
                cpu[name] = float("nan")
        self._write(elapsed, cpu, rss_peak)
        rospy.signal_shutdown("benchmark done")

    def _swap(self) -> None:
        from airside_perception.srv import SwapEngine

        t0 = time.monotonic()
        try:
            out = rospy.ServiceProxy("/model_manager/swap_engine", SwapEngine)(self.swap_task, self.swap_path)
            self.swap_answer = f"{'swapped' if out.success else 'refused'}: {out.message}"
        except (rospy.ROSException, rospy.ServiceException) as exc:
            self.swap_answer = f"swap call failed: {exc}"
        self.swap_window = [t0, time.monotonic()]

    def _swap_lines(self, result: Dict) -> List[str]:
        """P99 of the swapped task's stamp-to-publish latency in the 3 s around the swap against
        the rest of the run, and the clouds without that output around the swap."""
        if not self.swap_window:
            return []
        topic = {"segmentation": "/perception/segmentation", "detection": "/perception/detections",
                 "occupancy": "/perception/occupancy"}[self.swap_task]
        t0, t1 = self.swap_window
        mid = (t0 + t1) / 2
        lo, hi = min(t0, mid - 1.5), max(t1, mid + 1.5)
        near = [lat for t, lat, _ in self.arrivals[topic] if lo <= t <= hi]
        far = [lat for t, lat, _ in self.arrivals[topic] if not lo <= t <= hi]
        p_near, p_far = Percentiles.of(near), Percentiles.of(far)
        ratio = p_near.p99 / p_far.p99 if far and near else float("nan")
        dropped = result["outputs"][topic]["dropped"]
        met = ratio <= 1.10 and dropped == 0
        result["swap_under_load"] = {"task": self.swap_task, "answer": self.swap_answer, "call_s": t1 - t0,
                                     "p99_around_ms": p_near.p99, "p99_outside_ms": p_far.p99, "ratio": ratio,
                                     "frames_around": len(near), "dropped": dropped, "met": met}
        return ["", f"swap under load ({self.swap_answer}; call took {t1 - t0:.1f} s):",
                f"  {topic} P99 in the {hi - lo:.1f} s around the swap {p_near.p99:.1f} ms ({len(near)} frames), "
                f"outside {p_far.p99:.1f} ms: {ratio:.2f}x (target <= 1.10), {dropped} clouds without output: "
                f"{'met' if met else 'NOT met'}"]

    def _hop_stats(self):
        """Percentiles of each hop, and of the time outside the host's own work per cloud."""
        with self.lock:
            hops = dict(self.hops)
            seg = {stamp: lat for _, lat, stamp in self.arrivals["/perception/segmentation"]}
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

    def _write(self, elapsed: float, cpu: Dict[str, float], rss: Dict[str, float]) -> None:
        n_clouds = len(self.clouds)
        lines = [f"graph benchmark: {elapsed:.0f} s at 10 Hz, {n_clouds} clouds published by the replay",
                 "", "end-to-end latency, input stamp -> output received (ms):"]
        result = {"duration_s": elapsed, "clouds": n_clouds, "outputs": {}, "cpu_percent": cpu, "rss_peak_mb": rss}
        for topic, values in self.latency.items():
            p = Percentiles.of(values)
            answered = len(self.stamps[topic] & set(self.clouds))
            dropped = n_clouds - answered
            lines.append(f"  {topic:28s} {p.line()}  dropped {dropped}/{n_clouds}")
            result["outputs"][topic] = {"p50": p.p50, "p99": p.p99, "max": p.max, "count": p.count,
                                        "dropped": dropped, "answered": answered}
        lines += ["", "stages, from the nodes' /diagnostics (rolling window):"]
        stages = {}
        for name, values in sorted(self.diag.items()):
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
        met = n_clouds > 0 and worst < self.target_ms and dropped == 0
        result["target"] = {"p99_ms": self.target_ms, "worst_p99_ms": worst, "dropped": dropped, "met": met}
        lines.insert(1, f"target: every neural output P99 under {self.target_ms:.0f} ms, no dropped frames: "
                        f"{'met' if met else 'NOT met'} (worst P99 {worst:.1f} ms, {dropped} dropped)")
        if n_clouds == 0:
            lines.insert(0, "ERROR: no cloud arrived from the replay: see cloud_replay's log (is the bag path right?)")
        lines += self._swap_lines(result)
        lines += ["", "simplex decisions: " + ", ".join(f"{k} {v}" for k, v in sorted(self.simplex_active.items())),
                  "", "processes (CPU % of one core, averaged; peak RSS):"]
        result["simplex"] = self.simplex_active
        result["hops"], result["overhead"] = self._hop_stats()
        result["host_kills"] = self.host_kills
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
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        with open(self.out, "w") as fh:
            fh.write(text)
        with open(os.path.splitext(self.out)[0] + ".json", "w") as fh:
            json.dump(result, fh, indent=2, default=float)
        print(text, flush=True)


def main() -> None:
    rospy.init_node("bench_recorder")
    BenchRecorder().run()
