import subprocess
import sys

import numpy as np


def _run(*args):
    return subprocess.run([sys.executable, "-m", "airside_perception.sim", *args],
                          capture_output=True, text=True)


def test_scan_writes_npz(tmp_path):
    out = tmp_path / "s.npz"
    res = _run("scan", "--seed", "3", "--density", "compact", "--out", str(out))
    assert res.returncode == 0, res.stderr
    data = np.load(out)
    assert data["points"].shape[1] == 4 and len(data["labels"]) == len(data["points"])
    assert list(data["class_names"])[:3] == ["ground", "aircraft", "person"]


def _one_line_error(res, needle):
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_unknown_flag(tmp_path):
    _one_line_error(_run("scan", "--seed", "1", "--out", str(tmp_path / "a.npz"), "--bogus"), "--bogus")


def test_negative_frame_count(tmp_path):
    _one_line_error(_run("bag", "--seed", "1", "--frames", "-3", "--out", str(tmp_path / "a.bag")),
                    "must be 1 or more")


def test_unwritable_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a file where the folder would go: the folder cannot be created
    _one_line_error(_run("scan", "--seed", "1", "--out", str(blocker / "dir" / "a.npz")), "cannot be created")
