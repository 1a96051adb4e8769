"""The model engineer's guide runs as written: every command of its ```bash blocks, in order, at
its smallest size, so the documentation cannot drift from the tools.

The commands are taken from docs/model_engineer.md and run with three kinds of rewrite, all
listed here and nothing else:
- sizes: a training budget becomes 2 steps, a bag 2 frames (the "smallest size" of each command);
- data: the guide's example directories (/data/site_a, ...) become small labelled sets written
  here in the same layouts (SemanticKITTI for points, KITTI object for boxes);
- outputs: files a command writes land in a temporary directory, and engine_tool works on a
  temporary engines root, so the test never touches the package's engines/ or docs/.
A ``rosrun`` line runs where the workspace is built (make test), and is skipped otherwise.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GUIDE = os.path.join(ROOT, "docs", "model_engineer.md")
SIZES = [(r"--minutes \d+(\.\d+)?", "--steps 2 --workers 1 --batch 1"), (r"--frames \d+", "--frames 2")]


def guide_commands(path: str = GUIDE):
    """Every command line of the guide's bash blocks (continuations joined, comments dropped)."""
    with open(path) as fh:
        text = fh.read()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)  # a trailing "# ..." is the guide's comment
            if words:
                out.append(shlex.join(words))
    return out


def _semantickitti(root: str, seeds=(110000, 110001)) -> str:
    from airside_perception import classes
    from airside_perception.frames import pose_from_xyz_rpy, transform_points
    from airside_perception.sim.world import make_scan

    to_kitti = {"ground": 40, "vehicle": 10, "person": 30, "structure": 50, "unknown": 99, "aircraft": 0,
                "cart": 0, "cone": 0, "fod": 0}
    os.makedirs(os.path.join(root, "velodyne"))
    os.makedirs(os.path.join(root, "labels"))
    lut = np.array([to_kitti[n] for n in classes.CLASS_NAMES], np.uint32)
    for i, seed in enumerate(seeds):
        scan = make_scan(seed, "compact")
        pts = transform_points(scan.points.copy(), pose_from_xyz_rpy(0, 0, -1.73, 0, 0, 0))
        pts[:, 3] /= 255.0
        pts.astype("<f4").tofile(os.path.join(root, "velodyne", f"{i:06d}.bin"))
        lut[scan.labels].astype("<u4").tofile(os.path.join(root, "labels", f"{i:06d}.label"))
    return root


def _kitti_boxes(root: str) -> str:
    sys.path.insert(0, os.path.join(ROOT, "test", "unit", "tools"))
    from test_kitti_object import _write

    return _write(root)


@pytest.mark.slow
def test_every_command_of_the_model_engineers_guide_runs(tmp_path):
    commands = guide_commands()
    assert len(commands) >= 8, "the guide's command blocks were not found"
    out = tmp_path / "out"
    out.mkdir()
    engines = tmp_path / "engines"
    engines.mkdir()
    # 20 validation scans: the fewest the monitor calibrates on
    data = {"/data/site_a_val": _semantickitti(str(tmp_path / "site_a_val"), range(110002, 110022)),
            "/data/site_a_boxes": _kitti_boxes(str(tmp_path / "site_a_boxes")),
            "/data/site_a": _semantickitti(str(tmp_path / "site_a"))}
    # the built workspace's path first (its package carries the generated messages), then src
    src = os.path.join(ROOT, "src")
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.abspath(p) != src]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [src]))
    ran = []
    for command in commands:
        line = command
        for pattern, small in SIZES:
            line = re.sub(pattern, small, line)
        for example, real in data.items():
            line = line.replace(example, real)
        line = line.replace("/tmp/site_a", str(tmp_path / "site_a_run"))
        words = shlex.split(line)
        for flag in ("--out", "--json", "--out-dir"):  # outputs into the temporary directory
            if flag in words:
                k = words.index(flag) + 1
                if not os.path.isabs(words[k]):
                    words[k] = str(out / words[k])
        if words[0] == "engine_tool":
            words = [sys.executable, "-m", "airside_perception.tools.engine_tool"] + words[1:] + [
                "--engines-dir", str(engines)]
        elif words[0] == "python":
            words[0] = sys.executable
        elif words[0] == "rosrun":
            if shutil.which("rosrun") is None or subprocess.run(["rospack", "find", "airside_perception"],
                                                                capture_output=True).returncode:
                continue  # the workspace is not built here: make test runs it
        result = subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"guide command failed ({result.returncode}): {command}\n" \
                                       f"ran: {' '.join(words)}\n{result.stderr[-2000:]}"
        ran.append(command)
    assert any("training.train" in c for c in ran) and any("kitti:" in c for c in ran)
    assert (out / "site_a.json").exists() and (out / "site_a_boxes.json").exists()
    assert os.path.isfile(engines / "segmentation" / "1.2.0-site-a" / "manifest.yaml")
    with open(engines / "segmentation" / "1.2.0-site-a" / "manifest.yaml") as fh:
        assert "monitor:" in fh.read(), "calibrate-monitor wrote the monitor of the exported version"
