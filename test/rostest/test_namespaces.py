#!/usr/bin/env python3
"""Two graphs in namespaces `left` and `right`: each node's topics and services live under its own
namespace, a cloud sent to the left graph is answered by the left graph only."""

import sys
import threading
import time
import unittest

import rosgraph
import rospy
import rostest
from sensor_msgs.msg import PointCloud2

from airside_perception.msg import Detection3DArray
from airside_perception.ros import convert
from airside_perception.sim.world import make_scan

CONTRACT = ("/perception/segmentation", "/perception/detections", "/perception/occupancy", "/perception/obstacles",
            "/perception/safety_grid", "/simplex/status", "/baseline/obstacles", "/model_manager/status",
            "/airside_av/lidar/aggregated")
SERVICES = ("/model_manager/swap_engine", "/model_manager/rollback_engine", "/inference_host/load_engine")


class Namespaces(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_namespaces", anonymous=True)
        for side in ("left", "right"):
            rospy.wait_for_service(f"/{side}/model_manager/swap_engine", timeout=120.0)
            rospy.wait_for_service(f"/{side}/inference_host/load_engine", timeout=120.0)
        time.sleep(3.0)  # the simplexes subscribe

    def test_every_name_lives_in_its_graphs_namespace(self):
        master = rosgraph.Master("/test_namespaces")
        publishers, subscribers, services = master.getSystemState()
        for kind, table in (("publisher", publishers), ("subscriber", subscribers), ("service", services)):
            for name, nodes in table:
                for node in nodes:
                    side = node.split("/")[1] if node.count("/") >= 2 else ""
                    if side in ("left", "right") and name not in ("/diagnostics", "/rosout", "/tf", "/tf_static",
                                                                  "/clock"):
                        self.assertTrue(name.startswith(f"/{side}/"), f"{kind} {name} of {node}")
        names = {n for n, _ in publishers} | {n for n, _ in subscribers} | {n for n, _ in services}
        for name in CONTRACT + SERVICES:
            self.assertNotIn(name, names, f"{name} is shared by the two graphs")
            for side in ("left", "right"):
                self.assertIn(f"/{side}{name}", names)

    def test_a_cloud_for_the_left_graph_is_answered_by_the_left_graph_only(self):
        got = {"left": [], "right": []}
        lock = threading.Lock()

        def keep(msg, side):
            with lock:
                got[side].append(msg)
        subs = [rospy.Subscriber(f"/{side}/perception/obstacles", Detection3DArray, keep, side, queue_size=20)
                for side in ("left", "right")]
        pub = rospy.Publisher("/left/airside_av/lidar/aggregated", PointCloud2, queue_size=2)
        time.sleep(1.0)
        points = make_scan(110016, "compact").points
        for _ in range(20):
            pub.publish(convert.xyzi_msg(points, convert.header_of(rospy.Time.now(), "base_link")))
            time.sleep(0.1)
        time.sleep(1.0)
        for s in subs:
            s.unregister()
        self.assertGreater(len(got["left"]), 10)
        self.assertEqual(got["right"], [], "the right graph answered a cloud of the left one")


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "namespaces", Namespaces, sys.argv)
