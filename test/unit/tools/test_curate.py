"""engine_tool curate: recordings read back into the SemanticKITTI layout, and bad input refused."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

rosbag = pytest.importorskip("rosbag")  # Debian's ROS packages (not in the Python 3.8 check)

from airside_perception.errors import ConfigError  # noqa: E402
from airside_perception.evaluation.semantickitti import load_class_map  # noqa: E402
from airside_perception.tools.curate import curate  # noqa: E402

CLOUD = "/airside_av/lidar/aggregated"


def _cloud(points, stamp):
    import rospy
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header

    fields = [PointField(n, 4 * i, PointField.FLOAT32, 1) for i, n in enumerate("x y z intensity".split())]
    return PointCloud2(header=Header(stamp=rospy.Time.from_sec(stamp), frame_id="base_link"), height=1,
                       width=len(points), fields=fields, is_bigendian=False, point_step=16,
                       row_step=16 * len(points), data=points.astype(np.float32).tobytes(), is_dense=True)


def _recordings(root, clouds_per_bag=3):
    """Two recordings of three clouds, the middle one triggered."""
    os.makedirs(root)
    rng = np.random.default_rng(0)
    index, clouds = [], {}
    for r in range(2):
        name = f"rec{r}.bag"
        stamps = [1_700_000_000.0 + 10 * r + 0.1 * k for k in range(clouds_per_bag)]
        with rosbag.Bag(os.path.join(root, name), "w") as bag:
            for s in stamps:
                pts = rng.uniform(-20, 20, (500, 4)).astype(np.float32)
                clouds[round(s, 6)] = pts
                msg = _cloud(pts, s)
                bag.write(CLOUD, msg, msg.header.stamp)
        trig = stamps[1]
        index.append({"stamp": trig, "triggers": ["low_confidence" if r == 0 else "mark"], "file": name,
                      "triggered": [[trig, ["low_confidence" if r == 0 else "mark"]]],
                      "versions": {"segmentation": "2.2.0"}, "trust": {"segmentation": 0.3}})
    with open(os.path.join(root, "index.jsonl"), "w") as fh:
        fh.writelines(json.dumps(e) + "\n" for e in index)
    return clouds


def test_export_reads_back(tmp_path):
    clouds = _recordings(str(tmp_path / "rec"))
    out = str(tmp_path / "out")
    summary = curate(str(tmp_path / "rec"), out, pre_labels="serving")
    assert summary["exported_clouds"] == 2 and summary["triggers"] == {"low_confidence": 1, "mark": 1}
    assert summary["versions"] == {"segmentation": {"2.2.0": 2}}
    for row in summary["scans"]:
        pts = np.fromfile(os.path.join(out, "velodyne", row["scan"] + ".bin"), np.float32).reshape(-1, 4)
        np.testing.assert_array_equal(pts, clouds[row["stamp"]])
        labels = np.fromfile(os.path.join(out, "labels", row["scan"] + ".label"), np.uint32)
        assert len(labels) == len(pts)  # no serving labels in these recordings: all 0, not labelled
        assert not labels.any()
    assert load_class_map(os.path.join(out, "class_map.yaml")).apply(np.array([1, 3])).tolist() == [0, 2]
    assert os.path.isfile(os.path.join(out, "summary.png"))
    only = curate(str(tmp_path / "rec"), str(tmp_path / "marks"), triggers=["mark"], pre_labels="serving")
    assert only["exported_clouds"] == 1
    ctx = curate(str(tmp_path / "rec"), str(tmp_path / "ctx"), context=True, pre_labels="serving")
    assert ctx["exported_clouds"] == 6


def test_bad_input_names_the_fix(tmp_path):
    _recordings(str(tmp_path / "rec"))
    os.makedirs(tmp_path / "full")
    open(tmp_path / "full" / "x", "w").close()
    with pytest.raises(ConfigError, match="--overwrite"):
        curate(str(tmp_path / "rec"), str(tmp_path / "full"))
    with pytest.raises(ConfigError, match="not a directory"):
        curate(str(tmp_path / "nowhere"), str(tmp_path / "o1"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(ConfigError, match="no index.jsonl"):
        curate(str(tmp_path / "empty"), str(tmp_path / "o2"))
    open(tmp_path / "empty" / "index.jsonl", "w").close()
    with pytest.raises(ConfigError, match="lists no recordings"):
        curate(str(tmp_path / "empty"), str(tmp_path / "o3"))
    with open(tmp_path / "rec" / "rec1.bag", "wb") as fh:
        fh.write(b"not a bag")
    with pytest.raises(ConfigError, match="rosbag reindex"):
        curate(str(tmp_path / "rec"), str(tmp_path / "o4"), pre_labels="serving")
    with open(tmp_path / "rec" / "index.jsonl", "a") as fh:
        fh.write("{broken\n")
    with pytest.raises(ConfigError, match="line 3"):
        curate(str(tmp_path / "rec"), str(tmp_path / "o5"))


def test_the_command_exits_2_with_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "airside_perception.tools.engine_tool", "curate", "--recordings",
                          str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "recordings_dir" in run.stderr


def test_the_recordings_are_never_an_export_target(tmp_path):
    _recordings(str(tmp_path / "rec"))
    for out in (tmp_path / "rec", tmp_path):
        with pytest.raises(ConfigError, match="overlap"):
            curate(str(tmp_path / "rec"), str(out), overwrite=True, pre_labels="serving")
    assert os.path.isfile(tmp_path / "rec" / "index.jsonl")
    os.makedirs(tmp_path / "notes")
    open(tmp_path / "notes" / "todo.txt", "w").close()
    with pytest.raises(ConfigError, match="not an earlier export"):
        curate(str(tmp_path / "rec"), str(tmp_path / "notes"), overwrite=True, pre_labels="serving")
    with pytest.raises(ConfigError, match="chosen recordings hold no triggered"):
        curate(str(tmp_path / "rec"), str(tmp_path / "none"), triggers=["engine_error"], pre_labels="serving")
    assert not (tmp_path / "none").exists()  # a failed run leaves nothing that refuses the next one
