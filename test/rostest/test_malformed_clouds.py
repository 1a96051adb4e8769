#!/usr/bin/env python3
"""Clouds from the real world: each is either processed or rejected with a diagnostic, and the
inference host keeps serving afterwards."""

import sys
import threading
import time
import unittest

import numpy as np
import rospy
import rostest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from airside_perception.msg import SemanticPointCloud
from airside_perception.sim.world import make_scan

PF = {"f4": PointField.FLOAT32, "f8": PointField.FLOAT64, "u2": PointField.UINT16, "u1": PointField.UINT8}


def cloud(points, spec, bigendian=False, height=1, extra=None):
    """A PointCloud2 of ``points`` (N, 4) packed as ``spec`` [(name, numpy type code)]."""
    order = ">" if bigendian else "<"
    dt = np.dtype([(n, order + t) for n, t in spec])
    rec = np.zeros(len(points), dt)
    for i, n in enumerate(("x", "y", "z", "intensity")):
        if n in dt.names:
            rec[n] = points[:, i]
    for n, v in (extra or {}).items():
        rec[n] = v
    fields = [PointField(n, dt.fields[n][1], PF[t], 1) for n, t in spec]
    width = len(points) // height
    return PointCloud2(header=Header(frame_id="base_link"), height=height, width=width, fields=fields,
                       is_bigendian=bigendian, point_step=dt.itemsize, row_step=dt.itemsize * width,
                       data=rec.tobytes(), is_dense=False)


XYZI = [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")]


class MalformedClouds(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_malformed_clouds", anonymous=True)
        cls.points = make_scan(110016, "compact").points
        cls.outputs = {}
        cls.input_status = None
        cls.lock = threading.Lock()
        rospy.Subscriber("/perception/segmentation", SemanticPointCloud, cls._on_seg)
        rospy.Subscriber("/diagnostics", DiagnosticArray, cls._on_diag)
        cls.pub = rospy.Publisher("/airside_av/lidar/aggregated", PointCloud2, queue_size=1)
        deadline = time.time() + 60
        while cls.pub.get_num_connections() == 0 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)

    @classmethod
    def _on_seg(cls, msg):
        with cls.lock:
            cls.outputs[msg.header.stamp.to_nsec()] = msg

    @classmethod
    def _on_diag(cls, msg):
        for s in msg.status:
            if s.name == "inference_host: input":
                with cls.lock:
                    cls.input_status = {kv.key: kv.value for kv in s.values}

    def send(self, msg, timeout_s=8.0):
        msg.header.stamp = rospy.Time.now()
        key = msg.header.stamp.to_nsec()
        self.pub.publish(msg)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            with self.lock:
                if key in self.outputs:
                    return self.outputs[key]
            time.sleep(0.05)
        return None

    def rejected(self):
        with self.lock:
            return int(self.input_status["rejected (total)"]) if self.input_status else 0

    def assert_processed(self, msg, n_expected):
        out = self.send(msg)
        self.assertIsNotNone(out, "no segmentation for this cloud")
        self.assertEqual(len(out.labels), n_expected)
        return np.frombuffer(out.labels, np.uint8)

    def assert_rejected_and_alive(self, msg):
        before = self.rejected()
        self.assertIsNone(self.send(msg, timeout_s=2.0))
        deadline = time.time() + 5.0
        while self.rejected() <= before and time.time() < deadline:
            time.sleep(0.1)
        self.assertGreater(self.rejected(), before, "the rejection is not on /diagnostics")
        self.assert_processed(cloud(self.points, XYZI), len(self.points))

    def test_plain(self):
        labels = self.assert_processed(cloud(self.points, XYZI), len(self.points))
        self.assertGreater((labels == 0).mean(), 0.5)

    def test_extra_fields_in_another_order_and_float64(self):
        spec = [("ring", "u2"), ("intensity", "f4"), ("time", "f8"), ("z", "f8"), ("x", "f8"),
                ("laser_id", "u1"), ("y", "f8")]
        labels = self.assert_processed(cloud(self.points, spec, extra={"ring": 5, "laser_id": 2}), len(self.points))
        self.assertGreater((labels == 0).mean(), 0.5)

    def test_big_endian(self):
        labels = self.assert_processed(cloud(self.points, XYZI, bigendian=True), len(self.points))
        self.assertGreater((labels == 0).mean(), 0.5)

    def test_organized(self):
        n = (len(self.points) // 64) * 64
        self.assert_processed(cloud(self.points[:n], XYZI, height=64), n)

    def test_nan_points_are_labelled_255(self):
        pts = self.points.copy()
        pts[::10, :3] = np.nan
        labels = self.assert_processed(cloud(pts, XYZI), len(pts))
        self.assertTrue((labels[::10] == 255).all())
        in_range = (np.isfinite(pts[:, 0]) & (np.abs(pts[:, 0]) < 51.2) & (np.abs(pts[:, 1]) < 51.2)
                    & (pts[:, 2] >= -3.0) & (pts[:, 2] < 13.0))
        self.assertTrue((labels[in_range] != 255).all(), "finite points in range must be labelled")

    def test_empty_cloud(self):
        self.assert_processed(cloud(np.zeros((0, 4), np.float32), XYZI), 0)

    def test_300k_points(self):
        big = np.concatenate([self.points] * (300_000 // len(self.points) + 1))[:300_000]
        self.assert_processed(cloud(big, XYZI), 300_000)

    def test_missing_z_is_rejected(self):
        self.assert_rejected_and_alive(cloud(self.points, [("x", "f4"), ("y", "f4"), ("intensity", "f4")]))

    def test_truncated_data_is_rejected(self):
        msg = cloud(self.points, XYZI)
        msg.data = msg.data[: len(msg.data) // 2]
        self.assert_rejected_and_alive(msg)

    def test_too_many_points_is_rejected(self):
        huge = np.zeros((450_000, 4), np.float32)
        self.assert_rejected_and_alive(cloud(huge, XYZI))


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "malformed_clouds", MalformedClouds, sys.argv)
