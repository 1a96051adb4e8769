#!/usr/bin/env python3
"""A sensor-frame feed through full.launch: outputs in base_link at 10 Hz and in the right place;
out_of_distribution within a few cycles of the input turning into street scenes, back to the
advanced path when the apron returns; a cloud in a frame without transform is dropped and
counted, and the graph keeps serving."""

import sys
import threading
import time
import unittest

import numpy as np
import rospy
import rostest
import tf2_ros
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2

from airside_perception.frames import pose_from_xyz_rpy
from airside_perception.msg import Detection3DArray, SemanticPointCloud, SimplexStatus
from airside_perception.ros import convert
from airside_perception.ros.bag_writer import SensorFrame
from airside_perception.sim.offsite import generate_street_scene
from airside_perception.sim.scanner import make_rig, scan

MOUNT = (0.3, 0.0, 1.73, 0.0, 0.0, 1.5707963)  # the Makefile's VELODYNE_POSE
INPUT = "/airside_av/lidar/aggregated"
OUTPUTS = (("/perception/segmentation", SemanticPointCloud), ("/perception/detections", Detection3DArray),
           ("/perception/occupancy", OccupancyGrid), ("/perception/obstacles", Detection3DArray),
           ("/perception/safety_grid", OccupancyGrid), ("/simplex/status", SimplexStatus))


def street_clouds(n):
    sensor = SensorFrame("velodyne", pose_from_xyz_rpy(*MOUNT), 1.0)
    return [sensor.cloud(scan(generate_street_scene(900 + k), make_rig("compact"), np.random.default_rng(k)).points)
            for k in range(n)]


class Feed:
    """Relays the replayed bag to the input topic; can put street scenes or another frame instead."""

    def __init__(self):
        self.mode = "bag"
        self.street = street_clouds(6)
        self.k = 0
        self.sent = {}  # stamp ns -> mode
        self.pub = rospy.Publisher(INPUT, PointCloud2, queue_size=2)
        self.sub = rospy.Subscriber("/test/velodyne_cloud", PointCloud2, self._on, queue_size=2, buff_size=1 << 25)

    def _on(self, msg):
        if self.mode == "street":
            msg = convert.xyzi_msg(self.street[self.k % len(self.street)], msg.header)
            self.k += 1
        elif self.mode == "no_tf":
            msg.header.frame_id = "lidar_without_tf"
        self.sent[msg.header.stamp.to_nsec()] = self.mode
        self.pub.publish(msg)


class RealFrames(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_real_frames", anonymous=True)
        cls.broadcaster = tf2_ros.StaticTransformBroadcaster()
        t = TransformStamped()
        t.header.stamp = rospy.Time.now()
        t.header.frame_id, t.child_frame_id = "base_link", "velodyne"
        t.transform.translation.x, t.transform.translation.z = MOUNT[0], MOUNT[2]
        t.transform.rotation.z, t.transform.rotation.w = np.sin(MOUNT[5] / 2), np.cos(MOUNT[5] / 2)
        cls.broadcaster.sendTransform(t)
        cls.lock = threading.Lock()
        cls.got = {topic: [] for topic, _ in OUTPUTS}
        cls.truth = {}
        cls.diag = {}
        for topic, kind in OUTPUTS:
            rospy.Subscriber(topic, kind, cls._keep, topic, queue_size=20)
        rospy.Subscriber("/airside_av/ground_truth/objects", Detection3DArray, cls._on_truth, queue_size=20)
        rospy.Subscriber("/diagnostics", DiagnosticArray, cls._on_diag, queue_size=20)
        cls.feed = Feed()

    @classmethod
    def _keep(cls, msg, topic):
        with cls.lock:
            cls.got[topic].append((time.monotonic(), msg))

    @classmethod
    def _on_truth(cls, msg):
        with cls.lock:
            cls.truth[msg.header.stamp.to_nsec()] = msg

    @classmethod
    def _on_diag(cls, msg):
        with cls.lock:
            for s in msg.status:
                cls.diag[s.name] = s

    def _since(self, topic, t0):
        with self.lock:
            return [m for t, m in self.got[topic] if t >= t0]

    def _wait_advanced(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self._since("/simplex/status", time.monotonic() - 0.5)
            if status and all(s.active == "advanced" and s.reason == "ok" for s in status):
                return True
            time.sleep(0.1)
        return False

    def test_1_sensor_frame_feed_gives_base_link_outputs_at_10_hz(self):
        self.assertTrue(self._wait_advanced(90.0), "the simplex never settled on the advanced path")
        t0 = time.monotonic()
        time.sleep(5.0)
        for topic, _ in OUTPUTS:
            msgs = self._since(topic, t0)
            self.assertGreaterEqual(len(msgs), 40, f"{topic}: {len(msgs)} messages in 5 s")
            self.assertTrue(all(m.header.frame_id == "base_link" for m in msgs), topic)
        seg = self._since("/perception/segmentation", t0)
        self.assertTrue(all(m.header.stamp.to_nsec() in self.feed.sent for m in seg), "outputs keep the input stamp")
        status = self._since("/simplex/status", t0)
        reasons = [s.reason for s in status]
        self.assertNotIn("out_of_distribution", reasons, "a false alarm on the apron")
        self.assertGreaterEqual(sum(s.active == "advanced" for s in status), 0.9 * len(status), set(reasons))

    def test_2_detections_sit_where_the_objects_are_in_base_link(self):
        matched = total = 0
        for msg in self._since("/perception/detections", time.monotonic() - 4.0):
            truth = self.truth.get(msg.header.stamp.to_nsec())
            if truth is None:
                continue
            # ground-truth objects (base_link) carry their number of returns in `score`
            gt = [(d.center.x, d.center.y) for d in truth.detections if d.label_name == "person" and d.score >= 10
                  and np.hypot(d.center.x, d.center.y) < 25]
            found = [(d.center.x, d.center.y) for d in msg.detections if d.label_name == "person"]
            for x, y in gt:
                total += 1
                matched += any(np.hypot(x - fx, y - fy) < 1.5 for fx, fy in found)
        self.assertGreater(total, 10)
        self.assertGreater(matched / total, 0.8, f"{matched} of {total} near persons found in base_link")

    def test_3_streets_are_out_of_distribution_and_the_apron_comes_back(self):
        self.assertTrue(self._wait_advanced(10.0))
        self.feed.mode = "street"
        t0 = time.monotonic()
        time.sleep(4.0)
        self.feed.mode = "bag"
        t1 = time.monotonic()
        status = self._since("/simplex/status", t0)
        street = [s for s in status if self.feed.sent.get(s.header.stamp.to_nsec()) == "street"]
        reasons = [s.reason for s in street]
        self.assertIn("out_of_distribution", reasons)
        first = reasons.index("out_of_distribution")
        # the neural path is trusted ("ok") on at most ood_cycles (3) street cycles, plus the one in
        # flight; cycles that fell back for another reason first (a deadline miss on a loaded
        # machine) are not counted: the vehicle was on the baseline then too
        trusted = reasons[:first].count("ok")
        self.assertLessEqual(trusted, 4, f"{trusted} street cycles trusted before out_of_distribution: {reasons[:12]}")
        self.assertTrue(all(s.active == "baseline" for s in street[first:]), reasons)
        obstacles = [m for m in self._since("/perception/obstacles", t0) if m.header.stamp.to_nsec()
                     in self.feed.sent and self.feed.sent[m.header.stamp.to_nsec()] == "street"]
        self.assertGreater(len(obstacles), 25, "obstacles kept coming on every street cycle")
        self.assertTrue(any(m.source == "baseline" for m in obstacles))
        self.assertTrue(self._wait_advanced(5.0), "back on the apron, the advanced path did not return")
        self.assertLess(time.monotonic() - t1, 5.0)

    def test_4_cloud_without_transform_is_dropped_counted_and_serving_goes_on(self):
        self.feed.mode = "no_tf"
        time.sleep(1.5)
        self.feed.mode = "bag"
        t0 = time.monotonic()
        time.sleep(3.0)
        self.assertGreaterEqual(len(self._since("/perception/detections", t0)), 20)
        with self.lock:
            diag = self.diag.get("inference_host: input")
        self.assertIsNotNone(diag)
        values = {kv.key: kv.value for kv in diag.values}
        self.assertGreater(int(values["no_transform (total)"]), 5)
        self.assertIn("lidar_without_tf", values.get("last no_transform", ""))
        self.assertIn("static_transform_publisher", values.get("last no_transform", ""))


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "test_real_frames", RealFrames, sys.argv)
