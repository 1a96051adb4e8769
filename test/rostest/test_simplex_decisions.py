#!/usr/bin/env python3
"""The simplex decides as a safety engineer would, driven cycle by cycle through its contract
topics: faults leave at once, a shift that comes and goes is caught, a periodic fault does not make
the source alternate, NaN is a fault, every report of a cloud counts, nothing hides a person, and
results of one cloud only go out under its stamp, within the cycle."""

import sys
import threading
import time
import unittest

import numpy as np
import rospy
import rostest
from geometry_msgs.msg import Point, Vector3
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import PointCloud2

from airside_perception.msg import Detection3D, Detection3DArray, InferenceStatus, SimplexStatus
from airside_perception.ros import messages

TASKS = ["segmentation", "detection", "occupancy"]
PERIOD_S = 0.1


def detection(x, y, length, width, label="person", tag=0.0):
    """``tag`` rides in the height: which cloud the box came from."""
    return Detection3D(label=3, label_name=label, score=0.9, center=Point(x, y, 0.8),
                       size=Vector3(length, width, 1.0 + tag), yaw=0.0)


class Driver:
    def __init__(self):
        self.pub_cloud = rospy.Publisher("/airside_av/lidar/aggregated", PointCloud2, queue_size=10)
        self.pub_det = rospy.Publisher("/perception/detections", Detection3DArray, queue_size=10)
        self.pub_occ = rospy.Publisher("/perception/occupancy", OccupancyGrid, queue_size=10)
        self.pub_report = rospy.Publisher("/inference_host/status", InferenceStatus, queue_size=10)
        self.pub_base = rospy.Publisher("/baseline/obstacles", Detection3DArray, queue_size=10)
        self.pub_base_occ = rospy.Publisher("/baseline/occupancy", OccupancyGrid, queue_size=10)
        self.lock = threading.Lock()
        self.obstacles, self.status = {}, {}
        rospy.Subscriber("/perception/obstacles", Detection3DArray, self._keep, "obstacles", queue_size=50)
        rospy.Subscriber("/simplex/status", SimplexStatus, self._keep, "status", queue_size=50)
        self.grid = np.zeros((200, 200), np.int8)

    def _keep(self, msg, kind):
        with self.lock:
            getattr(self, kind)[msg.header.stamp.to_nsec()] = msg

    def _later(self, delay_s, fn):
        threading.Timer(max(0.0, delay_s), fn).start()

    def cycle(self, adv_ms=40.0, base_ms=30.0, confidence=0.99, trust=0.9, error="", adv=(), base=(),
              extra_reports=(), tag=0.0):
        """Publishes one cloud and, after the given delays, the host's and baseline's results."""
        stamp = rospy.Time.now()
        header = messages.Header(stamp=stamp, frame_id="base_link")
        self.pub_cloud.publish(PointCloud2(header=header))
        conf = confidence if isinstance(confidence, (list, tuple)) else [confidence] * 3
        trusts = trust if isinstance(trust, (list, tuple)) else [trust] * 3

        def advanced():
            self.pub_det.publish(Detection3DArray(header=header, source="advanced", model_version="t",
                                                 detections=[detection(*b, tag=tag) for b in adv]))
            self.pub_occ.publish(messages.occupancy_msg(header, self.grid, 0.4, -40.0, -40.0))
            self.pub_report.publish(InferenceStatus(header=header, tasks=TASKS, versions=["t"] * 3,
                                                    confidences=conf, errors=[error, "", ""], latency_ms=adv_ms,
                                                    trust=trusts, ood_scores=[0.0] * 3, ood_worst=[""] * 3))
            for report in extra_reports:
                report.header = header
                self.pub_report.publish(report)

        def baseline():
            self.pub_base.publish(Detection3DArray(header=header, source="baseline", model_version="ransac",
                                                   detections=[detection(*b, label="unknown", tag=tag)
                                                               for b in base]))
            self.pub_base_occ.publish(messages.occupancy_msg(header, self.grid, 0.4, -40.0, -40.0))
        if adv_ms is not None:
            self._later(adv_ms / 1e3, advanced)
        if base_ms is not None:
            self._later(base_ms / 1e3, baseline)
        time.sleep(PERIOD_S)
        return stamp.to_nsec()

    def result(self, stamp_ns, wait_s=0.3):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            with self.lock:
                if stamp_ns in self.status and stamp_ns in self.obstacles:
                    return self.status[stamp_ns], self.obstacles[stamp_ns]
            time.sleep(0.01)
        with self.lock:
            return self.status.get(stamp_ns), self.obstacles.get(stamp_ns)

    def settle_on_advanced(self, n=12, limit=160):
        """Good cycles until the simplex has been on the advanced path for ``n`` of them (past
        faults lengthen the way back)."""
        run, status = 0, None
        for _ in range(limit):
            status, _ = self.result(self.cycle(), wait_s=0.15)
            run = run + 1 if status is not None and status.active == "advanced" else 0
            if run >= n:
                return
        raise AssertionError("the simplex never returned to the advanced path on good cycles: last status "
                             f"{status and (status.active, status.reason, list(status.faults))}")


class SimplexDecisions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rospy.init_node("test_simplex_decisions", anonymous=True)
        cls.d = Driver()
        time.sleep(3.0)  # the simplex connects
        cls.d.settle_on_advanced(5)

    def decisions(self, stamps):
        time.sleep(0.3)
        return [self.d.result(s) for s in stamps]

    def test_1_a_shift_that_comes_and_goes_never_lets_the_distrusted_model_drive(self):
        self.d.settle_on_advanced(5)
        stamps = [self.d.cycle(trust=t) for t in (0.1, 0.1, 0.9) * 10]
        out = self.decisions(stamps)
        low = [s for (s, _), t in zip(out, (0.1, 0.1, 0.9) * 10) if t < 0.5]
        self.assertTrue(all(s is not None for s, _ in out), "a cycle went unanswered")
        self.assertFalse([s for s in low if s.active == "advanced" and s.reason == "ok"],
                         "a low-trust cycle went out as advanced ok")
        self.assertFalse([s for s, _ in out[3:] if s.active == "advanced"],
                         "the distrusted model drove between its low-trust cycles")

    def test_2_nan_and_a_second_report_of_the_same_cloud_are_faults(self):
        for what, kwargs in (("NaN confidence", {"confidence": [0.99, float("nan"), 0.98]}),
                             ("NaN trust", {"trust": [0.9, float("nan"), 0.9]})):
            self.d.settle_on_advanced(5)
            status, _ = self.decisions([self.d.cycle(**kwargs)])[0]
            self.assertIsNotNone(status, what)
            self.assertFalse(status.active == "advanced" and status.reason == "ok", f"{what}: {status.reason}")
            self.assertTrue(any(f.startswith("detection: nan_") for f in status.faults), status.faults)
        # a second report of a cloud, from another process, right after a first one that covered every task
        for field, bad in (("errors", "CUDA error: an illegal memory access"), ("confidences", 0.1),
                           ("trust", 0.05)):
            self.d.settle_on_advanced(5)
            report = InferenceStatus(tasks=["detection"], versions=["t"], confidences=[0.99], errors=[""],
                                     latency_ms=40.0, trust=[0.9], ood_scores=[0.0], ood_worst=[""])
            setattr(report, field, [bad])
            out = self.decisions([self.d.cycle(extra_reports=[report]), self.d.cycle()])
            faulty = [s for s, _ in out if s is not None and not (s.active == "advanced" and s.reason == "ok")]
            self.assertTrue(faulty, f"a second report with bad {field} was ignored: "
                                    f"{[(s.active, s.reason) for s, _ in out if s is not None]}")

    def test_3_a_periodic_late_cycle_does_not_make_the_source_alternate(self):
        self.d.settle_on_advanced(5)
        stamps = [self.d.cycle(adv_ms=120.0 if k % 6 == 5 else 40.0) for k in range(30)]
        out = self.decisions(stamps)
        sources = [o.source for _, o in out if o is not None]
        changes = sum(a != b for a, b in zip(sources, sources[1:]))
        self.assertLessEqual(changes, 3, f"the source changed {changes} times in 30 cycles: {sources}")

    def test_4_nothing_hides_a_person_and_one_cloud_goes_out_under_its_stamp(self):
        self.d.settle_on_advanced(5)
        huge = [(0.0, 0.0, 45.0, 45.0)]
        person_by_cone = [(8.0, 3.9, 0.6, 0.6)]
        cone = [(8.0, 3.0, 0.4, 0.4)]
        tags = [0.01 * (k + 1) for k in range(10)]
        stamps = [self.d.cycle(adv=huge if k % 2 else cone, base=person_by_cone, tag=tags[k],
                               base_ms=180.0 if k == 5 else 30.0) for k in range(10)]
        out = self.decisions(stamps)
        for k, (_status, obstacles) in enumerate(out):
            self.assertIsNotNone(obstacles, f"cycle {k} unanswered")
            persons = [d for d in obstacles.detections if d.label_name == "unknown"]
            for d in obstacles.detections:  # every box belongs to this cloud
                self.assertAlmostEqual(d.size.z - 1.0, tags[k], places=4, msg=f"cycle {k}: a box of another cloud")
            if k == 5:  # its baseline came after the decision: nothing of another cloud stood in for it
                continue
            self.assertEqual(len(persons), 1, f"cycle {k}: the person next to the "
                                              f"{'45 m box' if k % 2 else 'cone'} was hidden ({obstacles.source})")

    def test_5_the_answer_is_out_inside_the_cycle_when_the_baseline_is_late(self):
        self.d.settle_on_advanced(5)
        stamps = [self.d.cycle(base_ms=180.0) for _ in range(10)]
        out = self.decisions(stamps)
        latency = [o.latency_ms for _, o in out if o is not None]
        self.assertEqual(len(latency), 10)
        self.assertLess(max(latency), 100.0, f"decisions at {max(latency):.0f} ms after their cloud")
        self.assertTrue(all(any("baseline" in f for f in s.faults) for s, _ in out), "the late baseline is unnamed")


if __name__ == "__main__":
    rostest.rosrun("airside_perception", "simplex_decisions", SimplexDecisions, sys.argv)
