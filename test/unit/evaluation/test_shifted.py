"""The shifted-data gate and the worlds it reads: a candidate that loses beyond the training
world fails it, an identical one passes, and missing data is said, never passed."""

import dataclasses
import os

import numpy as np

from airside_perception import classes
from airside_perception.evaluation import shifted
from airside_perception.pipelines import store
from airside_perception.sim.sites import site_scan
from airside_perception.sim.world import make_scan

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


def test_sites_are_deterministic_and_not_the_apron():
    a, b = site_scan(110003, "remote_stand"), site_scan(110003, "remote_stand")
    np.testing.assert_array_equal(a.points, b.points)
    apron = make_scan(110003)
    assert len(a.points) != len(apron.points)
    assert a.points[:, 3].mean() < 0.6 * apron.points[:, 3].mean()  # wet apron: weaker returns
    r = site_scan(110003, "randomized")
    assert len(r.labels) == len(r.points) and r.box_points.sum() > 0


class Blind:
    """A candidate that calls every point ground (a robustness collapse)."""

    def __init__(self, engine):
        self.engine, self.task, self.bev_spec, self.version = engine, engine.task, engine.bev_spec, "blind"

    def run(self, x):
        result = self.engine.run(x)
        labels = np.where(result.labels == classes.UNLABELLED, classes.UNLABELLED, 0).astype(np.uint8)
        return dataclasses.replace(result, labels=labels)


def test_the_gate_fails_a_collapsed_candidate_and_passes_an_identical_one(monkeypatch):
    monkeypatch.setattr(shifted, "default_kitti_dir", lambda: None)
    engine = store.open_engine(store.load_version(os.path.join(ROOT, "engines"), "segmentation", "2.2.0"),
                               "onnxruntime", 2)
    same, report = shifted.shifted_gates(engine, engine, 2, progress=False)
    assert same and all(g["passed"] and g["value"] == 0 for g in same)
    blind, _ = shifted.shifted_gates(engine, Blind(engine), 2, progress=False)
    failed = {g["name"] for g in blind if not g["passed"]}
    assert {"shifted_randomized_miou_drop", "shifted_randomized_person_drop"} <= failed
    engine.close()


def test_missing_kitti_is_skipped_not_passed(monkeypatch):
    monkeypatch.setattr(shifted, "default_kitti_dir", lambda: None)
    engine = store.open_engine(store.load_version(os.path.join(ROOT, "engines"), "segmentation", "2.2.0"),
                               "onnxruntime", 2)
    gates, report = shifted.shifted_gates(engine, engine, 1, progress=False)
    assert "kitti_boxes" in report["skipped"] and not any("kitti" in g["name"] for g in gates)
    engine.close()
