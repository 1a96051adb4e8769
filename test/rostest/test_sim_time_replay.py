#!/usr/bin/env python3
"""A bag replayed under sim time, in a loop: at every loop the ROS clock jumps back. Every node
keeps publishing its outputs and its /diagnostics through the jumps, and says it saw them."""

import sys
import threading
import time
import unittest

import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray

from airside_perception.msg import Detection3DArray, SimplexStatus

NODES = ("inference_host: input", "baseline: input", "simplex: decision", "model_manager: engines")
LOOP_S = 2.0  # the sample bag: 20 clouds at 10 Hz


class SimTimeReplay(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_sim_time_replay", anonymous=True)
        cls.lock = threading.Lock()
        cls.got = {"obstacles": [], "detections": [], "status": []}
        cls.diag = {}  # name -> (wall time, values)
        rospy.Subscriber("/perception/obstacles", Detection3DArray, cls._keep, "obstacles", queue_size=20)
        rospy.Subscriber("/perception/detections", Detection3DArray, cls._keep, "detections", queue_size=20)
        rospy.Subscriber("/simplex/status", SimplexStatus, cls._keep, "status", queue_size=20)
        rospy.Subscriber("/diagnostics", DiagnosticArray, cls._on_diag, queue_size=50)
        deadline = time.time() + 90.0  # wall clock: the ROS clock is the bag's
        while time.time() < deadline and not cls._since("obstacles", time.time() - 1.0):
            time.sleep(0.2)
        cls.start = time.time()
        time.sleep(5 * LOOP_S + 2.0)  # five jumps back

    @classmethod
    def _keep(cls, msg, kind):
        with cls.lock:
            cls.got[kind].append((time.time(), msg))

    @classmethod
    def _on_diag(cls, msg):
        with cls.lock:
            for s in msg.status:
                cls.diag[s.name] = (time.time(), {kv.key: kv.value for kv in s.values}, s.level)

    @classmethod
    def _since(cls, kind, t0):
        with cls.lock:
            return [m for t, m in cls.got[kind] if t >= t0]

    def test_outputs_go_on_through_every_replay(self):
        self.assertGreater(len(self._since("obstacles", self.start)), 0, "no output before the jumps")
        end = time.time()
        for kind in ("obstacles", "detections"):
            last = self._since(kind, end - 2 * LOOP_S)
            self.assertGreaterEqual(len(last), 10, f"{kind}: {len(last)} messages in the last two replays")
        stamps = [m.header.stamp.to_sec() for m in self._since("obstacles", self.start)]
        jumps = sum(b < a - 1.0 for a, b in zip(stamps, stamps[1:]))
        self.assertGreaterEqual(jumps, 3, "the replay did not loop: the test did not test the jumps")

    def test_diagnostics_go_on_and_count_the_jumps(self):
        now = time.time()
        with self.lock:
            diag = dict(self.diag)
        for name in NODES:
            self.assertIn(name, diag, f"{name} never published")
            self.assertGreater(diag[name][0], now - 3.0, f"{name}: no /diagnostics for {now - diag[name][0]:.1f} s")
        self.assertGreater(int(diag["inference_host: input"][1]["clock jumps back"]), 0)
        self.assertGreater(int(diag["simplex: decision"][1]["clock jumps back"]), 0)


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "sim_time_replay", SimTimeReplay, sys.argv)
