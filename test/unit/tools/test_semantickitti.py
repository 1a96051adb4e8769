"""The vehicle team's own labelled scans: SemanticKITTI layout, class maps, evaluate --data."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from airside_perception import classes
from airside_perception.errors import ConfigError
from airside_perception.evaluation import semantickitti
from airside_perception.frames import IntensityScale, pose_from_xyz_rpy, transform_points
from airside_perception.sim.world import make_scan
from airside_perception.tools import evaluate

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
CLASS_MAP = os.path.join(ROOT, "config", "class_maps", "semantickitti.yaml")
#: airside class -> a SemanticKITTI id that the shipped class map sends back to it
TO_KITTI = {"ground": 40, "vehicle": 10, "person": 30, "structure": 50, "unknown": 99, "aircraft": 0, "cart": 0,
            "cone": 0, "fod": 0}


def _write_kitti(root, seeds=(110000, 110001), labels_beside=False):
    """Synthetic scans written as a KITTI driver would: sensor frame 1.73 m up, intensity 0..1."""
    os.makedirs(os.path.join(root, "velodyne"))
    if not labels_beside:
        os.makedirs(os.path.join(root, "labels"))
    lut = np.array([TO_KITTI[n] for n in classes.CLASS_NAMES], np.uint32)
    for i, seed in enumerate(seeds):
        scan = make_scan(seed)
        pts = transform_points(scan.points.copy(), pose_from_xyz_rpy(0, 0, -1.73, 0, 0, 0))
        pts[:, 3] /= 255.0
        pts.astype("<f4").tofile(os.path.join(root, "velodyne", f"{i:06d}.bin"))
        ids = lut[scan.labels] | (np.uint32(7) << 16)  # instance ids in the high bits
        where = "velodyne" if labels_beside else "labels"
        ids.astype("<u4").tofile(os.path.join(root, where, f"{i:06d}.label"))
    return root


def test_shipped_class_map_maps_the_named_groups():
    cmap = semantickitti.load_class_map(CLASS_MAP)
    name = {v: k for k, v in classes.CLASS_IDS.items()}
    for kitti, airside in ((40, "ground"), (60, "ground"), (10, "vehicle"), (252, "vehicle"), (30, "person"),
                           (31, "person"), (50, "structure"), (80, "structure"), (81, "structure")):
        assert name[int(cmap.apply(np.array([kitti], np.uint32))[0])] == airside
    assert cmap.apply(np.array([0, 1], np.uint32)).tolist() == [255, 255]
    assert cmap.apply(np.array([(5 << 16) | 30], np.uint32))[0] == classes.PERSON  # instance bits ignored


@pytest.mark.parametrize("text, message", [
    ("labels: {10: spaceship}", "unknown class 'spaceship'"),
    ("labels: {abc: ground}", "must be an integer"),
    ("name: x", "must be a mapping"),
    ("labels: [1, 2", "not valid YAML"),
])
def test_bad_class_maps_name_the_fix(tmp_path, text, message):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        semantickitti.load_class_map(str(path))


def test_reader_moves_scans_into_base_link_and_the_engines_range(tmp_path):
    root = _write_kitti(str(tmp_path / "d"), seeds=(110000,), labels_beside=True)
    cmap = semantickitti.load_class_map(CLASS_MAP)
    scan = next(semantickitti.read_scans(root, cmap, pose_from_xyz_rpy(0, 0, 1.73, 0, 0, 0), IntensityScale(1.0)))
    truth = make_scan(110000)
    np.testing.assert_allclose(scan.points, truth.points, atol=2e-3)
    assert (scan.labels[truth.labels == classes.PERSON] == classes.PERSON).all()
    assert (scan.labels[truth.labels == classes.AIRCRAFT] == 255).all()


def test_label_file_of_the_wrong_length_is_refused(tmp_path):
    root = _write_kitti(str(tmp_path / "d"), seeds=(110000,))
    np.zeros(10, "<u4").tofile(os.path.join(root, "labels", "000000.label"))
    cmap = semantickitti.load_class_map(CLASS_MAP)
    with pytest.raises(ConfigError, match="10 labels for"):
        list(semantickitti.read_scans(root, cmap, np.eye(4), IntensityScale(1.0)))


def test_evaluate_on_own_scans_uses_pose_and_intensity(tmp_path, capsys):
    root = _write_kitti(str(tmp_path / "d"))
    good, bad = str(tmp_path / "good.json"), str(tmp_path / "bad.json")
    base = ["--task", "segmentation", "--version", "1.2.0", "--data", f"semantickitti:{root}",
            "--class-map", CLASS_MAP, "--json"]
    assert evaluate.main(base + [good, "--sensor-pose", "0 0 1.73 0 0 0", "--intensity-max", "1.0"]) == 0
    assert evaluate.main(base + [bad]) == 0  # the user forgot the pose and the scale
    good_m, bad_m = (json.load(open(p))["segmentation"] for p in (good, bad))
    assert set(good_m) >= {"miou", "iou"}
    assert good_m["miou"] > 90.0 and good_m["iou"]["person"] > 80.0
    assert bad_m["miou"] < good_m["miou"] - 20.0
    # the results say what they measured, and the forgotten settings were named with the fix
    assert good_m["version"] == "1.2.0" and len(good_m["model_sha256"]) == 64 and good_m["backend"] == "onnxruntime"
    assert good_m["machine"] and "--version 1.2.0" in good_m["command"] and good_m["warnings"] == []
    assert any("--intensity-max 1" in w for w in bad_m["warnings"]), bad_m["warnings"]
    assert any("--sensor-pose '0 0 1." in w for w in bad_m["warnings"]), bad_m["warnings"]
    err = capsys.readouterr().err
    assert "warning: every intensity is under a tenth" in err and "the ground lies at z = -1." in err
    # a confusion matrix and figures by range band, for the team's own data
    confusion = good_m["confusion"]
    assert confusion["classes"][2] == "person" and sum(map(sum, confusion["points"])) == good_m["points"]
    assert set(good_m["by_range"]) == {"0-20m", "20-40m", "40m+"} and good_m["by_range"]["0-20m"]["points"] > 0
    assert "labelled \\ predicted" in err


def test_evaluate_defaults_to_the_configured_version_and_takes_one_per_task(tmp_path, capsys):
    from airside_perception.tools.bench import configured_versions

    root = _write_kitti(str(tmp_path / "d"), seeds=(110000,))
    out = str(tmp_path / "not" / "yet" / "there.json")  # the folder is created before the work
    base = ["--task", "segmentation", "--data", f"semantickitti:{root}", "--class-map", CLASS_MAP,
            "--sensor-pose", "0 0 1.73 0 0 0", "--intensity-max", "1.0", "--json", out]
    assert evaluate.main(base) == 0
    m = json.load(open(out))["segmentation"]
    assert m["version"] == configured_versions()["segmentation"]
    assert evaluate.main(base + ["--version", "detection=1.0.0", "--version", "segmentation=1.2.0"]) == 0
    assert json.load(open(out))["segmentation"]["version"] == "1.2.0"
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(base + ["--version", "lidar=1.0.0"])
    assert exit_info.value.code == 2 and "not one of the tasks" in capsys.readouterr().err


def test_a_version_without_a_monitor_reports_shift_as_unknown(tmp_path):
    root = _write_kitti(str(tmp_path / "d"), seeds=(110000,))
    engines = tmp_path / "engines"
    shutil.copytree(os.path.join(ROOT, "engines", "segmentation", "1.2.0"), engines / "segmentation" / "1.2.0")
    manifest = engines / "segmentation" / "1.2.0" / "manifest.yaml"
    text = manifest.read_text()
    manifest.write_text(text[:text.index("\nmonitor:")] + "\n")  # as a fresh export, quantize or fold writes it
    out = str(tmp_path / "m.json")
    assert evaluate.main(["--task", "segmentation", "--version", "1.2.0", "--engines-dir", str(engines), "--data",
                          f"semantickitti:{root}", "--class-map", CLASS_MAP, "--sensor-pose", "0 0 1.73 0 0 0",
                          "--intensity-max", "1.0", "--json", out]) == 0
    assert json.load(open(out))["segmentation"]["frames_out_of_distribution"] is None


@pytest.mark.parametrize("args, message", [
    (["--data", "semantickitti:/nonexistent"], "no velodyne/ directory"),
    (["--data", "kitti:/tmp"], "semantickitti:DIR"),
    (["--data", "semantickitti:{root}"], "needs --class-map"),
    (["--data", "semantickitti:{root}", "--class-map", "/nonexistent.yaml"], "does not exist"),
    (["--data", "semantickitti:{root}", "--class-map", CLASS_MAP, "--sensor-pose", "1 2"], "x y z roll pitch yaw"),
    (["--data", "semantickitti:{empty}", "--class-map", CLASS_MAP], "no label file"),
])
def test_bad_requests_get_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    root = _write_kitti(str(tmp_path / "d"), seeds=(110000,))
    empty = tmp_path / "e"
    (empty / "velodyne").mkdir(parents=True)
    np.zeros(8, "<f4").tofile(str(empty / "velodyne" / "000000.bin"))
    args = [a.format(root=root, empty=str(empty)) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--task", "segmentation"] + args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_kitti_clouds_come_back_in_base_link_with_engine_intensity(tmp_path):
    root = _write_kitti(str(tmp_path / "kitti"))
    for name in os.listdir(os.path.join(root, "labels")):  # a bare recording: scans only
        os.remove(os.path.join(root, "labels", name))
    clouds = semantickitti.kitti_clouds(root)
    assert [c.name for c in clouds] == ["000000.bin", "000001.bin"]
    original = make_scan(110000).points
    np.testing.assert_allclose(clouds[0].points, original, rtol=1e-5, atol=1e-4)
    assert (clouds[0].labels == classes.UNLABELLED).all()
