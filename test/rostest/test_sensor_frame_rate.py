#!/usr/bin/env python3
"""Real-size clouds in a sensor frame with a static transform: every output of the graph comes
at the input's rate, for the same clouds (the stamps match), in base_link."""

import struct
import sys
import threading
import time
import unittest

import rospy
import rostest

from airside_perception.ros.common import header_of_raw

INPUT = "/airside_av/lidar/aggregated"
OUTPUTS = ("/perception/segmentation", "/perception/detections", "/perception/occupancy", "/baseline/obstacles",
           "/perception/obstacles", "/perception/safety_grid")
WARM_UP_S = 8.0
WINDOW_S = 20.0
MIN_RATIO = 0.9  # outputs per input cloud
MIN_POINTS = 100_000


class SensorFrameRate(unittest.TestCase):
    seen = False
    input_frame = ""

    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_sensor_frame_rate", anonymous=True)
        cls.lock = threading.Lock()
        cls.counting = False
        cls.inputs = {}  # stamp ns -> points
        cls.frames = {t: set() for t in OUTPUTS}
        cls.outputs = {t: set() for t in OUTPUTS}
        rospy.Subscriber(INPUT, rospy.AnyMsg, cls._on_input, queue_size=20, buff_size=1 << 25)
        for topic in OUTPUTS:
            rospy.Subscriber(topic, rospy.AnyMsg, cls._on_output, topic, queue_size=20, buff_size=1 << 24)
        deadline = time.time() + 60.0
        while not rospy.is_shutdown() and time.time() < deadline and not cls.inputs_seen():
            time.sleep(0.2)
        time.sleep(WARM_UP_S)
        cls.counting = True
        time.sleep(WINDOW_S)
        cls.counting = False
        time.sleep(1.0)  # outputs of the last clouds counted

    @classmethod
    def inputs_seen(cls):
        with cls.lock:
            return cls.seen

    @classmethod
    def _on_input(cls, raw):
        stamp, frame = header_of_raw(raw._buff)
        offset = 16 + len(frame.encode())
        height, width = struct.unpack_from("<II", raw._buff, offset)
        with cls.lock:
            cls.seen = True
            cls.input_frame = frame
            if cls.counting:
                cls.inputs[stamp.to_nsec()] = height * width

    @classmethod
    def _on_output(cls, raw, topic):
        stamp, frame = header_of_raw(raw._buff)
        with cls.lock:
            cls.outputs[topic].add(stamp.to_nsec())
            cls.frames[topic].add(frame)

    def test_the_feed_is_real_size_in_the_sensor_frame(self):
        self.assertGreater(len(self.inputs), 0.8 * 10 * WINDOW_S, "the replay did not publish at 10 Hz")
        self.assertEqual(self.input_frame, "velodyne")
        self.assertGreaterEqual(min(self.inputs.values()), MIN_POINTS)

    def test_every_output_keeps_the_input_rate(self):
        clouds = set(self.inputs)
        input_hz = len(clouds) / WINDOW_S
        for topic in OUTPUTS:
            answered = len(self.outputs[topic] & clouds)
            with self.subTest(topic=topic):
                self.assertGreaterEqual(
                    answered, MIN_RATIO * len(clouds),
                    f"{topic}: {answered / WINDOW_S:.1f} Hz for {input_hz:.1f} Hz of clouds "
                    f"({answered} of {len(clouds)} answered)")
                self.assertEqual(self.frames[topic], {"base_link"}, f"{topic} not in base_link")


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "sensor_frame_rate", SensorFrameRate, sys.argv)
