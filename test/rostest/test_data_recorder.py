#!/usr/bin/env python3
"""The data recorder as the graph feeds it: see data_recorder.test."""

import json
import os
import signal
import subprocess
import time
import unittest
import xmlrpc.client

import numpy as np
import rosbag
import rosgraph
import rosnode
import rospy
import rostest
from std_msgs.msg import Header

from airside_perception.msg import InferenceStatus, SimplexStatus
from airside_perception.ros.convert import xyzi_msg
from airside_perception.ros.messages import detections_msg
from airside_perception.sim.world import make_scan
from airside_perception.srv import MarkRecording

CLOUD = "/airside_av/lidar/aggregated"
NAMES = ["person"]


def pid_of(node):
    api = rosnode.get_api_uri(rosgraph.Master("/test_data_recorder"), node, skip_cache=True)
    code, _, pid = xmlrpc.client.ServerProxy(api).getPid("/test_data_recorder")
    if code != 1:
        raise RuntimeError(f"{node} did not give its pid")
    return pid


class Recorder(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_data_recorder")
        cls.dir = rospy.get_param("~dir")
        cls.pub_cloud = rospy.Publisher(CLOUD, type(xyzi_msg(np.zeros((1, 4), np.float32), Header())),
                                        queue_size=2)
        cls.pub_status = rospy.Publisher("/simplex/status", SimplexStatus, queue_size=10)
        cls.pub_host = rospy.Publisher("/inference_host/status", InferenceStatus, queue_size=10)
        cls.pub_det = rospy.Publisher("/perception/detections", type(detections_msg(
            Header(), "", "", np.zeros((0, 7)), [], [], NAMES, 0.0)), queue_size=10)
        cls.pub_base = rospy.Publisher("/baseline/obstacles", type(detections_msg(
            Header(), "", "", np.zeros((0, 7)), [], [], NAMES, 0.0)), queue_size=10)
        cls.points = make_scan(31, "default").points  # about 100k points: real-size clouds
        rospy.wait_for_service("/data_recorder/mark", timeout=60)
        cls.mark = rospy.ServiceProxy("/data_recorder/mark", MarkRecording)
        cls.t0 = rospy.Time.now().to_sec()
        cls.k = 0
        time.sleep(1.0)

    @classmethod
    def cycle(cls, reason="ok", active="advanced", disagree=False, period_s=0.1):
        stamp = rospy.Time.from_sec(cls.t0 + 0.1 * cls.k)
        cls.k += 1
        header = Header(stamp=stamp, frame_id="base_link")
        cls.pub_cloud.publish(xyzi_msg(cls.points, header))
        time.sleep(0.02)
        cls.pub_host.publish(InferenceStatus(header=header, tasks=["segmentation", "detection"],
                                             versions=["2.2.0", "2.1.0"], confidences=[0.9, 0.9], errors=["", ""],
                                             trust=[0.3, 0.8]))
        person = np.array([[8.0, 1.0, 0.9, 0.6, 0.6, 1.8, 0.0]])
        cls.pub_det.publish(detections_msg(header, "advanced", "2.1.0", np.zeros((0, 7)) if disagree else person,
                                           [0] * (0 if disagree else 1), [0.9] * (0 if disagree else 1), NAMES, 40.0))
        cls.pub_base.publish(detections_msg(header, "baseline", "", person, [0], [1.0], NAMES, 30.0))
        cls.pub_status.publish(SimplexStatus(header=header, active=active, reason=reason))
        time.sleep(period_s)
        return stamp.to_sec()

    def entries(self):
        path = os.path.join(self.dir, "index.jsonl")
        if not os.path.isfile(path):
            return []
        return [json.loads(line) for line in open(path) if line.strip()]

    def wait_for(self, n, timeout_s=20.0):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end and len(self.entries()) < n:
            self.cycle()
        return self.entries()

    def test_1_triggers_with_context_and_bags_rosbag_reads(self):
        for _ in range(10):
            self.cycle()
        self.assertEqual(self.entries(), [], "cycles on the advanced path record nothing")
        trig = self.cycle("low_confidence", "baseline")
        for _ in range(5):
            self.cycle()
        near = self.cycle(disagree=True)
        entries = self.wait_for(2)
        self.assertGreaterEqual(len(entries), 2, entries)
        first = entries[0]
        self.assertEqual(first["triggers"], ["low_confidence"])
        self.assertAlmostEqual(first["stamp"], trig, places=3)
        self.assertEqual(first["versions"], {"segmentation": "2.2.0", "detection": "2.1.0"})
        self.assertEqual(first["trust"], {"segmentation": 0.3, "detection": 0.8})
        self.assertEqual(first["clouds"], 5, "2 before, the triggered cloud, 2 after")
        self.assertIn("near_field_disagreement", entries[1]["triggers"])
        self.assertAlmostEqual(entries[1]["stamp"], near, places=3)
        with rosbag.Bag(os.path.join(self.dir, first["file"])) as bag:
            topics = bag.get_type_and_topic_info().topics
            self.assertEqual(topics[CLOUD].message_count, 5)
            self.assertEqual(topics[CLOUD].msg_type, "sensor_msgs/PointCloud2")
            for topic in ("/simplex/status", "/inference_host/status", "/perception/detections", "/baseline/obstacles"):
                self.assertIn(topic, topics)
            stamps = [m.header.stamp.to_sec() for _, m, _ in bag.read_messages(topics=[CLOUD])]
            self.assertAlmostEqual(stamps[2], trig, places=3)
        info = subprocess.run(["rosbag", "info", os.path.join(self.dir, first["file"])], capture_output=True,
                              text=True, timeout=60)
        self.assertEqual(info.returncode, 0, info.stderr)

    def test_2_mark_and_its_bad_requests(self):
        for bad in (float("nan"), -1.0, 0.0, 1e6):
            r = self.mark("x", bad)
            self.assertFalse(r.success, bad)
            self.assertIn("duration_s", r.message)
        self.assertFalse(self.mark("x" * 600, 1.0).success)
        before = len(self.entries())
        r = self.mark("cart train left of stand 12", 0.5)
        self.assertTrue(r.success, r.message)
        entries = self.wait_for(before + 1)
        marked = [e for e in entries if e["triggers"] == ["mark"]]
        self.assertEqual(len(marked), 1, entries)
        self.assertEqual(marked[0]["note"], "cart train left of stand 12")
        self.assertGreaterEqual(marked[0]["clouds"], 5 + 2)  # 0.5 s at 10 Hz, and the context

    def test_3_quota_holds_under_a_stream_of_triggers(self):
        for _ in range(60):
            self.cycle("out_of_distribution", "baseline", period_s=0.05)
        for _ in range(20):
            self.cycle()
        time.sleep(3.0)
        used = sum(os.path.getsize(os.path.join(self.dir, f)) for f in os.listdir(self.dir))
        self.assertLessEqual(used, 60e6)
        entries = self.entries()
        self.assertGreater(len(entries), 0)
        for e in entries:
            self.assertTrue(os.path.isfile(os.path.join(self.dir, e["file"])), e["file"])

    def test_4_kill_9_loses_at_most_the_open_recording(self):
        for _ in range(3):
            pid = pid_of("/data_recorder")
            for _ in range(4):
                self.cycle("deadline_miss", "baseline", period_s=0.05)
            os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                try:
                    if pid_of("/data_recorder") != pid:
                        break
                except Exception:
                    pass
                time.sleep(0.3)
            rospy.wait_for_service("/data_recorder/mark", timeout=30)
        for _ in range(15):
            self.cycle()
        time.sleep(2.0)
        files = os.listdir(self.dir)
        self.assertEqual([f for f in files if f.endswith(".active")], [], "the restart removes unfinished files")
        for e in self.entries():
            path = os.path.join(self.dir, e["file"])
            self.assertTrue(os.path.isfile(path), e["file"])
            with rosbag.Bag(path) as bag:
                self.assertGreater(bag.get_message_count(), 0)


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "data_recorder", Recorder)
