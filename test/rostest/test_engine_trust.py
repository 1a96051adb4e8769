#!/usr/bin/env python3
"""Every door verifies under the default launch: see engine_trust.test."""

import json
import os
import shutil
import sys
import threading
import time
import unittest

import rosnode
import rospy
import rostest

from airside_perception.engines import signing, trust
from airside_perception.msg import Detection3DArray, ModelStatusArray
from airside_perception.srv import LoadEngine, RollbackEngine, SwapEngine

TASK = "detection"
SERVING = "2.1.0"  # configured in config/inference_host.yaml


class EngineTrust(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_engine_trust", anonymous=True)
        cls.root = rospy.get_param("~engines_dir")
        cls.audit_path = os.path.join(os.path.dirname(rospy.get_param("~state_file")), "audit.jsonl")
        cls.fleet_key = rospy.get_param("~fleet_key")
        cls.rogue = signing.generate_keypair(os.path.join(os.path.dirname(cls.root), "rogue"), "rogue")
        cls.lock = threading.Lock()
        cls.obstacles, cls.detections, cls.models = [], [], {}
        rospy.Subscriber("/perception/obstacles", Detection3DArray, lambda m: cls._add(cls.obstacles))
        rospy.Subscriber("/perception/detections", Detection3DArray, lambda m: cls._add(cls.detections))
        rospy.Subscriber("/model_manager/status", ModelStatusArray, cls._on_models)
        for name in ("/model_manager/swap_engine", "/inference_host/load_engine"):
            rospy.wait_for_service(name, timeout=90)
        cls.swap = rospy.ServiceProxy("/model_manager/swap_engine", SwapEngine)
        cls.load = rospy.ServiceProxy("/inference_host/load_engine", LoadEngine)
        cls.rollback = rospy.ServiceProxy("/model_manager/rollback_engine", RollbackEngine)
        cls._wait(lambda: cls.serving() == SERVING and len(cls.detections) > 20, 90, "the graph to serve")

    @classmethod
    def _add(cls, into):
        with cls.lock:
            into.append(time.monotonic())

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

    def _copy(self, version, sign_with=None):
        src, dst = os.path.join(self.root, TASK, SERVING), os.path.join(self.root, TASK, version)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("signature.json"))
        manifest = os.path.join(dst, "manifest.yaml")
        with open(manifest) as fh:
            text = fh.read().replace(f"version: {SERVING}", f"version: {version}")
        with open(manifest, "w") as fh:
            fh.write(text)
        if sign_with:
            signing.sign_version(dst, TASK, version, sign_with)
        return dst

    def _audited(self, action, version, result):
        with open(self.audit_path) as fh:
            entries = [json.loads(line) for line in fh if line.strip()]
        return [e for e in entries if e["action"] == action and e["version"] == version and e["result"] == result]

    def _refused_at_both_doors(self, path, version, needle):
        out = self.swap(TASK, path)
        self.assertFalse(out.success, out.message)
        self.assertIn(needle, out.message)
        out = self.load(TASK, path)
        self.assertFalse(out.success, out.message)
        self.assertIn(needle, out.message)
        self.assertEqual(self.serving(), SERVING)
        self._wait(lambda: self._audited("swap", version, "refused") and self._audited("load", version, "refused"),
                   5, f"the audit records of {version}")
        record = self._audited("load", version, "refused")[-1]
        self.assertTrue(record["caller"] and record["path"] and needle in record["reason"], record)

    def _rate(self, stamps, since):
        with self.lock:
            n = sum(1 for t in stamps if t >= since)
        return n / (time.monotonic() - since)

    def test_1_unsigned_and_untrusted_copies_are_refused_at_every_door_while_clouds_are_answered(self):
        since = time.monotonic()
        self._refused_at_both_doors(self._copy("8.0.0"), "8.0.0", "not signed")
        self._refused_at_both_doors(self._copy("8.2.0", self.rogue["private"]), "8.2.0", self.rogue["key_id"])
        time.sleep(max(0.0, 5.0 - (time.monotonic() - since)))
        self.assertGreater(self._rate(self.detections, since), 8.0, "detections at the input rate meanwhile")
        self.assertGreater(self._rate(self.obstacles, since), 8.0, "obstacles at the input rate meanwhile")

    def test_2_a_signed_version_swaps_in_and_rolls_back(self):
        path = self._copy("8.1.0", self.fleet_key)
        out = self.swap(TASK, path)
        self.assertTrue(out.success, out.message)
        self._wait(lambda: self.serving() == "8.1.0", 10, "8.1.0 to serve")
        out = self.rollback(TASK)
        self.assertTrue(out.success, out.message)
        self._wait(lambda: self.serving() == SERVING, 10, "the rollback")
        self.assertTrue(self._audited("swap", "8.1.0", "accepted"))

    def test_3_a_revoked_version_is_replaced_within_a_second_and_refused_at_every_door(self):
        path = self._copy("8.3.0", self.fleet_key)
        self.assertTrue(self.swap(TASK, path).success)
        self._wait(lambda: self.serving() == "8.3.0", 10, "8.3.0 to serve")
        trust.revoke(self.root, TASK, "8.3.0", self.fleet_key, "test")
        start = time.monotonic()
        self._wait(lambda: self.serving() == SERVING, 5, "the revoked version to be replaced")
        self.assertLess(time.monotonic() - start, 2.0)
        self._refused_at_both_doors(path, "8.3.0", "revoked")
        # removing the list un-revokes nothing
        os.remove(os.path.join(self.root, trust.REVOKED_FILE))
        self.assertFalse(self.swap(TASK, path).success)
        # a rollback to a revoked fallback: serve 8.6.0 with 8.4.0 as its fallback, then revoke 8.4.0
        self.assertTrue(self.swap(TASK, self._copy("8.4.0", self.fleet_key)).success)
        self.assertTrue(self.swap(TASK, self._copy("8.6.0", self.fleet_key)).success)
        self._wait(lambda: self.serving() == "8.6.0", 10, "8.6.0 to serve")
        trust.revoke(self.root, TASK, "8.4.0", self.fleet_key, "test")
        out = self.rollback(TASK)
        self.assertFalse(out.success, out.message)
        self.assertIn("revoked", out.message)
        self.assertEqual(self.serving(), "8.6.0")
        self.assertTrue(self.swap(TASK, os.path.join(self.root, TASK, SERVING)).success)  # bundled: back
        self._wait(lambda: self.serving() == SERVING, 10, "the configured version")

    def test_4_a_serving_version_edited_at_rest_is_not_served_after_a_restart(self):
        path = self._copy("8.5.0", self.fleet_key)
        self.assertTrue(self.swap(TASK, path).success)
        self._wait(lambda: self.serving() == "8.5.0", 10, "8.5.0 to serve")
        with open(os.path.join(path, "manifest.yaml"), "a") as fh:
            fh.write("# one value edited at rest\n")
        rosnode.kill_nodes(["/inference_host"])  # respawns: the start-up door checks what it opens
        self._wait(lambda: self._audited("startup", "8.5.0", "refused"), 90, "the start-up refusal")
        self._wait(lambda: self.serving() == SERVING, 60, "the host to serve the configured version")
        self.assertIn("changed since it was signed", self._audited("startup", "8.5.0", "refused")[-1]["reason"])


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "engine_trust", EngineTrust, sys.argv)
