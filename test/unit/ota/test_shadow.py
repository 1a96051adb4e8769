"""Shadow runs without ROS: the comparison rules on controlled results, and whole runs beside a
host that serves frames (an identical copy, another version, deadline pressure, refusals)."""

from __future__ import annotations

import os
import shutil

import numpy as np
from test_swap import Serving, _controller, root  # noqa: F401  (the fixture)

from airside_perception.ops.bev import BevSpec, encode
from airside_perception.ops.detection import Boxes
from airside_perception.ota import shadow
from airside_perception.ota.swap import SwapParams
from airside_perception.pipelines.tasks import TaskResult
from airside_perception.sim.world import make_scan

DET_CLASSES = ("aircraft", "person", "vehicle", "cart", "cone", "fod")


def _det(boxes):
    """A detection result from (x, y, label) rows."""
    b = np.zeros((len(boxes), 7), np.float32)
    labels = np.zeros(len(boxes), np.int64)
    for i, (x, y, label) in enumerate(boxes):
        b[i, :2], b[i, 3:6], labels[i] = (x, y), (0.6, 0.6, 1.8), label
    return TaskResult("detection", "v", 0.9, 1.0, 0.1, boxes=Boxes(b, labels, np.full(len(boxes), 0.9, np.float32)))


def test_a_near_person_seen_by_one_engine_only_is_listed_and_a_far_one_is_not():
    person = DET_CLASSES.index("person")
    serving = _det([(10.0, 2.0, person), (35.0, 0.0, person), (5.0, -3.0, 4)])
    candidate = _det([(35.0, 0.5, person), (5.2, -3.0, 4)])
    c = shadow.Comparison("detection", DET_CLASSES, BevSpec())
    agreement = c.add(0, candidate, serving, bev=None)
    assert c.near == [{"cloud": 0, "seen_by": "serving only", "x_m": 10.0, "y_m": 2.0, "range_m": 10.2}]
    assert abs(agreement - 2 * 2 / 5) < 1e-6 and c.boxes == [2, 2, 3]
    assert c.per_class() == {"cone": 1.0, "person": 0.6667}


def test_a_person_beside_the_right_box_of_another_class_still_counts():
    person, cone = DET_CLASSES.index("person"), DET_CLASSES.index("cone")
    c = shadow.Comparison("detection", DET_CLASSES, BevSpec())
    c.add(3, _det([(8.0, 0.0, cone)]), _det([(8.0, 0.0, cone), (8.6, 0.0, person)]), bev=None)
    assert [d["seen_by"] for d in c.near] == ["serving only"]


def test_segmented_persons_are_compared_as_clusters_within_the_near_field():
    spec = BevSpec()
    scan = make_scan(7, "compact")
    bev = encode(scan.points, spec)
    person = 2
    n = scan.points.shape[0]
    serving_labels = np.full(n, 0, np.uint8)
    xy = scan.points[bev.kept, :2]
    near_group = (np.abs(xy[:, 0] - xy[0, 0]) < 0.5) & (np.abs(xy[:, 1] - xy[0, 1]) < 0.5)
    if np.hypot(*xy[0]) >= 18:  # a point of the scan inside the near field
        i = int(np.argmin(np.hypot(xy[:, 0], xy[:, 1]) + 1e3 * (np.hypot(xy[:, 0], xy[:, 1]) < 3)))
        near_group = (np.abs(xy[:, 0] - xy[i, 0]) < 0.5) & (np.abs(xy[:, 1] - xy[i, 1]) < 0.5)
    serving_labels[bev.kept[near_group]] = person
    serving_labels[np.setdiff1d(np.arange(n), bev.kept)] = 255
    serving = TaskResult("segmentation", "a", 0.9, 1, 0, labels=serving_labels)
    same = TaskResult("segmentation", "b", 0.9, 1, 0, labels=serving_labels.copy())
    blind = serving_labels.copy()
    blind[blind == person] = 0
    c = shadow.Comparison("segmentation", ("ground", "aircraft", "person"), spec)
    assert c.add(0, same, serving, bev) == 1.0 and c.near == []
    c.add(1, TaskResult("segmentation", "b", 0.9, 1, 0, labels=blind), serving, bev)
    assert len(c.near) >= 1 and all(d["seen_by"] == "serving only" and d["range_m"] < 20 for d in c.near)
    assert c.per_class()["person"] < 1.0


def _copy(engines, task, src, dst):
    path = os.path.join(engines, task, dst)
    if not os.path.isdir(path):
        shutil.copytree(os.path.join(engines, task, src), path)
        manifest = os.path.join(path, "manifest.yaml")
        with open(manifest) as fh:
            text = fh.read().replace(f"version: {src}", f"version: {dst}")
        with open(manifest, "w") as fh:
            fh.write(text)
    return path


def test_an_identical_copy_agrees_fully_and_the_host_keeps_serving(root, tmp_path):  # noqa: F811
    ctl, host, _ = _controller(root, tmp_path)
    serving = Serving(host, period_s=0.1).start(ctl)
    try:
        report, why = ctl.shadow("detection", _copy(root, "detection", "1.0.0", "1.0.1"), clouds=8)
    finally:
        serving.stop()
    assert why == "" and report is not None
    assert report.clouds == 8 and report.agreement == 1.0 and report.near_person_count == 0
    assert report.timed_pairs >= 6 and 0.5 < report.latency_ratio < 2.0, report
    assert report.passed, report.failures
    assert host.engine("detection").version == "1.0.0", "a shadow run never swaps"
    assert "shadow run of 1.0.1 over 8 clouds passed" in ctl.status()[0].message
    assert "PASS" in shadow.table(report.as_dict())
    host.close()


def test_deadline_pressure_stops_the_run_and_refusals_name_the_fix(root, tmp_path):  # noqa: F811
    ctl, host, _ = _controller(root, tmp_path)
    ctl.params = SwapParams("onnxruntime", 1, 5.0, 10, 2, frame_deadline_ms=0.001, require_gate_report=False)
    serving = Serving(host, period_s=0.05).start(ctl)
    try:
        report, _ = ctl.shadow("detection", os.path.join(root, "detection", "1.0.0-int8"), duration_s=20)
        assert report.stopped.startswith("deadline pressure") and not report.passed
        assert report.duration_s < 5
        assert ctl.shadow("detection", os.path.join(root, "detection", "1.0.0-int8"))[1].startswith("give duration_s")
        assert "already serving" in ctl.shadow("detection", os.path.join(root, "detection", "1.0.0"), clouds=3)[1]
        assert "not hosted here" in ctl.shadow("occupancy", os.path.join(root, "occupancy", "1.0.0"), clouds=3)[1]
    finally:
        serving.stop()
    host.close()


def test_without_clouds_the_run_ends_and_says_so(root, tmp_path):  # noqa: F811
    ctl, host, _ = _controller(root, tmp_path)
    host.process(make_scan(3, "compact").points)
    report, _ = ctl.shadow("detection", os.path.join(root, "detection", "1.0.0-int8"), duration_s=30)
    assert report.stopped.startswith("no clouds") and report.failures
    host.close()
