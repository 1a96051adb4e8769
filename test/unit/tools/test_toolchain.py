"""The offline toolchain as a model engineer uses it: refusals before any work, no partial
versions, per-task versions, results that say what they measured, list and compare."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from airside_perception import cli
from airside_perception.tools import versions

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


def _tool(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "airside_perception.tools.engine_tool", *args],
                          capture_output=True, text=True, cwd=cwd)


def _root(tmp_path, *pairs):
    root = tmp_path / "engines"
    for task, version in pairs:
        shutil.copytree(os.path.join(ENGINES, task, version), root / task / version)
    return root


def test_task_versions_take_one_for_all_or_one_per_task():
    defaults = {"segmentation": "2.2.0", "detection": "2.1.0", "occupancy": "1.1.0"}
    tasks = list(defaults)
    assert cli.task_versions(None, tasks, defaults) == defaults
    assert cli.task_versions(["1.0.0"], tasks, defaults) == dict.fromkeys(tasks, "1.0.0")
    assert cli.task_versions(["detection=1.1.0"], tasks, defaults)["detection"] == "1.1.0"
    assert cli.task_versions(["1.0.0", "occupancy=1.2.0"], tasks, defaults)["occupancy"] == "1.2.0"
    for bad, message in ((["lidar=1"], "not one of the tasks"), (["detection="], "give a version")):
        with pytest.raises(ValueError, match=message):
            cli.task_versions(bad, tasks, defaults)


def test_writable_file_creates_the_folder_and_refuses_a_folder(tmp_path):
    path = str(tmp_path / "a" / "b" / "out.json")
    assert cli.writable_file(path) == path and os.path.isdir(tmp_path / "a" / "b")
    with pytest.raises(Exception, match="is a folder"):
        cli.writable_file(str(tmp_path))


@pytest.mark.parametrize("verb, extra", [
    ("export", ["--version", "2.2.0", "--checkpoint", "/nonexistent.pt"]),
    ("quantize", ["--version", "2.2.0", "--out-version", "2.2.0"]),
    ("fold", ["--version", "2.2.0", "--out-version", "2.2.0"]),
])
def test_a_version_that_exists_is_refused_before_any_work_and_nothing_is_left(tmp_path, verb, extra):
    root = _root(tmp_path, ("segmentation", "2.2.0"))
    before = sorted(os.listdir(root / "segmentation"))
    res = _tool(verb, "--task", "segmentation", "--engines-dir", str(root), *extra)
    assert res.returncode == 2, res.stderr
    assert "exists" in res.stderr and "--overwrite" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(root / "segmentation")) == before, "no hidden or partial files in engines/"
    help_text = _tool(verb, "--help").stdout
    assert "--overwrite" in help_text, "the refusal's advice must exist"


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_fold_writes_a_complete_version_and_overwrite_replaces_it_atomically(tmp_path):
    root = _root(tmp_path, ("segmentation", "1.2.0"))
    res = _tool("fold", "--task", "segmentation", "--version", "1.2.0", "--out-version", "1.2.1",
                "--engines-dir", str(root))
    assert res.returncode == 0, res.stderr
    names = sorted(os.listdir(root / "segmentation"))
    assert names == ["1.2.0", "1.2.1"], names
    made = set(os.listdir(root / "segmentation" / "1.2.1"))
    assert {"manifest.yaml", "model.onnx", "golden.npz", "fold.json"} <= made
    res = _tool("fold", "--task", "segmentation", "--version", "1.2.0", "--out-version", "1.2.1", "--overwrite",
                "--engines-dir", str(root))
    assert res.returncode == 0, res.stderr
    assert sorted(os.listdir(root / "segmentation")) == ["1.2.0", "1.2.1"]


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_training_refuses_to_overwrite_an_earlier_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "curve.csv").write_text("step,loss\n")
    res = subprocess.run([sys.executable, "-m", "airside_perception.training.train", "--out-dir", str(out),
                          "--steps", "1"], capture_output=True, text=True)
    assert res.returncode == 2 and "earlier run" in res.stderr and "--resume" in res.stderr, res.stderr
    assert (out / "curve.csv").read_text() == "step,loss\n"


def test_list_shows_every_version_its_trust_gate_latency_and_what_serves(tmp_path):
    root = _root(tmp_path, ("segmentation", "2.2.0"), ("segmentation", "1.4.0"), ("detection", "2.1.0"))
    made = root / "segmentation" / "2.3.0"  # a version the engineer just made (unsigned)
    shutil.copytree(root / "segmentation" / "2.2.0", made)
    manifest = made / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("version: 2.2.0", "version: 2.3.0"))
    sha = versions.load_manifest(str(made), verify_checksum=False).sha256
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "core.json").write_text(json.dumps({"model_sha256": {"segmentation": sha}, "rows": {
        "segmentation (inference + post, 2 threads)": {"p50": 9.5, "p99": 11.75}}}))
    state = tmp_path / "state.yaml"
    state.write_text("segmentation: 2.3.0\n")
    rows = versions.list_versions(str(root), ("segmentation", "detection"), str(bench), "",
                                  versions.serving_versions(str(state)))
    by = {(r["task"], r["version"]): r for r in rows}
    assert set(by) == {("segmentation", "1.4.0"), ("segmentation", "2.2.0"), ("segmentation", "2.3.0"),
                       ("detection", "2.1.0")}
    assert by[("segmentation", "2.2.0")]["trust"] == "bundled" and by[("segmentation", "2.3.0")]["trust"] == "unsigned"
    assert by[("segmentation", "2.3.0")]["serving"] and not by[("segmentation", "2.2.0")]["serving"]
    assert (by[("segmentation", "2.3.0")]["p50_ms"], by[("segmentation", "2.3.0")]["p99_ms"]) == (9.5, 11.75)
    assert by[("segmentation", "2.2.0")]["p50_ms"] == 9.5, "the same model file: the same measurement"
    assert by[("segmentation", "2.2.0")]["gate"] == "pass vs 1.4.0" and by[("detection", "2.1.0")]["accuracy"] > 50
    table = versions.list_table(rows)
    assert "SERVING" in table and "not measured" in table and "9.5/11.8" in table
    res = _tool("list", "--engines-dir", str(root), "--task", "detection")
    assert res.returncode == 0 and "detection  2.1.0" in res.stdout and "segmentation" not in res.stdout.split("\n")[1]


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_compare_two_versions_in_one_run(tmp_path):
    root = _root(tmp_path, ("segmentation", "2.2.0"), ("segmentation", "2.0.0"))
    out = tmp_path / "cmp"
    res = _tool("compare", "--task", "segmentation", "2.2.0", "2.0.0", "--engines-dir", str(root), "--scans", "2",
                "--out-dir", str(out))
    assert res.returncode == 0, res.stderr
    result = json.loads((out / "compare.json").read_text())
    assert result["clouds"] == 2 and set(result["latency"]) == {"2.2.0", "2.0.0"}
    assert 0.0 < result["agreement"]["mean"] <= 1.0 and result["latency_ratio"] > 0
    assert set(result["accuracy"]["2.0.0"]["iou"]) >= {"person", "ground"}
    assert result["versions"]["2.0.0"]["model_sha256"] and result["machine"]
    assert (out / "compare.png").stat().st_size > 5000
    assert "person" in res.stdout and "latency P99" in res.stdout and "agreement of B with A" in res.stdout
    same = _tool("compare", "--task", "segmentation", "2.2.0", "2.2.0", "--engines-dir", str(root))
    assert same.returncode == 2 and "give two versions" in same.stderr


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_bench_as_documented_works_in_a_fresh_clone_and_names_what_it_measured(tmp_path):
    res = _tool("bench", "--runs", "2", "--clouds", "1", cwd=str(tmp_path))  # no bench_results/ there yet
    assert res.returncode == 0, res.stderr
    result = json.loads((tmp_path / "bench_results" / "core.json").read_text())
    assert set(result["model_sha256"]) == {"segmentation", "detection", "occupancy"} and result["machine"]
    assert result["versions"] == versions.serving_versions("/nonexistent/state.yaml")  # the configured ones


def test_engine_tool_is_on_the_venvs_path_after_setup():
    tool = os.path.join(os.path.dirname(sys.executable), "engine_tool")
    if not os.path.exists(tool):
        pytest.skip("make setup writes the venv's engine_tool; this interpreter is not that venv")
    res = subprocess.run([tool, "list", "--task", "occupancy"], capture_output=True, text=True, cwd="/")
    assert res.returncode == 0 and "occupancy" in res.stdout, res.stderr


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_a_training_run_that_fails_leaves_no_directory(tmp_path):
    out = tmp_path / "new_run"
    res = subprocess.run([sys.executable, "-m", "airside_perception.training.train", "--out-dir", str(out),
                          "--steps", "1", "--init", "segmentation=/nonexistent.pt"], capture_output=True, text=True)
    assert res.returncode == 2 and "--init" in res.stderr
    assert not out.exists()


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_compress_exits_1_when_its_final_version_fails_its_gates(tmp_path, monkeypatch, capsys):
    """The exit code only: the compression itself is tested in test/unit/compression."""
    from airside_perception.compression import pipeline
    from airside_perception.tools import engine_tool

    class Finished:
        def __init__(self, recipe, out_version, *args, **kwargs):
            self.out_version, self.work = out_version, str(tmp_path)

        def train(self, stop_after):
            pass

        def export(self, budget_ms, overwrite=False):
            row = {"version": self.out_version, "params": 1, "cpu": {"p99_ms": 1.0},
                   "baseline_cpu_same_run": {"p99_ms": 1.0}, "accuracy": {"metric": 1.0}}
            return {"rows": [{**row, "gates_passed": False, "failed_gates": ["person_iou_drop"]}],
                    "report": str(tmp_path / "report.md")}
    monkeypatch.setattr(pipeline, "Compressor", Finished)
    monkeypatch.chdir(os.path.join(ENGINES, ".."))  # the recipe's paths are relative to the repository
    root = _root(tmp_path, ("segmentation", "1.2.0"))  # the recipe's base
    code = engine_tool.main(["compress", "--task", "segmentation", "--recipe", "config/compression/segmentation.yaml",
                             "--out-version", "9.9.9", "--engines-dir", str(root)])
    assert code == 1 and "does not pass its gates" in capsys.readouterr().err


@pytest.mark.slow  # PyTorch or whole runs: the 3.11 pass only
def test_calibrate_monitor_and_training_warn_when_the_settings_contradict_the_scans(tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from test_guide import _semantickitti

    data = _semantickitti(str(tmp_path / "scans"), range(110030, 110050))  # 20: the monitor's least
    root = _root(tmp_path, ("segmentation", "1.2.0"))
    res = _tool("calibrate-monitor", "--task", "segmentation", "--version", "1.2.0", "--engines-dir", str(root),
                "--data", f"semantickitti:{data}")  # the pose and the 0..1 scale forgotten
    assert "warning: every intensity is under a tenth" in res.stderr and "--sensor-pose '0 0 1." in res.stderr
    res = subprocess.run([sys.executable, "-m", "airside_perception.training.train", "--out-dir",
                          str(tmp_path / "run"), "--steps", "1", "--workers", "1", "--batch", "1", "--data",
                          f"semantickitti:{data}", "--class-map",
                          os.path.join(ENGINES, "..", "config", "class_maps", "semantickitti.yaml")],
                         capture_output=True, text=True, timeout=600)
    assert "training: warning: every intensity is under a tenth" in res.stderr, res.stderr[-2000:]


def test_rosrun_engine_tool_runs_beside_the_venvs_own(tmp_path):
    if shutil.which("rosrun") is None or subprocess.run(["rospack", "find", "airside_perception"],
                                                        capture_output=True).returncode:
        pytest.skip("no built workspace sourced here (make test runs this)")
    res = subprocess.run(["rosrun", "airside_perception", "engine_tool", "list", "--task", "occupancy"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and "occupancy" in res.stdout, res.stdout + res.stderr


def test_a_killed_packaging_leaves_nothing_the_next_one_keeps_and_versions_are_readable(tmp_path):
    from airside_perception.ota.package import package_version

    root = _root(tmp_path, ("occupancy", "1.1.0"))
    leftover = root / "occupancy" / ".tmp-1.1.1-killed"
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"partial")
    made = package_version(os.path.join(root, "occupancy", "1.1.0", "model.onnx"), "occupancy", "1.1.1", str(root))
    assert sorted(os.listdir(root / "occupancy")) == ["1.1.0", "1.1.1"]
    assert os.stat(made.directory).st_mode & 0o755 == 0o755


@pytest.mark.slow  # PyTorch: the 3.11 pass only
def test_training_overwrite_keeps_the_earlier_run_when_the_command_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "curve.csv").write_text("step,loss\n")
    base = [sys.executable, "-m", "airside_perception.training.train", "--out-dir", str(out), "--steps", "1"]
    res = subprocess.run(base + ["--overwrite", "--init", "segmentation=/nonexistent.pt"], capture_output=True,
                         text=True)
    assert res.returncode == 2 and (out / "curve.csv").exists(), "a refused command must not delete the run"
    res = subprocess.run(base + ["--overwrite", "--resume"], capture_output=True, text=True)
    assert res.returncode == 2 and "give one of them" in res.stderr
    nested = tmp_path / "a" / "b" / "c"
    res = subprocess.run([sys.executable, "-m", "airside_perception.training.train", "--out-dir", str(nested),
                          "--steps", "1", "--init", "segmentation=/nonexistent.pt"], capture_output=True, text=True)
    assert res.returncode == 2 and not (tmp_path / "a").exists(), "no empty parent left either"
