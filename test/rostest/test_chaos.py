#!/usr/bin/env python3
"""SIGKILL each node in turn under load; the graph respawns them and keeps its outputs."""

import os
import signal
import sys
import threading
import time
import unittest
import xmlrpc.client

import rosgraph
import rosnode
import rospkg
import rospy
import rostest

from airside_perception.msg import Detection3DArray, ModelStatusArray
from airside_perception.srv import SwapEngine

ROOT = os.path.join(rospkg.RosPack().get_path("airside_perception"), "test", "data", "engines")
CYCLE_S = 0.1
REPORT = "/tmp/airside_perception_test_chaos/chaos.txt"


def pid_of(node):
    api = rosnode.get_api_uri(rosgraph.Master("/test_chaos"), node, skip_cache=True)
    code, _, pid = xmlrpc.client.ServerProxy(api).getPid("/test_chaos")
    if code != 1:
        raise RuntimeError(f"{node} did not give its pid")
    return pid


class Chaos(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_chaos")
        cls.lock = threading.Lock()
        cls.obstacles = []  # receive times
        cls.status = {}
        rospy.Subscriber("/perception/obstacles", Detection3DArray, cls._on_obstacles, queue_size=20)
        rospy.Subscriber("/model_manager/status", ModelStatusArray, cls._on_status)
        rospy.wait_for_service("/model_manager/swap_engine", timeout=90)
        os.makedirs(os.path.dirname(REPORT), exist_ok=True)
        cls.report = open(REPORT, "w")

    @classmethod
    def _on_obstacles(cls, _msg):
        with cls.lock:
            cls.obstacles.append(time.monotonic())

    @classmethod
    def _on_status(cls, msg):
        with cls.lock:
            cls.status = {m.task: m.active_version for m in msg.models}

    def _largest_gap(self, t0, t1):
        with self.lock:
            times = [t for t in self.obstacles if t0 <= t <= t1]
        if len(times) < 2:
            return float("inf")
        return max(b - a for a, b in zip(times, times[1:]))

    def _wait_for_node(self, node, old_pid, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                pid = pid_of(node)
                if pid != old_pid:
                    return pid
            except Exception:  # not registered again yet
                pass
            time.sleep(0.1)
        self.fail(f"{node} did not respawn within {timeout_s:.0f} s")

    def _wait_obstacles(self, timeout_s=60.0):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if self.obstacles and time.monotonic() - self.obstacles[-1] < 0.3:
                    return
            time.sleep(0.05)
        self.fail("no obstacles")

    def test_kill_each_node_in_turn(self):
        self._wait_obstacles(90.0)
        deadline = time.monotonic() + 90.0  # obstacles may come from the baseline before the host serves
        while time.monotonic() < deadline and "detection" not in self.status:
            time.sleep(0.1)
        swap = rospy.ServiceProxy("/model_manager/swap_engine", SwapEngine)
        out = swap("detection", os.path.join(ROOT, "detection", "1.1.0"))
        self.assertTrue(out.success, out.message)
        time.sleep(2.0)
        for node in ("/inference_host", "/baseline", "/model_manager"):
            pid = pid_of(node)
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            new_pid = self._wait_for_node(node, pid)
            respawn_s = time.monotonic() - t0
            time.sleep(4.0)  # past the respawn and its start-up
            gap = self._largest_gap(t0, time.monotonic())
            self.report.write(f"{node}: SIGKILL, respawned as pid {new_pid} after {respawn_s:.1f} s; largest "
                              f"/perception/obstacles gap {gap * 1e3:.0f} ms\n")
            self.assertLessEqual(gap, 2 * CYCLE_S + 0.08, f"{node} killed: obstacles silent for {gap * 1e3:.0f} ms")
        pid = pid_of("/simplex")
        os.kill(pid, signal.SIGKILL)
        self._wait_for_node("/simplex", pid)
        respawned = time.monotonic()
        self._wait_obstacles(10.0)
        back_s = time.monotonic() - respawned
        self.report.write(f"/simplex: SIGKILL, obstacles back {back_s:.2f} s after its respawn\n")
        self.assertLess(back_s, 2.0)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.status.get("detection") != "1.1.0":
            time.sleep(0.1)
        self.assertEqual(self.status.get("detection"), "1.1.0", "the swapped-in version survived every restart")
        self.report.write(f"active versions after all restarts: {self.status}\n")
        self.report.flush()


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "chaos", Chaos, sys.argv)
