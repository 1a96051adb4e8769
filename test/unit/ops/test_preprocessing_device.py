"""preprocessing_device: gpu falls back to the CPU, with the reason, where CUDA is missing."""

import numpy as np
import pytest

from airside_perception.ops.bev import BevSpec, encode
from airside_perception.ops.gpu import PreprocessingDevice


def test_gpu_without_cuda_falls_back_to_the_cpu_with_the_reason(monkeypatch):
    import airside_perception.ops.gpu as gpu

    def no_cupy():
        raise ImportError("No module named 'cupy'")

    monkeypatch.setattr(gpu, "_cp", no_cupy)
    device = PreprocessingDevice("gpu")
    assert device.device == "cpu" and "No module named 'cupy'" in device.fallback_reason
    pts = np.random.default_rng(0).uniform(-30, 30, (5000, 4)).astype(np.float32)
    np.testing.assert_array_equal(device.encode(pts, BevSpec()).bev, encode(pts, BevSpec()).bev)


def test_cpu_needs_no_fallback_and_bad_names_fail():
    assert PreprocessingDevice("cpu").fallback_reason == ""
    with pytest.raises(ValueError, match="cpu or gpu"):
        PreprocessingDevice("tpu")
