import os

import numpy as np
import pytest

from airside_perception.backends.select import create_backend
from airside_perception.errors import ConfigError, InferenceError, ModelLoadError
from airside_perception.pipelines import store

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")


@pytest.fixture(scope="module")
def occupancy():
    return store.load_version(ENGINES, "occupancy", "1.0.0")


def test_onnxruntime_runs_and_checks_inputs(occupancy):
    with create_backend(occupancy, "onnxruntime") as backend:
        out = backend.infer({"bev": np.zeros((1, 8, 256, 256), np.float32)})
        assert out["occupancy_logits"].shape == (1, 4, 256, 256)
        with pytest.raises(InferenceError, match="is float64, the engine takes float32"):
            backend.infer({"bev": np.zeros((1, 8, 256, 256))})
        with pytest.raises(InferenceError, match=r"has shape \[1, 8, 128, 128\]"):
            backend.infer({"bev": np.zeros((1, 8, 128, 128), np.float32)})
        with pytest.raises(InferenceError, match="do not match the engine's inputs"):
            backend.infer({"points": np.zeros(3, np.float32)})
    with pytest.raises(InferenceError, match="not active"):
        backend.infer({"bev": np.zeros((1, 8, 256, 256), np.float32)})


def test_auto_takes_onnxruntime_without_tensorrt(occupancy):
    assert create_backend(occupancy, "auto").name == "onnxruntime"


def test_tensorrt_requested_without_tensorrt_says_why(occupancy):
    with pytest.raises(ModelLoadError, match="TensorRT is not importable"):
        create_backend(occupancy, "tensorrt")


def test_unknown_backend(occupancy):
    with pytest.raises(ConfigError, match="not one of"):
        create_backend(occupancy, "openvino")


def test_a_file_that_is_not_onnx_is_refused(occupancy, tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    from airside_perception.backends.onnxruntime_backend import OnnxRuntimeBackend

    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        OnnxRuntimeBackend(str(bad), occupancy.inputs, occupancy.outputs).activate()


class _CudaArray:
    """What CuPy, PyTorch and Numba expose for a GPU array: ``__cuda_array_interface__`` (v3)."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x7F0000001000):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "strides": strides,
                                         "data": (ptr, False), "version": 3}


def test_device_address_binds_the_arrays_own_pointer_and_refuses_what_tensorrt_cannot_read():
    from airside_perception.backends.tensorrt_backend import device_address

    profile = ((1, 8, 256, 256), (1, 8, 256, 256), (1, 8, 256, 256))
    ptr, shape = device_address("bev", _CudaArray((1, 8, 256, 256)), np.float32, profile)
    assert (ptr, shape) == (0x7F0000001000, (1, 8, 256, 256))
    contiguous = (8 * 256 * 256 * 4, 256 * 256 * 4, 256 * 4, 4)  # explicit C strides are fine too
    assert device_address("bev", _CudaArray((1, 8, 256, 256), strides=contiguous), np.float32, profile)[1] == shape
    with pytest.raises(InferenceError, match="is not a GPU array"):
        device_address("bev", np.zeros((1, 8, 256, 256), np.float32), np.float32, profile)
    with pytest.raises(InferenceError, match="is float64, the engine takes float32"):
        device_address("bev", _CudaArray((1, 8, 256, 256), "<f8"), np.float32, profile)
    with pytest.raises(InferenceError, match="not C-contiguous"):
        device_address("bev", _CudaArray((1, 8, 256, 256), strides=(0, 4, 8 * 256 * 4, 8 * 4)), np.float32, profile)
    with pytest.raises(InferenceError, match=r"outside the engine's profile \[1, 8, 256, 256\]"):
        device_address("bev", _CudaArray((1, 8, 128, 128)), np.float32, profile)
    points = ((1000, 5), (120000, 5), (300000, 5))  # a dynamic dimension within its range
    assert device_address("point_features", _CudaArray((124000, 5)), np.float32, points)[1] == (124000, 5)
