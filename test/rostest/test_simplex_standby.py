#!/usr/bin/env python3
"""The active simplex dies or hangs; the standby answers every cloud: see simplex_standby.test."""

import collections
import os
import signal
import sys
import threading
import time
import unittest
import xmlrpc.client

import rosgraph
import rosnode
import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray

from airside_perception.msg import Detection3DArray, SimplexStatus

MAX_GAP_S = 0.3


def pid_of(node):
    api = rosnode.get_api_uri(rosgraph.Master("/test_simplex_standby"), node, skip_cache=True)
    code, _, pid = xmlrpc.client.ServerProxy(api).getPid("/test_simplex_standby")
    if code != 1:
        raise RuntimeError(f"{node} did not give its pid")
    return pid


class SimplexStandby(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_simplex_standby")
        cls.lock = threading.Lock()
        cls.obstacles = []  # (receive time, stamp ns)
        cls.status = []  # (receive time, instance, takeovers)
        cls.roles = {}
        rospy.Subscriber("/perception/obstacles", Detection3DArray, cls._on_obstacles, queue_size=50)
        rospy.Subscriber("/simplex/status", SimplexStatus, cls._on_status, queue_size=50)
        rospy.Subscriber("/diagnostics", DiagnosticArray, cls._on_diag, queue_size=50)
        end = time.monotonic() + 120  # the graph is up when obstacles come at the input rate
        while time.monotonic() < end and not (cls._active_now() and cls._rate(3.0) > 8.0):
            time.sleep(0.2)

    @classmethod
    def _rate(cls, over_s):
        with cls.lock:
            return sum(1 for t, _ in cls.obstacles if t > time.monotonic() - over_s) / over_s

    @classmethod
    def _on_obstacles(cls, msg):
        with cls.lock:
            cls.obstacles.append((time.monotonic(), msg.header.stamp.to_nsec()))

    @classmethod
    def _on_status(cls, msg):
        with cls.lock:
            cls.status.append((time.monotonic(), msg.instance, msg.takeovers))

    @classmethod
    def _on_diag(cls, msg):
        with cls.lock:
            for s in msg.status:
                if s.name.endswith(": role"):
                    cls.roles[s.name.split(":")[0]] = {kv.key: kv.value for kv in s.values}.get("role")

    @classmethod
    def _active_now(cls):
        with cls.lock:
            recent = [i for t, i, _ in cls.status if t > time.monotonic() - 1.0 and i]
        return recent[-1] if recent else None

    def _window(self, t0, t1):
        with self.lock:
            return [(t, s) for t, s in self.obstacles if t0 <= t <= t1]

    def _check(self, t0, t1, what):
        got = self._window(t0, t1)
        times = [t for t, _ in got]
        gap = max(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else float("inf")
        dup = [s for s, n in collections.Counter(s for _, s in got).items() if n > 1]
        rate = len(got) / (t1 - t0)
        print(f"{what}: {len(got)} obstacles in {t1 - t0:.1f} s, largest gap {gap * 1e3:.0f} ms, "
              f"{len(dup)} duplicate stamps", flush=True)
        self.assertLessEqual(gap, MAX_GAP_S, f"{what}: largest obstacles gap {gap * 1e3:.0f} ms")
        self.assertEqual(dup, [], f"{what}: stamps published twice")
        stamps = [st for _, st in got]
        backwards = sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)
        self.assertEqual(backwards, 0, f"{what}: {backwards} stamps older than the one before")
        self.assertGreater(rate, 8.0, f"{what}: obstacles at {rate:.1f} Hz")

    def test_1_killing_the_active_simplex_keeps_obstacles_at_the_input_rate(self):
        first = self._active_now()
        with self.lock:
            seen = f"{len(self.obstacles)} obstacles, statuses from {sorted({i for _, i, _ in self.status})}"
        self.assertIsNotNone(first, f"no simplex status in the last second ({seen})")
        time.sleep(3.0)
        t0 = time.monotonic()
        os.kill(pid_of("/" + first), signal.SIGKILL)
        time.sleep(6.0)
        self._check(t0 - 1.0, time.monotonic(), f"SIGKILL of {first}")
        second = self._active_now()
        self.assertIsNotNone(second)
        self.assertNotEqual(second, first, "the standby published after the kill")
        with self.lock:
            takeovers = max(n for _, i, n in self.status if i == second)
        self.assertGreaterEqual(takeovers, 1)
        end = time.monotonic() + 30  # the killed one respawns as the standby
        while time.monotonic() < end and self.roles.get(first) != "standby":
            time.sleep(0.2)
        self.assertEqual(self.roles.get(first), "standby", f"{first} came back as {self.roles.get(first)}")

    def test_2_a_hung_active_simplex_is_replaced_and_stands_by_when_it_resumes(self):
        end = time.monotonic() + 30
        while time.monotonic() < end and not (self._active_now() and self._rate(3.0) > 8.0):
            time.sleep(0.2)
        active = self._active_now()
        self.assertIsNotNone(active, "no active simplex")
        pid = pid_of("/" + active)
        t0 = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        time.sleep(2.0)
        os.kill(pid, signal.SIGCONT)
        time.sleep(4.0)
        self._check(t0 - 1.0, time.monotonic(), f"SIGSTOP of {active} for 2 s")
        now = self._active_now()
        self.assertNotEqual(now, active, "the resumed process took the output back")
        end = time.monotonic() + 5
        while time.monotonic() < end and self.roles.get(active) != "standby":
            time.sleep(0.2)
        self.assertEqual(self.roles.get(active), "standby")


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "standby_takeover", SimplexStandby, sys.argv)
