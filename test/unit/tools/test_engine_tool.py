import json
import os
import shutil
import subprocess
import sys

import pytest

from airside_perception.backends.trt_plan import make_plan, trtexec_command
from airside_perception.errors import ConfigError
from airside_perception.pipelines import store

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


def test_build_plan_for_orin_dla_int8_with_dynamic_points():
    m = store.load_version(ENGINES, "segmentation", "1.0.0")
    plan = make_plan(m, "int8", "8.5.2", "8.7", dla_core=1, points=(30_000, 100_000, 200_000))
    assert plan.profiles["point_cells"] == ((30_000,), (100_000,), (200_000,))
    assert plan.profiles["point_features"][2] == (200_000, 5) and plan.profiles["bev"][0] == (1, 8, 256, 256)
    assert os.path.basename(plan.engine_path).startswith(f"{m.sha256[:12]}_trt8.5.2_sm87_dla1_int8_")
    assert plan.calibration_cache_path.endswith(".calib") and not plan.explicit_quantization
    assert any("static shapes" in n for n in plan.notes)
    cmd = trtexec_command(plan)
    assert cmd[0] == "trtexec" and "--int8" in cmd and "--fp16" in cmd
    assert "--useDLACore=1" in cmd and "--allowGPUFallback" in cmd
    assert "--minShapes=bev:1x8x256x256,point_cells:30000,point_features:30000x5" in cmd
    assert "--maxShapes=bev:1x8x256x256,point_cells:200000,point_features:200000x5" in cmd
    assert any(c.startswith("--timingCacheFile=") for c in cmd) and any(c.startswith("--calib=") for c in cmd)


def test_plan_of_a_qdq_model_uses_explicit_quantization_and_static_shapes():
    m = store.load_version(ENGINES, "detection", "1.0.0-int8")
    plan = make_plan(m, "int8", "10.3.0", "8.7")
    cmd = trtexec_command(plan)
    assert plan.explicit_quantization and plan.calibration_cache_path is None
    assert not any(c.startswith(("--calib", "--minShapes", "--useDLACore")) for c in cmd)
    with pytest.raises(ConfigError, match="Q/DQ INT8 model"):
        make_plan(m, "fp16", "10.3.0", "8.7")
    assert make_plan(m, "int8", "10.3.0", "8.9").key != plan.key


def test_bad_plans():
    m = store.load_version(ENGINES, "occupancy", "1.0.0")
    with pytest.raises(ConfigError, match="precision"):
        make_plan(m, "int4", "8.5.2", "8.7")
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        make_plan(m, "fp16", "8.5.2", "8.7", points=(200_000, 100_000, 30_000))


def _tool(*args):
    return subprocess.run([sys.executable, "-m", "airside_perception.tools.engine_tool", *args],
                          capture_output=True, text=True)


def test_build_without_tensorrt_plans_and_says_so(tmp_path):
    root = tmp_path / "engines"
    shutil.copytree(os.path.join(ENGINES, "occupancy", "1.0.0"), root / "occupancy" / "1.0.0")
    res = _tool("build", "--task", "occupancy", "--version", "1.0.0", "--engines-dir", str(root),
                "--precision", "fp16", "--tensorrt-version", "8.5.2", "--compute-capability", "8.7")
    assert res.returncode == 3 and "TensorRT is not installed here" in res.stderr
    assert "trtexec --onnx=" in res.stdout
    assert not list((root / "occupancy" / "1.0.0").glob("*.engine")), "no engine may pretend to exist"
    res = _tool("build", "--task", "occupancy", "--version", "1.0.0", "--engines-dir", str(root), "--precision",
                "int8")  # as documented: without the target, the plan is for the Orin
    assert res.returncode == 3 and "TensorRT 8.5.2 on compute capability 8.7" in res.stderr
    assert "_trt8.5.2_sm87_" in res.stdout and "trtexec --onnx=" in res.stdout


@pytest.mark.slow
def test_badly_calibrated_int8_fails_the_gates_by_name(tmp_path):
    root = tmp_path / "engines"
    shutil.copytree(os.path.join(ENGINES, "segmentation", "1.0.0"), root / "segmentation" / "1.0.0")
    res = _tool("quantize", "--task", "segmentation", "--version", "1.0.0", "--out-version", "bad",
                "--engines-dir", str(root), "--calibration-intensity-scale", "0.004", "--calibration-z-offset-m", "8")
    assert res.returncode == 0, res.stderr
    assert "coverage: day" in res.stdout
    res = _tool("validate", "--task", "segmentation", "--baseline", "1.0.0", "--candidate", "bad",
                "--engines-dir", str(root), "--scans", "12", "--frames", "20")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL  person_iou_drop" in res.stdout
    report = json.loads((root / "segmentation" / "bad" / "gate_report.json").read_text())
    assert not report["passed"] and report["candidate_sha256"]
    md = (root / "segmentation" / "bad" / "gate_report" / "gate_report.md").read_text()
    assert "person_iou_drop | **no**" in md and "confusion_matrix.png" in md
    assert (root / "segmentation" / "bad" / "gate_report" / "latency_histogram.png").stat().st_size > 1000


def test_quantize_refuses_incomplete_coverage(tmp_path):
    root = tmp_path / "engines"
    shutil.copytree(os.path.join(ENGINES, "occupancy", "1.0.0"), root / "occupancy" / "1.0.0")
    res = _tool("quantize", "--task", "occupancy", "--version", "1.0.0", "--out-version", "x",
                "--engines-dir", str(root), "--scans", "2", "--only", "night")
    assert res.returncode == 2 and "lacks" in res.stderr and "day" in res.stderr


def test_fp8_quantize_writes_e4m3_qdq_that_onnxruntime_runs_close_to_float(tmp_path):
    pytest.importorskip("torch")  # the FP8 cast is PyTorch's (offline tools)
    import numpy as np
    import onnx
    from onnx import TensorProto

    from airside_perception.backends.select import create_backend
    from airside_perception.ops.bev import BevSpec, encode
    from airside_perception.sim.world import make_scan

    root = tmp_path / "engines"
    shutil.copytree(os.path.join(ENGINES, "occupancy", "1.1.0"), root / "occupancy" / "1.1.0")
    res = _tool("quantize", "--task", "occupancy", "--version", "1.1.0", "--out-version", "1.1.0-fp8",
                "--precision", "fp8", "--engines-dir", str(root), "--scans", "16")
    assert res.returncode == 0, res.stderr
    m = store.load_version(str(root), "occupancy", "1.1.0-fp8")
    assert m.precision == "fp8"
    model = onnx.load(m.model_path)
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    fp8_weights = [i for i in model.graph.initializer
                   if i.data_type == TensorProto.FLOAT8E4M3FN and i.name.endswith("_fp8")]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(fp8_weights) == len(convs) - 1  # every convolution but the kept-float head
    record = json.loads((root / "occupancy" / "1.1.0-fp8" / "calibration.json").read_text())
    assert record["precision"] == "fp8" and record["kept_float"] == ["/refine/refine.2/Conv"]
    feeds = {"bev": encode(make_scan(110000, "default").points, BevSpec()).bev}
    with create_backend(store.load_version(str(root), "occupancy", "1.1.0"), "onnxruntime") as ref_backend:
        ref = ref_backend.infer(feeds)["occupancy_logits"]
    backend = create_backend(m, "onnxruntime")
    assert backend.optimization == "basic"  # ONNX Runtime's extended rewrites miscompute FP8 Q/DQ
    with backend:
        got = backend.infer(feeds)["occupancy_logits"]
    assert 0.0 < float(np.abs(got - ref).max()) < 4.0  # FP8 rounding (3 mantissa bits), not garbage
    assert float(((got > 0) == (ref > 0)).mean()) > 0.99
    plan = make_plan(m, "fp8", "10.3.0", "9.0")
    assert plan.explicit_quantization and "--fp8" in trtexec_command(plan)
    with pytest.raises(ConfigError, match="compute capability 8.9 or later"):
        make_plan(m, "fp8", "10.3.0", "8.7")  # the Orin has no FP8 tensor cores
    with pytest.raises(ConfigError, match="Q/DQ FP8 model"):
        make_plan(m, "int8", "10.3.0", "9.0")
    with pytest.raises(ConfigError, match="--precision fp8"):
        make_plan(store.load_version(str(root), "occupancy", "1.1.0"), "fp8", "10.3.0", "9.0")
