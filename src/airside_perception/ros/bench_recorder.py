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
import threading
import time
from typing import Dict, List

import psutil
import rospy
from diagnostic_msgs.msg import DiagnosticArray

from airside_perception.msg import InferenceStatus, SimplexStatus
from airside_perception.ros.common import header_of_raw
from airside_perception.tools import graph_report
from airside_perception.tools.graph_report import NODES

# Outputs are received raw and only their header is read: the recorder must not load the
# machine it measures with deserializing 100k-point messages.
OUTPUTS = ("/perception/segmentation", "/perception/detections", "/perception/occupancy", "/baseline/obstacles",
           "/perception/obstacles", "/perception/safety_grid")
OUTPUT_GRACE_S = 1.0


def node_processes(nodes) -> Dict[str, psutil.Process]:
    """The running process of each named node (launched with ``__name:=<node>``), by node name."""
    found = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        args = p.info["cmdline"] or []
        for node in nodes:
            if f"__name:={node}" in args:  # the whole argument: simplex is not simplex_standby
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
        self.shadow_path = rospy.get_param("~shadow_path", "none")  # a shadow run over the whole measurement
        self.shadow_task = rospy.get_param("~shadow_task", "segmentation")
        self.shadow_answer: Dict[str, object] = {}
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
        if self.shadow_path not in ("", "none"):
            threading.Thread(target=self._shadow, daemon=True).start()
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
        print(graph_report.write(self, elapsed, cpu, rss_peak), flush=True)
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

    def _shadow(self) -> None:
        from airside_perception.srv import ShadowEngine

        t0 = time.monotonic()
        try:
            out = rospy.ServiceProxy("/model_manager/shadow_engine", ShadowEngine)(
                self.shadow_task, self.shadow_path, max(self.duration_s - 2.0, 1.0), 0)
            self.shadow_answer = {"success": out.success, "message": out.message,
                                  "report": json.loads(out.report_json) if out.report_json else None}
        except (rospy.ROSException, rospy.ServiceException) as exc:
            self.shadow_answer = {"success": False, "message": f"shadow call failed: {exc}"}
        self.shadow_answer["call_s"] = round(time.monotonic() - t0, 2)


def main() -> None:
    rospy.init_node("bench_recorder")
    BenchRecorder().run()
