"""The distribution-shift monitor: statistics, calibration, scores (core, no ROS)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from airside_perception.errors import ManifestError
from airside_perception.frames import pose_from_xyz_rpy, transform_points
from airside_perception.ops.bev import BevSpec, encode
from airside_perception.pipelines import trust
from airside_perception.sim.world import make_scan


def _rows(n, rng, task="segmentation"):
    sides = trust.feature_sides(task)
    return [{name: float(rng.normal(10.0, 1.0)) for name in sides} for _ in range(n)]


def test_calibrated_limits_keep_the_false_alarm_rate_on_fresh_in_distribution_rows():
    rng = np.random.default_rng(0)
    cal = trust.calibrate(_rows(2000, rng), "segmentation", 0.01, 1.0, "val")
    fresh = _rows(4000, rng)
    rate = np.mean([cal.score(r).is_out_of_distribution for r in fresh])
    assert rate < 0.03


def test_one_statistic_far_out_sets_the_score_and_is_named():
    rng = np.random.default_rng(1)
    cal = trust.calibrate(_rows(500, rng), "segmentation", 0.002, 1.25, "val")
    row = _rows(1, rng)[0]
    row["intensity_mean"] = 40.0
    score = cal.score(row)
    assert score.is_out_of_distribution and score.worst == "intensity_mean"
    assert score.trust < trust.TRUST_AT_THRESHOLD


def test_one_sided_statistics_ignore_the_harmless_side():
    rng = np.random.default_rng(2)
    cal = trust.calibrate(_rows(500, rng), "segmentation", 0.002, 1.25, "val")
    row = {k: 10.0 for k in trust.feature_sides("segmentation")}
    row["seg_max_logit"] = 100.0  # more decided than ever: not a shift
    row["seg_undecided_share"] = -50.0
    assert not cal.score(row).is_out_of_distribution
    row["seg_max_logit"] = -100.0  # far less decided: a shift
    assert cal.score(row).worst == "seg_max_logit"


def test_nan_statistics_count_nothing():
    rng = np.random.default_rng(3)
    cal = trust.calibrate(_rows(200, rng), "occupancy", 0.01, 1.0, "val")
    assert cal.score({k: float("nan") for k in trust.feature_sides("occupancy")}).score == 0.0


def test_trust_is_monotone_and_half_at_the_threshold():
    assert trust.trust_of(0.0) == 1.0
    assert trust.trust_of(1.0) == pytest.approx(0.5)
    assert trust.trust_of(0.3) > trust.trust_of(0.6) > trust.trust_of(2.0) > 0.0


def test_calibration_round_trips_through_the_manifest_section():
    rng = np.random.default_rng(4)
    cal = trust.calibrate(_rows(300, rng, "detection"), "detection", 0.002, 1.25, "val")
    again = trust.MonitorCalibration.from_dict(cal.to_dict(), "m")
    row = _rows(1, rng, "detection")[0]
    assert again.score(row).score == pytest.approx(cal.score(row).score, rel=1e-3)


@pytest.mark.parametrize("section", [{"features": {}}, {"false_alarm_rate": 0.1},
                                     {"false_alarm_rate": 0.1, "margin": 1, "split": "val", "scans": 3,
                                      "features": {"x": {"center": 0, "scale": 0, "limit": 1}}}])
def test_malformed_monitor_sections_name_the_fix(section):
    with pytest.raises(ManifestError, match="calibrate-monitor"):
        trust.MonitorCalibration.from_dict(section, "engines/x/manifest.yaml")


def test_input_statistics_see_mount_height_pitch_and_intensity_scale():
    spec = BevSpec()
    pts = make_scan(110003).points
    base = trust.input_features(encode(pts, spec), spec)
    assert abs(base["ground_z_m"]) < 0.3 and abs(base["ground_tilt_x"]) < 0.02
    low = trust.input_features(encode(transform_points(pts.copy(), pose_from_xyz_rpy(0, 0, -1.73, 0, 0, 0)), spec),
                               spec)
    assert low["ground_z_m"] == pytest.approx(base["ground_z_m"] - 1.73, abs=0.1)
    pitched = trust.input_features(
        encode(transform_points(pts.copy(), pose_from_xyz_rpy(0, 0, 0, 0, np.radians(5), 0)), spec), spec)
    assert pitched["ground_tilt_x"] < base["ground_tilt_x"] - 0.05
    dim = pts.copy()
    dim[:, 3] /= 255.0
    assert trust.input_features(encode(dim, spec), spec)["intensity_mean"] < base["intensity_mean"] / 100


def test_empty_cloud_gives_nan_statistics():
    spec = BevSpec()
    feats = trust.input_features(encode(np.zeros((0, 4), np.float32), spec), spec)
    assert all(np.isnan(v) for v in feats.values())


def test_too_few_calibration_scans_fail_before_anything_is_written():
    from airside_perception.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 20"):
        trust.calibrate(_rows(5, np.random.default_rng(5)), "segmentation", 0.002, 1.25, "own scans")


def test_calibrate_monitor_on_own_scans_writes_a_section_the_engine_loads(tmp_path, capsys):
    import shutil

    from airside_perception.pipelines import store
    from airside_perception.tools import engine_tool

    root = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")
    engines = tmp_path / "engines"
    shutil.copytree(os.path.join(root, "occupancy", "1.1.0"), engines / "occupancy" / "1.1.0")
    data = tmp_path / "own" / "velodyne"
    data.mkdir(parents=True)
    for k in range(24):
        pts = make_scan(100000 + k, "compact").points.copy()
        pts[:, 2] -= 1.73  # a sensor 1.73 m up
        pts.astype("<f4").tofile(str(data / f"{k:06d}.bin"))
    assert engine_tool.main(["calibrate-monitor", "--task", "occupancy", "--version", "1.1.0", "--engines-dir",
                             str(engines), "--data", f"semantickitti:{tmp_path / 'own'}",
                             "--sensor-pose", "0 0 1.73 0 0 0"]) == 0
    manifest = store.load_version(str(engines), "occupancy", "1.1.0")
    assert manifest.monitor["scans"] == 24 and "own scans" in manifest.monitor["split"]
    assert store.open_engine(manifest, "onnxruntime").monitor is not None
    (data / "000000.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(SystemExit) as exit_info:
        engine_tool.main(["calibrate-monitor", "--task", "occupancy", "--version", "1.1.0", "--engines-dir",
                          str(engines), "--data", f"semantickitti:{tmp_path / 'own'}"])
    assert exit_info.value.code == 2 and "float32" in capsys.readouterr().err
