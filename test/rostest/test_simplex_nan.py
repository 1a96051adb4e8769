#!/usr/bin/env python3
"""An engine that emits NaN never drives: the simplex stays on the baseline and says why."""

import sys
import threading
import time
import unittest

import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from airside_perception.msg import Detection3DArray, SimplexStatus


class SimplexNanEngine(unittest.TestCase):
    def test_nan_engine_is_never_trusted(self):
        rospy.init_node("test_simplex_nan", anonymous=True)
        lock = threading.Lock()
        status, obstacles, diag = [], [], {}

        def on_status(m):
            with lock:
                status.append(m)

        def on_obstacles(m):
            with lock:
                obstacles.append((time.time(), m.source))

        def on_diag(m):
            for s in m.status:
                diag[s.name] = s

        rospy.Subscriber("/simplex/status", SimplexStatus, on_status)
        rospy.Subscriber("/perception/obstacles", Detection3DArray, on_obstacles)
        rospy.Subscriber("/diagnostics", DiagnosticArray, on_diag)
        deadline = time.time() + 60
        while "inference_host: detection" not in diag and time.time() < deadline:
            time.sleep(0.1)  # the host is up and has reported on its engines
        time.sleep(1.0)
        with lock:
            del status[:], obstacles[:]
        while len(obstacles) < 40 and time.time() < deadline:
            time.sleep(0.1)
        with lock:
            decided = [m for m in status if m.reason != "no_input"]
            sources = {s for _, s in obstacles}
            times = [t for t, _ in obstacles]
        self.assertGreaterEqual(len(obstacles), 40)
        self.assertTrue(all(m.active == "baseline" for m in decided))
        self.assertIn("non_finite_output", {m.reason for m in decided})
        self.assertEqual(sources, {"baseline"})
        self.assertLess(max(b - a for a, b in zip(times, times[1:])), 0.2)
        det = diag.get("inference_host: detection")
        self.assertIsNotNone(det)
        self.assertEqual(det.level, DiagnosticStatus.ERROR)
        self.assertIn("non-finite", det.message)


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "simplex_nan", SimplexNanEngine, sys.argv)
