#!/usr/bin/env python3
"""Shadow runs, rollbacks by version and expired versions under the default launch: see shadow_engine.test."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import unittest

import onnx
import rospy
import rostest
from onnx import numpy_helper

from airside_perception.engines.manifest import sha256_of
from airside_perception.msg import Detection3DArray, ModelStatusArray
from airside_perception.srv import ShadowEngine, SwapEngine

TASK = "detection"
SERVING = "2.1.0"  # configured in config/inference_host.yaml
OLDER = "1.1.0"  # bundled, an older version of the same contract


class ShadowRuns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_shadow_engine", anonymous=True)
        cls.root = rospy.get_param("~engines_dir")
        cls.state_file = rospy.get_param("~state_file")
        cls.audit_path = os.path.join(os.path.dirname(cls.state_file), "audit.jsonl")
        cls.fleet_key = rospy.get_param("~fleet_key")
        cls.lock = threading.Lock()
        cls.detections, cls.models = [], {}
        rospy.Subscriber("/perception/detections", Detection3DArray, cls._on_detections)
        rospy.Subscriber("/model_manager/status", ModelStatusArray, cls._on_models)
        rospy.wait_for_service("/model_manager/shadow_engine", timeout=90)
        cls.shadow = rospy.ServiceProxy("/model_manager/shadow_engine", ShadowEngine)
        cls.swap = rospy.ServiceProxy("/model_manager/swap_engine", SwapEngine)
        cls._wait(lambda: cls.serving() == SERVING and len(cls.detections) > 20, 90, "the graph to serve")

    @classmethod
    def _on_detections(cls, msg):
        with cls.lock:
            cls.detections.append(time.monotonic())

    @classmethod
    def _on_models(cls, msg):
        with cls.lock:
            cls.models = {m.task: m for m in msg.models}

    @classmethod
    def serving(cls):
        with cls.lock:
            m = cls.models.get(TASK)
            return m.active_version if m else None

    @staticmethod
    def _wait(cond, timeout_s, what):
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def _copy(self, version, person_blind=False, not_after=""):
        src, dst = os.path.join(self.root, TASK, SERVING), os.path.join(self.root, TASK, version)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("signature.json"))
        manifest = os.path.join(dst, "manifest.yaml")
        with open(manifest) as fh:
            text = fh.read().replace(f"version: {SERVING}", f"version: {version}")
        if person_blind:  # the person channel of the heatmap pushed far below any threshold
            model_path = os.path.join(dst, "model.onnx")
            model = onnx.load(model_path)
            for init in model.graph.initializer:
                if init.name == "heatmap.bias":
                    bias = numpy_helper.to_array(init).copy()
                    bias[text.split("class_names: [")[1].split("]")[0].split(", ").index("person")] -= 40.0
                    init.CopyFrom(numpy_helper.from_array(bias, init.name))
            onnx.save(model, model_path)
            old_sha = text.split("sha256: ")[1].split(",")[0].split("}")[0].strip()
            text = text.replace(old_sha, sha256_of(model_path))
        with open(manifest, "w") as fh:
            fh.write(text)
        args = ["sign", "--task", TASK, "--version", version, "--key", self.fleet_key, "--engines-dir", self.root]
        out = subprocess.run([sys.executable, "-m", "airside_perception.tools.engine_tool"] + args
                             + (["--not-after", not_after] if not_after else []), capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        return dst

    def _rate_during(self, fn):
        with self.lock:
            n0 = len(self.detections)
        t0 = time.monotonic()
        out = fn()
        elapsed = time.monotonic() - t0
        with self.lock:
            n = len(self.detections) - n0
        return out, n / elapsed

    def _audit(self, action):
        with open(self.audit_path) as fh:
            return [e for e in map(json.loads, fh) if e["action"] == action]

    def _report_tool(self):
        return subprocess.run([sys.executable, "-m", "airside_perception.tools.engine_tool", "shadow-report", "--log",
                               self.audit_path], capture_output=True, text=True)

    def test_1_an_identical_copy_agrees_fully_and_the_graph_keeps_its_rate(self):
        path = self._copy("2.1.1")
        out, rate = self._rate_during(lambda: self.shadow(TASK, path, 0.0, 25))
        self.assertTrue(out.success, out.message)
        self.assertEqual(out.agreement, 1.0, out.message)
        self.assertEqual(out.near_person_disagreements, 0, out.message)
        self.assertTrue(0.4 < out.latency_ratio < 2.5 and out.projected_p99_ms > 0, out.message)
        report = json.loads(out.report_json)
        self.assertEqual(report["clouds"], 25)
        self.assertGreaterEqual(rate, 8.0, "detections slowed down during the shadow run (the bag plays at 10 Hz)")
        self.assertEqual(self.serving(), SERVING, "a shadow run never swaps")
        record = self._audit("shadow")[-1]
        self.assertEqual((record["result"], record["version"], record["shadow"]["agreement"]),
                         ("passed", "2.1.1", 1.0))
        self.assertTrue(record["key_id"], "the record names the signing key")
        self._wait(lambda: "shadow run" in self.models[TASK].message, 5, "the status to show the shadow run")
        tool = self._report_tool()
        self.assertEqual(tool.returncode, 0, tool.stderr)
        self.assertIn("PASS", tool.stdout)

    def test_2_a_person_blind_candidate_is_caught_with_the_persons_listed(self):
        path = self._copy("2.1.2", person_blind=True)
        out = self.shadow(TASK, path, 0.0, 25)
        self.assertFalse(out.success, out.message)
        self.assertGreater(out.near_person_disagreements, 0, out.message)
        report = json.loads(out.report_json)
        listed = report["near_person_disagreements"]
        self.assertTrue(listed and all(d["seen_by"] == "serving only" and d["range_m"] < 20 for d in listed), listed)
        self.assertLess(report["per_class"].get("person", 1.0), 0.5, report["per_class"])
        self.assertEqual(self._audit("shadow")[-1]["result"], "failed")
        tool = self._report_tool()
        self.assertEqual(tool.returncode, 1)
        self.assertIn("serving only", tool.stdout)
        self.assertEqual(self.serving(), SERVING)

    def test_3_bad_requests_are_refused_with_the_fix(self):
        for args, expected in (((TASK, os.path.join(self.root, TASK, OLDER), 0.0, 0), "give duration_s"),
                               (("lidar", os.path.join(self.root, TASK, OLDER), 5.0, 0), "unknown"),
                               ((TASK, "/tmp", 5.0, 0), "not a version directory"),
                               ((TASK, os.path.join(self.root, TASK, "unsigned"), 5.0, 0), "trust check failed"),
                               ((TASK, os.path.join(self.root, TASK, SERVING), 5.0, 0), "already serving"),
                               ((TASK, os.path.join(self.root, TASK, OLDER), float("nan"), 0), "give duration_s")):
            out = self.shadow(*args)
            self.assertFalse(out.success, args)
            self.assertIn(expected, out.message, args)
        self.assertTrue(all(e["result"] == "refused" for e in self._audit("shadow")[-6:]))

    def test_4_a_rollback_by_version_is_accepted_and_audited_and_an_expired_version_is_refused(self):
        out = self.swap(TASK, os.path.join(self.root, TASK, OLDER))
        self.assertTrue(out.success, out.message)
        self.assertIn("rollback by version", out.message)
        self.assertIn("projected P99", out.message)
        record = self._audit("swap")[-1]
        self.assertEqual(record["result"], "accepted")
        self.assertIn(f"rollback by version: {OLDER} after {SERVING}", record["reason"])
        expired = self._copy("2.1.3", not_after="2000-01-01")
        for call in (lambda: self.swap(TASK, expired), lambda: self.shadow(TASK, expired, 5.0, 0)):
            refused = call()
            self.assertFalse(refused.success)
            self.assertIn("expired", refused.message)
        self.assertTrue(self.swap(TASK, os.path.join(self.root, TASK, SERVING)).success)


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "shadow_runs", ShadowRuns, sys.argv)
