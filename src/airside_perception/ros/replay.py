"""Cloud replay: plays a bag's clouds (and ground truth) restamped with the current time.

Acts like a LiDAR driver: each cloud leaves with ``header.stamp = now``, at ``rate_hz``, in a
loop. Ground-truth topics of simulator bags go out with the same stamp as their cloud.
Use ``rosbag play`` instead to keep the recorded stamps (with ``--clock`` and use_sim_time).

``~mount`` ("x y z roll pitch yaw", metres and radians) with ``~mount_parent`` publishes the
sensor's mount as a static transform from ``~mount_parent`` to the clouds' frame, the way a
vehicle's robot description does beside its LiDAR driver.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Dict, List

import rosbag
import rospy
import tf2_ros
from geometry_msgs.msg import TransformStamped

from airside_perception import memory
from airside_perception.errors import ConfigError
from airside_perception.frames import parse_sensor_pose
from airside_perception.ros.bag_writer import CLOUD_TOPIC

NODE = "cloud_replay"


class CloudReplayNode:
    def __init__(self):
        self.bag_path = rospy.get_param("~bag")
        self.rate_hz = float(rospy.get_param("~rate_hz", 10.0))
        self.loop = bool(rospy.get_param("~loop", True))
        self.with_truth = bool(rospy.get_param("~ground_truth", True))
        if self.rate_hz <= 0:
            rospy.logfatal(f"{NODE}: ~rate_hz {self.rate_hz} must be positive")
            raise SystemExit(2)
        self.frames = self._load()
        if not self.frames:
            rospy.logfatal(f"{NODE}: {self.bag_path} has no message on {CLOUD_TOPIC}")
            raise SystemExit(2)
        self.pubs = {}
        for topic, msg in self.frames[0]:
            self.pubs[topic] = rospy.Publisher(topic, type(msg), queue_size=2, latch=False)
        self.mount = self._publish_mount(rospy.get_param("~mount", ""), rospy.get_param("~mount_parent", "base_link"))
        rospy.loginfo(f"{NODE}: {len(self.frames)} frames from {self.bag_path} at {self.rate_hz} Hz"
                      f"{' in a loop' if self.loop else ''}")

    def _publish_mount(self, pose: str, parent: str):
        if not pose:
            return None
        try:
            matrix = parse_sensor_pose(pose)
        except ConfigError as exc:
            rospy.logfatal(f"{NODE}: ~mount: {exc}")
            raise SystemExit(2) from None
        t = TransformStamped()
        t.header.stamp = rospy.Time.now()
        t.header.frame_id, t.child_frame_id = parent, self.frames[0][0][1].header.frame_id
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = matrix[:3, 3]
        w = max(1e-12, (1.0 + matrix[0, 0] + matrix[1, 1] + matrix[2, 2])) ** 0.5 / 2  # yaw below pi
        t.transform.rotation.w = w
        t.transform.rotation.x = (matrix[2, 1] - matrix[1, 2]) / (4 * w)
        t.transform.rotation.y = (matrix[0, 2] - matrix[2, 0]) / (4 * w)
        t.transform.rotation.z = (matrix[1, 0] - matrix[0, 1]) / (4 * w)
        broadcaster = tf2_ros.StaticTransformBroadcaster()
        broadcaster.sendTransform(t)
        rospy.loginfo(f"{NODE}: static transform {parent} -> {t.child_frame_id}: {pose}")
        return broadcaster

    def _load(self) -> List[list]:
        by_stamp: Dict[float, list] = defaultdict(list)
        topics = None if self.with_truth else [CLOUD_TOPIC]
        with rosbag.Bag(self.bag_path) as bag:
            for topic, msg, _ in bag.read_messages(topics=topics):
                if hasattr(msg, "header"):
                    by_stamp[msg.header.stamp.to_sec()].append((topic, msg))
        frames = [sorted(v, key=lambda tm: tm[0] != CLOUD_TOPIC) for _, v in sorted(by_stamp.items())]
        return [f for f in frames if f and f[0][0] == CLOUD_TOPIC]

    def run(self) -> None:
        period = 1.0 / self.rate_hz
        rospy.sleep(float(rospy.get_param("~start_delay_s", 1.0)))
        next_tick = time.monotonic()
        seq = 0
        while not rospy.is_shutdown():
            for frame in self.frames:
                if rospy.is_shutdown():
                    return
                stamp = rospy.Time.now()
                for topic, msg in frame:
                    msg.header.stamp = stamp
                    msg.header.seq = seq
                    self.pubs[topic].publish(msg)
                seq += 1
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()
            if not self.loop:
                return


def main() -> None:
    memory.keep_frame_buffers()  # before any thread starts
    rospy.init_node(NODE)
    CloudReplayNode().run()
