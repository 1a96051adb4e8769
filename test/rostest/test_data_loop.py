#!/usr/bin/env python3
"""The data loop end to end at CI scale: see data_loop.test."""

import json
import os
import subprocess
import sys
import unittest

import rosbag
import rospy
import rostest


class DataLoop(unittest.TestCase):
    def test_the_loop_end_to_end(self):
        rospy.init_node("test_data_loop")
        work = rospy.get_param("~work_dir")
        out = os.path.join(os.path.dirname(work), "data_loop.json")
        if os.path.exists(out):
            os.remove(out)
        run = subprocess.run([sys.executable, "-m", "airside_perception.ros.data_loop", "--scale", "ci",
                              "--work-dir", work, "--out", out], capture_output=True, text=True, timeout=560)
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
        result = json.load(open(out))
        # the drive: every cloud scored against the ground truth, the recorder's triggers counted
        self.assertGreaterEqual(result["drive"]["clouds_scored"], 25)
        self.assertGreater(result["drive"]["recordings"], 0)
        self.assertIn("out_of_distribution", result["triggers"])  # the new site is beyond the training world
        self.assertGreater(result["precision"], 0.0)
        self.assertGreater(result["recall"], 0.0)
        index = [json.loads(line) for line in open(os.path.join(work, "recordings", "index.jsonl"))]
        with rosbag.Bag(os.path.join(work, "recordings", index[0]["file"])) as bag:
            topics = bag.get_type_and_topic_info().topics
            self.assertIn("/airside_av/ground_truth/labels", topics)
        # curated with the simulator's labels; a new version exported, recalibrated, gated and signed
        self.assertGreater(result["curated_clouds"], 0)
        version = os.path.join(work, "engines", "segmentation", result["new_version"])
        for name in ("manifest.yaml", "model.onnx", "signature.json", "gate_report/gate_report.json"):
            self.assertTrue(os.path.isfile(os.path.join(version, name)), name)
        report = json.load(open(os.path.join(version, "gate_report", "gate_report.json")))
        self.assertTrue(any(g["name"].startswith("shifted_remote_stand") for g in report["gates"]))
        self.assertEqual(result["gates"]["passed"], report["passed"])
        if report["passed"]:
            self.assertTrue(result["swap"]["success"], result["swap"])
            self.assertEqual(result["swap"]["active_version"], result["new_version"])
        else:  # an operator swaps only what passed its gates
            self.assertFalse(result["swap"]["success"])
            self.assertIn("gates failed", result["swap"]["message"])
        # the new site's accuracy and the monitor's trust, before and after the fine-tune
        self.assertGreater(result["after"]["miou"], result["before"]["miou"])
        for key in ("miou", "person_iou", "map", "trust"):
            self.assertIn(key, result["old_apron"]["after"])


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "data_loop", DataLoop)
