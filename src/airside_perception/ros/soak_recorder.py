"""Soak recorder: ``full.launch`` for a shift, with a swap and a rollback every few minutes.

Every minute it records per node RSS, CPU and restarts (a changed PID), and per output the
P50/P99 stamp-to-arrival latency and the clouds that got no output; at the end it writes
``~out`` (table and verdict, tools.soak), a JSON copy and a plot, and shuts the launch down.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Dict, List

import numpy as np
import psutil
import rospy

from airside_perception.ros.bench_recorder import node_processes
from airside_perception.ros.common import header_of_raw
from airside_perception.srv import RollbackEngine, SwapEngine
from airside_perception.tools import soak

OUTPUTS = ("/perception/segmentation", "/perception/detections", "/baseline/obstacles", "/perception/obstacles")
NODES = ("inference_host", "baseline", "simplex", "model_manager")
ANSWER_S = 1.0  # a cloud without an output this long after it was published counts as dropped
ROLLBACK_AFTER_S = 60.0


class SoakRecorder:
    def __init__(self):
        self.duration_s = float(rospy.get_param("~duration_s", 1800.0))
        self.swap_period_s = float(rospy.get_param("~swap_period_s", 240.0))
        self.swap_path = rospy.get_param("~swap_path")
        self.swap_task = rospy.get_param("~swap_task", "detection")
        self.out = rospy.get_param("~out")
        self.lock = threading.Lock()
        self.clouds: Dict[int, float] = {}
        self.seen: Dict[str, set] = {o: set() for o in OUTPUTS}
        self.lat: Dict[str, List[float]] = {o: [] for o in OUTPUTS}
        self.subs = [rospy.Subscriber(o, rospy.AnyMsg, self._on_output, o, queue_size=20, buff_size=1 << 24)
                     for o in OUTPUTS]
        self.subs.append(rospy.Subscriber("/airside_av/lidar/aggregated", rospy.AnyMsg, self._on_cloud,
                                          queue_size=20, buff_size=1 << 25))

    def _on_cloud(self, raw) -> None:
        stamp, _ = header_of_raw(raw._buff)
        with self.lock:
            self.clouds[stamp.to_nsec()] = time.monotonic()

    def _on_output(self, raw, output: str) -> None:
        stamp, _ = header_of_raw(raw._buff)
        with self.lock:
            self.seen[output].add(stamp.to_nsec())
            self.lat[output].append((rospy.Time.now() - stamp).to_sec() * 1e3)

    def _ota(self, k: int) -> str:
        """A swap, then a rollback a minute later; the answer, in words."""
        try:
            if k % 2 == 0:
                out = rospy.ServiceProxy("/model_manager/swap_engine", SwapEngine)(self.swap_task, self.swap_path)
                return f"swap {'ok' if out.success else 'refused: ' + out.message}"
            out = rospy.ServiceProxy("/model_manager/rollback_engine", RollbackEngine)(self.swap_task)
            return f"rollback {'ok' if out.success else 'refused: ' + out.message}"
        except (rospy.ROSException, rospy.ServiceException) as exc:
            return f"OTA call failed: {exc}"

    def _minute(self, k: int, procs, pids, events):
        m = soak.Minute(k + 1, events=events)
        now = time.monotonic()
        with self.lock:
            due = [s for s, t in self.clouds.items() if now - t > ANSWER_S]
            for s in due:
                del self.clouds[s]
            lat = {o: self.lat[o] for o in OUTPUTS}
            self.lat = {o: [] for o in OUTPUTS}
            for o in OUTPUTS:
                m.dropped[o] = sum(1 for s in due if s not in self.seen[o])
                self.seen[o] -= set(due)
        m.clouds = len(due)
        for o, values in lat.items():
            m.p50_ms[o] = float(np.percentile(values, 50)) if values else float("nan")
            m.p99_ms[o] = float(np.percentile(values, 99)) if values else float("nan")
        fresh = node_processes(NODES)
        for node in NODES:
            p = fresh.get(node)
            if p is None:
                continue
            m.restarts[node] = int(node in pids and pids[node] != p.pid)
            if m.restarts[node]:
                procs[node] = p
                p.cpu_percent(None)
            pids[node] = p.pid
            try:
                m.rss_mb[node] = procs[node].memory_info().rss / 1e6
                m.cpu_percent[node] = procs[node].cpu_percent(None)
            except (psutil.Error, KeyError):
                pass
        return m, lat

    def run(self) -> None:
        rospy.wait_for_service("/model_manager/swap_engine", timeout=120)
        rospy.sleep(10.0)  # engines warm, clouds flowing
        procs = node_processes(NODES)
        pids = {n: p.pid for n, p in procs.items()}
        for p in procs.values():
            p.cpu_percent(None)
        with self.lock:
            self.clouds.clear()
        start = time.monotonic()
        minutes: List[soak.Minute] = []
        latencies: Dict[str, List[List[float]]] = {o: [] for o in OUTPUTS}
        first = start + self.swap_period_s / 2
        ota_times = []  # a swap and, a minute later, its rollback, every swap period
        while first + ROLLBACK_AFTER_S < start + self.duration_s - 60.0:
            ota_times += [first, first + ROLLBACK_AFTER_S]
            first += self.swap_period_s
        k_ota = 0
        while time.monotonic() - start < self.duration_s and not rospy.is_shutdown():
            minute_end = start + 60.0 * (len(minutes) + 1)
            events = []
            while time.monotonic() < minute_end and not rospy.is_shutdown():
                if k_ota < len(ota_times) and time.monotonic() >= ota_times[k_ota]:
                    events.append(self._ota(k_ota))
                    k_ota += 1
                time.sleep(0.5)
            m, lat = self._minute(len(minutes), procs, pids, events)
            minutes.append(m)
            for o in OUTPUTS:
                latencies[o].append(lat[o])
            rospy.loginfo(f"soak minute {m.minute}: " + ", ".join(f"{o} P99 {m.p99_ms[o]:.0f} ms" for o in OUTPUTS))
        checks = soak.verdict(minutes, latencies)
        header = (f"soak: full.launch, {len(minutes)} minutes, clouds at 10 Hz; every {self.swap_period_s:.0f} s a "
                  f"{self.swap_task} swap to {os.path.basename(self.swap_path)}, rolled back "
                  f"{ROLLBACK_AFTER_S:.0f} s later")
        text = soak.report(minutes, checks, header)
        os.makedirs(os.path.dirname(os.path.abspath(self.out)), exist_ok=True)
        with open(self.out, "w") as fh:
            fh.write(text)
        with open(os.path.splitext(self.out)[0] + ".json", "w") as fh:
            json.dump({"minutes": [m.__dict__ for m in minutes],
                       "checks": [c.__dict__ for c in checks]}, fh, indent=1, default=float)
        if minutes:
            soak.plot(minutes, os.path.splitext(self.out)[0] + ".png", header)
        print(text, flush=True)
        rospy.signal_shutdown("soak done")


def main() -> None:
    rospy.init_node("soak_recorder")
    SoakRecorder().run()
