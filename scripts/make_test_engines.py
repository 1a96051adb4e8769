"""Builds the engines root of the tests, test/data/engines/ (needs the onnx package).

Copies of every shipped version (swaps only take real directories under the root), and:

- detection/nan/: the detection signature, every output NaN (automatic rollback, simplex);
- detection/bad_shape/: a heatmap of 64 x 64 cells instead of 128 x 128 (refused by a swap);
- detection/nan_sparse/: 1.0.0 plus a numerically unstable branch: equal to 1.0.0 on dense
  clouds (the golden inputs, so it passes swap validation) and NaN on sparse ones (the
  compact sample bag): it must be rolled back automatically once it serves;
- detection/slow/: 1.0.0 plus wasted work on the input (matrix products added times zero):
  the same outputs, several times slower;
- detection/1.0.0-copy/: an exact copy of 1.0.0 under another version number.

The fixtures are signed by a test fleet key written to test/data/generated/ (``test_fleet.key``,
and ``trusted_keys/test_fleet.pub``, which the rostests pass as ``trusted_keys_dir``): the
graph verifies what it opens by default, and the copies of shipped versions are trusted as
bundled.
Run from the repository root: python scripts/make_test_engines.py [DEST]; `make test` does.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))
from airside_perception.engines import signing  # noqa: E402
from airside_perception.ota.package import package_version  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SHIPPED = os.path.join(HERE, "..", "engines")
DEFAULT_DEST = os.path.join(HERE, "..", "test", "data", "engines")
KEYS = os.path.join(HERE, "..", "test", "data", "generated")
FIXTURES = ("nan", "bad_shape", "nan_sparse", "slow", "1.0.0-copy")


def detection_like(path: str, cells: int, fill_nan: bool) -> None:
    stride = 256 // cells
    nodes = [helper.make_node("AveragePool", ["bev"], ["pooled"], kernel_shape=[stride, stride],
                              strides=[stride, stride]),
             helper.make_node("Slice", ["pooled", "s0", "s5", "ax"], ["first5"]),
             helper.make_node("Mul", ["first5", "k"], ["heatmap"]),
             helper.make_node("Mul", ["pooled", "k"], ["regression"])]
    k = np.array([np.nan if fill_nan else 0.0], np.float32)
    inits = [numpy_helper.from_array(np.array([0], np.int64), "s0"),
             numpy_helper.from_array(np.array([5], np.int64), "s5"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(k, "k")]
    graph = helper.make_graph(
        nodes, "fixture", [helper.make_tensor_value_info("bev", TensorProto.FLOAT, [1, 8, 256, 256])],
        [helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 5, cells, cells]),
         helper.make_tensor_value_info("regression", TensorProto.FLOAT, [1, 8, cells, cells])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


NAN_BELOW = 3700.0  # sum of the log-count channel: golden clouds ~4500, sample-bag clouds ~2900


def nan_on_sparse(src: str, path: str) -> None:
    model = onnx.load(src)
    for node in model.graph.node:
        node.output[:] = ["heatmap_raw" if o == "heatmap" else o for o in node.output]
    model.graph.node.extend([
        helper.make_node("Slice", ["bev", "c1", "c2", "ax"], ["log_count"]),
        helper.make_node("ReduceSum", ["log_count"], ["total"], keepdims=0),
        helper.make_node("Sub", ["total", "threshold"], ["margin"]),
        helper.make_node("Sqrt", ["margin"], ["root"]),
        helper.make_node("Mul", ["root", "zero"], ["nan_or_zero"]),
        helper.make_node("Add", ["heatmap_raw", "nan_or_zero"], ["heatmap"])])
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([1], np.int64), "c1"), numpy_helper.from_array(np.array([2], np.int64), "c2"),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
        numpy_helper.from_array(np.array(NAN_BELOW, np.float32), "threshold"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    onnx.checker.check_model(model)
    onnx.save(model, path)


SLOW_PRODUCTS = 12  # (2048 x 256) @ (256 x 256) each: about 0.16 GFLOP of wasted work


def slow(src: str, path: str) -> None:
    model = onnx.load(src)
    for node in model.graph.node:
        node.output[:] = ["heatmap_raw" if o == "heatmap" else o for o in node.output]
    nodes = [helper.make_node("Reshape", ["bev", "shape"], ["m0"])]
    for k in range(SLOW_PRODUCTS):
        nodes += [helper.make_node("MatMul", [f"m{k}", "w"], [f"p{k}"]),
                  helper.make_node("Tanh", [f"p{k}"], [f"m{k + 1}"])]
    nodes += [helper.make_node("ReduceMean", [f"m{SLOW_PRODUCTS}"], ["waste"], keepdims=0),
              helper.make_node("Mul", ["waste", "zero"], ["nothing"]),
              helper.make_node("Add", ["heatmap_raw", "nothing"], ["heatmap"])]
    model.graph.node.extend(nodes)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([2048, 256], np.int64), "shape"),
        numpy_helper.from_array((rng.normal(0, 0.06, (256, 256))).astype(np.float32), "w"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def build(root: str) -> str:
    """Creates the fixture engines root at ``root`` (replacing it); returns its path."""
    if os.path.isdir(root):
        shutil.rmtree(root)
    for task in sorted(os.listdir(SHIPPED)):
        for version in sorted(os.listdir(os.path.join(SHIPPED, task))):
            shutil.copytree(os.path.join(SHIPPED, task, version), os.path.join(root, task, version))
    tmp = os.path.join(root, "tmp.onnx")
    for version, cells, nan in (("nan", 128, True), ("bad_shape", 64, False)):
        detection_like(tmp, cells, nan)
        package_version(tmp, "detection", version, root, with_golden=False)
    nan_on_sparse(os.path.join(SHIPPED, "detection", "1.0.0", "model.onnx"), tmp)
    package_version(tmp, "detection", "nan_sparse", root, with_golden=False)
    slow(os.path.join(SHIPPED, "detection", "1.0.0", "model.onnx"), tmp)
    package_version(tmp, "detection", "slow", root, with_golden=False)
    shutil.copy(os.path.join(SHIPPED, "detection", "1.0.0", "model.onnx"), tmp)
    package_version(tmp, "detection", "1.0.0-copy", root, with_golden=False)
    os.remove(tmp)
    key = os.path.join(KEYS, "test_fleet.key")
    if not os.path.isfile(key):
        written = signing.generate_keypair(KEYS, "test_fleet")
        os.makedirs(os.path.join(KEYS, "trusted_keys"), exist_ok=True)
        shutil.copy(written["public"], os.path.join(KEYS, "trusted_keys", "test_fleet.pub"))
    for version in FIXTURES:
        signing.sign_version(os.path.join(root, "detection", version), "detection", version, key)
    return os.path.abspath(root)


if __name__ == "__main__":
    print("fixture engines root:", build(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_DEST))
