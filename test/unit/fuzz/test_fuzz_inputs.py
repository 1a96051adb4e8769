"""Property-based tests: whatever arrives, only the package's own typed errors come out.

The cloud reader gets random field layouts, types, byte orders, sizes and truncated data;
swap requests get random tasks and paths; the manifest loader gets random YAML.
"""

from __future__ import annotations

import os
import shutil
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airside_perception.cloud import CloudLayout, FieldSpec, read_cloud
from airside_perception.engines.manifest import load_manifest, parse_manifest
from airside_perception.errors import AirsideError, CloudFormatError, ManifestError, SwapError
from airside_perception.ota import staging
from airside_perception.pipelines import store

ENGINES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "engines")
DTYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float32", "float64")
NAMES = ("x", "y", "z", "intensity", "ring", "time", "x")
FAST = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def layouts(draw):
    n_fields = draw(st.integers(0, 6))
    fields = [FieldSpec(draw(st.sampled_from(NAMES)), draw(st.integers(-4, 40)), draw(st.sampled_from(DTYPES)),
                        draw(st.integers(0, 3))) for _ in range(n_fields)]
    point_step = draw(st.integers(0, 48))
    width, height = draw(st.integers(0, 40)), draw(st.integers(0, 3))
    row_step = draw(st.one_of(st.just(width * point_step), st.integers(0, 2000)))
    layout = CloudLayout(fields, point_step, row_step, height, width, draw(st.booleans()))
    size = draw(st.one_of(st.just(row_step * height), st.integers(0, 4000)))
    data = draw(st.binary(min_size=size, max_size=size))
    return layout, data


@FAST
@given(layouts(), st.integers(0, 200))
def test_cloud_reader_returns_a_cloud_or_a_cloud_format_error(case, max_points):
    layout, data = case
    try:
        cloud = read_cloud(data, layout, max_points)
    except CloudFormatError as exc:
        assert str(exc)  # says what is wrong
        return
    assert cloud.points.dtype == np.float32 and cloud.points.shape == (layout.width * layout.height, 4)
    assert cloud.is_finite.shape == (len(cloud.points),)


@st.composite
def xyzi_clouds(draw):
    n = draw(st.integers(1, 50))
    big = draw(st.booleans())
    dtype = draw(st.sampled_from(("float32", "float64")))
    extra = draw(st.integers(0, 8))  # padding bytes after each record
    values = draw(st.lists(st.floats(-1e4, 1e4, width=32), min_size=4 * n, max_size=4 * n))
    return n, big, dtype, extra, np.array(values, np.float64).reshape(n, 4)


@FAST
@given(xyzi_clouds())
def test_well_formed_clouds_read_back_exactly_in_any_byte_order_and_type(case):
    n, big, dtype, extra, values = case
    order = ">" if big else "<"
    item = np.dtype(dtype).itemsize
    record = np.dtype({"names": ["intensity", "x", "y", "z"], "formats": [order + dtype[0] + str(item)] * 4,
                       "offsets": [0, item, 2 * item, 3 * item], "itemsize": 4 * item + extra})
    rows = np.zeros(n, record)
    rows["x"], rows["y"], rows["z"], rows["intensity"] = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    fields = [FieldSpec("intensity", 0, dtype), FieldSpec("x", item, dtype), FieldSpec("y", 2 * item, dtype),
              FieldSpec("z", 3 * item, dtype)]
    layout = CloudLayout(fields, record.itemsize, record.itemsize * n, 1, n, big)
    cloud = read_cloud(rows.tobytes(), layout, 1000)
    np.testing.assert_allclose(cloud.points, values.astype(np.float32), rtol=0, atol=0)


@pytest.fixture(scope="module")
def engines_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("engines")
    shutil.copytree(os.path.join(ENGINES, "detection", "1.0.0"), root / "detection" / "1.0.0")
    return str(root)


PATH_CHARS = string.ascii_letters + string.digits + "/._-~ *\x00\n"


@FAST
@given(task=st.one_of(st.sampled_from(["detection", "segmentation", "occupancy", ""]), st.text(max_size=20)),
       path=st.one_of(st.sampled_from(["", ".", "..", "detection", "detection/1.0.0", "detection/1.0.0/model.onnx",
                                       "/etc", "/", "../../etc/passwd", "detection/../detection/1.0.0"]),
                      st.text(PATH_CHARS, max_size=60)))
def test_swap_requests_are_staged_or_refused_with_a_swap_error(engines_root, task, path):
    serving = store.load_version(engines_root, "detection", "1.0.0")
    try:
        staging.stage(engines_root, task, path, serving, False)
    except SwapError as exc:
        assert str(exc)
        return
    except ValueError as exc:  # only a NUL byte in a path may come back as the OS's own ValueError
        assert "\x00" in path, exc
        return
    raise AssertionError(f"staged {task!r} {path!r}: only the serving version exists")


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=True), st.text(max_size=12)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=25)
MANIFEST_KEYS = ("format_version", "task", "version", "model", "inputs", "outputs", "preprocessing",
                 "postprocessing", "class_names", "metrics", "validation", "monitor")


@FAST
@given(st.dictionaries(st.sampled_from(MANIFEST_KEYS), yaml_values, max_size=len(MANIFEST_KEYS)))
def test_random_manifest_structures_give_manifest_errors(data):
    try:
        parse_manifest(data, "/nowhere")
    except ManifestError as exc:
        assert str(exc)


@FAST
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_random_manifest_files_give_manifest_errors(tmp_path_factory, content):
    folder = tmp_path_factory.mktemp("m")
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(folder / "manifest.yaml", mode) as fh:
        fh.write(content)
    try:
        load_manifest(str(folder))
    except ManifestError as exc:
        assert str(exc)


def test_mutated_real_manifests_give_manifest_errors_or_load(tmp_path):
    """Every key of a real manifest deleted or replaced by a wrong type, one at a time."""
    with open(os.path.join(ENGINES, "detection", "1.0.0", "manifest.yaml")) as fh:
        real = yaml.safe_load(fh)
    shutil.copy(os.path.join(ENGINES, "detection", "1.0.0", "model.onnx"), tmp_path / "model.onnx")
    for key in real:
        for replacement in (None, 7, "x", [], {}):
            data = dict(real)
            if replacement is None:
                data.pop(key)
            else:
                data[key] = replacement
            (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(data))
            try:
                load_manifest(str(tmp_path))
            except AirsideError as exc:
                assert isinstance(exc, ManifestError), (key, replacement, exc)
