"""The host's device frame loop, run on the NumPy device (no CUDA here): the same results as the
host path, per-task errors, the read-back failure that sends the host back to the host path,
and the trust statistics computed without selections."""

import os

import numpy as np
import pytest

from airside_perception.backends.onnxruntime_backend import OnnxRuntimeBackend
from airside_perception.errors import InferenceError
from airside_perception.ops import bev
from airside_perception.ops.device import HostDevice
from airside_perception.pipelines import store, trust
from airside_perception.pipelines.host import PerceptionHost
from airside_perception.pipelines.tasks import TaskEngine
from airside_perception.sim.world import make_scan
from airside_perception.simplex.decision import (
    ADVANCED,
    BASELINE,
    Evidence,
    SimplexParams,
    SimplexState,
    TaskReport,
    decide,
    merge_reports,
)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "..")
VERSIONS = {"segmentation": "2.2.0", "detection": "2.1.0", "occupancy": "1.1.0"}


class DeviceOnnx(OnnxRuntimeBackend):
    """ONNX Runtime behind the device-buffer interface (host arrays stand for device ones);
    ``fail`` makes the next launches raise as a CUDA error would."""

    supports_device_buffers = True
    fail = None

    def infer_device(self, feeds, stream_handle=None):
        if self.fail is not None:
            raise self.fail
        return self.infer(feeds)


class BrokenReadBack(HostDevice):
    def read_back(self, arrays, before_sync=None):
        raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")


def _engines(backend_class):
    out = []
    for task, version in VERSIONS.items():
        m = store.load_version(os.path.join(ROOT, "engines"), task, version)
        out.append(TaskEngine(m, backend_class(m.model_path, m.inputs, m.outputs, 1).activate()))
    return out


@pytest.fixture(scope="module")
def hosts():
    device = PerceptionHost(_engines(DeviceOnnx), "cpu", frame_device=HostDevice())
    reference = PerceptionHost(_engines(OnnxRuntimeBackend), "cpu")
    yield device, reference
    device.close()
    reference.close()


def _golden_clouds():
    data = np.load(os.path.join(ROOT, "engines", "segmentation", "2.2.0", "golden.npz"))
    return [data[k] for k in data.files if k.startswith("cloud_")]


def test_device_frames_equal_the_host_path(hosts):
    device, reference = hosts
    assert device.frame_loop().startswith("device")
    for cloud in _golden_clouds() + [make_scan(4242, "dense").points]:
        got, want = device.process(cloud), reference.process(cloud)
        assert got.frame_loop == "device" and want.frame_loop == "host"
        assert not got.errors and set(got.results) == set(VERSIONS)
        seg, ref = got.results["segmentation"], want.results["segmentation"]
        np.testing.assert_array_equal(seg.labels, ref.labels)
        np.testing.assert_allclose(seg.scores, ref.scores, rtol=1e-6)
        det, ref_det = got.results["detection"].boxes, want.results["detection"].boxes
        np.testing.assert_array_equal(det.labels, ref_det.labels)
        np.testing.assert_allclose(det.boxes, ref_det.boxes, rtol=1e-6)
        occ, ref_occ = got.results["occupancy"].grid, want.results["occupancy"].grid
        np.testing.assert_array_equal(occ.cells, ref_occ.cells)
        assert (occ.origin_x_m, occ.resolution_m) == (ref_occ.origin_x_m, ref_occ.resolution_m)
        for task in VERSIONS:
            assert got.results[task].confidence == pytest.approx(want.results[task].confidence, rel=1e-5)
            for name, value in want.results[task].features.items():
                assert got.results[task].features[name] == pytest.approx(value, rel=1e-4, nan_ok=True)
            assert got.trust[task].score == pytest.approx(want.trust[task].score, rel=1e-3)
        for name, value in want.input_features.items():
            assert got.input_features[name] == pytest.approx(value, rel=1e-4, abs=1e-6, nan_ok=True), name
        assert got.n_encoded == want.n_encoded
        assert {"upload_ms", "encode_ms", "read_back_ms", "segmentation.inference_ms"} <= set(got.parts)


def test_empty_and_all_nan_clouds_on_the_device(hosts):
    device, reference = hosts
    for cloud in (np.zeros((0, 4), np.float32), np.full((500, 4), np.nan, np.float32)):
        got, want = device.process(cloud), reference.process(cloud)
        assert not got.errors
        np.testing.assert_array_equal(got.results["segmentation"].labels, want.results["segmentation"].labels)
        assert got.results["segmentation"].confidence == want.results["segmentation"].confidence == 1.0
        assert np.isnan(got.input_features["ground_z_m"])


def test_a_failing_task_reports_and_the_simplex_falls_back_in_that_cycle():
    engines = _engines(DeviceOnnx)
    host = PerceptionHost(engines, "cpu", frame_device=HostDevice())
    try:
        engines[1].backend.fail = InferenceError("execute_async_v3 failed: cudaErrorLaunchFailure")
        frame = host.process(make_scan(77, "dense").points)
        assert "cudaErrorLaunchFailure" in frame.errors["detection"]
        assert set(frame.results) == {"segmentation", "occupancy"}
        assert host.frame_loop().startswith("device")  # a task's error is not the device's
        # the report the host publishes for this frame, and the simplex's decision on it
        reports = [TaskReport(t, frame.results[t].confidence if t in frame.results else 0.0,
                              error=frame.errors.get(t, "")) for t in VERSIONS]
        confidence, trust_value, errors, invalid = merge_reports(reports, list(VERSIONS))
        evidence = Evidence(True, True, 40.0, confidence, errors, True, 10.0, trust_value, invalid)
        state, reason = decide(SimplexState(active=ADVANCED), evidence, SimplexParams())
        assert (state.active, reason) == (BASELINE, "engine_error")
        engines[1].backend.fail = None
        assert not host.process(make_scan(78, "dense").points).errors
    finally:
        host.close()


def test_a_read_back_failure_fails_the_frame_and_leaves_the_device_path():
    host = PerceptionHost(_engines(DeviceOnnx), "cpu", frame_device=BrokenReadBack())
    try:
        cloud = make_scan(79, "dense").points
        frame = host.process(cloud)
        assert set(frame.errors) == set(VERSIONS) and not frame.results
        assert "illegal memory access" in frame.errors["segmentation"]
        assert host.frame_loop().startswith("host: the device failed the frame")
        after = host.process(cloud)
        assert after.frame_loop == "host" and not after.errors
    finally:
        host.close()


def test_engines_without_device_buffers_keep_the_host_path():
    host = PerceptionHost(_engines(OnnxRuntimeBackend), "cpu", frame_device=HostDevice())
    try:
        assert host.frame_loop() == "host: detection, occupancy, segmentation take host arrays only"
        assert host.process(make_scan(80, "dense").points).frame_loop == "host"
    finally:
        host.close()


def test_shadow_runs_get_the_input_of_device_frames(hosts):
    device, _ = hosts
    device.process(make_scan(81, "dense").points)
    assert device.latest_frame().bev is None
    device.keep_host_input = True
    cloud = make_scan(82, "dense").points
    device.process(cloud)
    kept = device.latest_frame().bev
    want = bev.encode(cloud, device.bev_spec)
    np.testing.assert_array_equal(kept.kept, want.kept)
    np.testing.assert_array_equal(kept.bev, want.bev)
    device.keep_host_input = False


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_input_statistics_without_selections_equal_the_numpy_ones(seed):
    spec = bev.BevSpec()
    for kind in ("dense", "compact"):
        encoded = bev.encode(make_scan(900 + seed, kind).points, spec)
        want = trust.input_features(encoded, spec)
        got = {k: float(v) for k, v in trust.input_features_on_device(encoded, spec, np).items()}
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-7, nan_ok=True), name


class BrokenEncoder(HostDevice):
    """A device whose encoding fails (where an asynchronous fault of the encode kernels surfaces)."""

    def encoder(self, spec):
        class Failing:
            def encode(self, points):
                raise RuntimeError("cudaErrorIllegalAddress while reading the encode sizes")
        return Failing()


def test_a_failure_before_the_read_back_fails_the_frame_not_the_host():
    host = PerceptionHost(_engines(DeviceOnnx), "cpu", frame_device=BrokenEncoder())
    try:
        frame = host.process(make_scan(83, "dense").points)
        assert set(frame.errors) == set(VERSIONS) and "cudaErrorIllegalAddress" in frame.errors["detection"]
        assert host.device_loop_failed and host.frame_loop().startswith("host: the device failed the frame")
        assert not host.process(make_scan(84, "dense").points).errors
    finally:
        host.close()


def test_non_finite_outputs_on_the_device_fail_that_task_alone():
    engines = _engines(DeviceOnnx)

    class NaNs(DeviceOnnx):
        def infer_device(self, feeds, stream_handle=None):
            out = self.infer(feeds)
            out["occupancy_logits"][0, 0, 0, 0] = np.nan
            return out

    occ = engines[2]
    engines[2] = TaskEngine(occ.manifest, NaNs(occ.manifest.model_path, occ.manifest.inputs, occ.manifest.outputs,
                                               1).activate())
    host = PerceptionHost(engines, "cpu", frame_device=HostDevice())
    try:
        frame = host.process(make_scan(85, "dense").points)
        assert set(frame.errors) == {"occupancy"} and "non-finite" in frame.errors["occupancy"]
        assert set(frame.results) == {"segmentation", "detection"}
    finally:
        host.close()


def test_a_swap_to_other_decode_parameters_on_the_device_equals_the_host_path():
    engines = _engines(DeviceOnnx)
    host = PerceptionHost(engines, "cpu", frame_device=HostDevice())
    reference = PerceptionHost(_engines(OnnxRuntimeBackend), "cpu")
    try:
        m = store.load_version(os.path.join(ROOT, "engines"), "detection", "1.1.0")
        old = host.slots["detection"].exchange(TaskEngine(m, DeviceOnnx(m.model_path, m.inputs, m.outputs, 1)
                                                          .activate()))
        old.close()
        ref_old = reference.slots["detection"].exchange(store.open_engine(m, "onnxruntime", 1))
        ref_old.close()
        cloud = make_scan(86, "dense").points
        got, want = host.process(cloud), reference.process(cloud)
        assert got.frame_loop == "device" and got.versions["detection"] == "1.1.0"
        np.testing.assert_allclose(got.results["detection"].boxes.boxes, want.results["detection"].boxes.boxes,
                                   rtol=1e-6)
    finally:
        host.close()
        reference.close()
