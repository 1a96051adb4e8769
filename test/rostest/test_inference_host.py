#!/usr/bin/env python3
"""Outputs of the inference host on the sample bag: stamps, label counts, detections near truth."""

import sys
import threading
import time
import unittest

import numpy as np
import rospy
import rostest
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2

from airside_perception.msg import Detection3DArray, SemanticPointCloud

COLLECT_S = 6.0


class InferenceHostOutputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_inference_host", anonymous=True)
        cls.lock = threading.Lock()
        cls.clouds, cls.truth, cls.seg, cls.det, cls.occ = {}, {}, [], [], []

        def keep(store, key_fn):
            def cb(msg):
                with cls.lock:
                    if isinstance(store, dict):
                        store[key_fn(msg)] = msg
                    else:
                        store.append(msg)
            return cb

        stamp = lambda m: m.header.stamp.to_nsec()  # noqa: E731
        subs = [rospy.Subscriber("/airside_av/lidar/aggregated", PointCloud2, keep(cls.clouds, stamp),
                                 buff_size=1 << 25),
                rospy.Subscriber("/airside_av/ground_truth/objects", Detection3DArray, keep(cls.truth, stamp)),
                rospy.Subscriber("/perception/segmentation", SemanticPointCloud, keep(cls.seg, None)),
                rospy.Subscriber("/perception/detections", Detection3DArray, keep(cls.det, None)),
                rospy.Subscriber("/perception/occupancy", OccupancyGrid, keep(cls.occ, None))]
        deadline = time.time() + 60.0
        while not cls.seg and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(COLLECT_S)
        for s in subs:
            s.unregister()

    def test_every_output_belongs_to_an_input_cloud(self):
        self.assertGreater(len(self.seg), 30)
        for topic in (self.seg, self.det, self.occ):
            matched = [m for m in topic if m.header.stamp.to_nsec() in self.clouds]
            self.assertGreater(len(matched), 0.9 * len(topic))
            for m in matched:
                self.assertEqual(m.header.frame_id, self.clouds[m.header.stamp.to_nsec()].header.frame_id)

    def test_one_label_per_input_point(self):
        checked = 0
        for m in self.seg:
            cloud = self.clouds.get(m.header.stamp.to_nsec())
            if cloud is None:
                continue
            self.assertEqual(len(m.labels), cloud.width * cloud.height)
            self.assertEqual(len(m.scores), cloud.width * cloud.height)
            labels = np.frombuffer(m.labels, np.uint8)
            self.assertGreater((labels == 0).mean(), 0.5, "most of an apron is ground")
            checked += 1
        self.assertGreater(checked, 20)

    def _recall(self, name, max_range_m, max_dist_m):
        found = total = 0
        for m in self.det:
            truth = self.truth.get(m.header.stamp.to_nsec())
            if truth is None:
                continue
            dets = np.array([[d.center.x, d.center.y] for d in m.detections if d.label_name == name]).reshape(-1, 2)
            for obj in truth.detections:
                # ground-truth objects carry their number of returns in `score`
                if obj.label_name != name or obj.score < 10 or np.hypot(obj.center.x, obj.center.y) > max_range_m:
                    continue
                total += 1
                if len(dets) and np.hypot(*(dets - [obj.center.x, obj.center.y]).T).min() <= max_dist_m:
                    found += 1
        return found, total

    def test_detections_find_the_persons_of_the_bag(self):
        found, total = self._recall("person", 25.0, 1.5)
        self.assertGreater(total, 20)
        self.assertGreaterEqual(found / total, 0.8, f"{found}/{total} persons found")

    def test_detections_find_the_aircraft_of_the_bag(self):
        found, total = self._recall("aircraft", 45.0, 6.0)
        self.assertGreater(total, 5)
        self.assertGreaterEqual(found / total, 0.8, f"{found}/{total} aircraft found")

    def test_occupancy_grid_geometry(self):
        m = self.occ[-1]
        self.assertEqual((m.info.width, m.info.height), (200, 200))
        self.assertAlmostEqual(m.info.resolution, 0.4, places=5)
        self.assertAlmostEqual(m.info.origin.position.x, -40.0, places=3)
        cells = np.asarray(m.data)
        self.assertTrue(set(np.unique(cells)) <= {0, 100})
        self.assertGreater((cells == 100).sum(), 50)


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "inference_host_outputs", InferenceHostOutputs, sys.argv)
