import numpy as np
import pytest

from airside_perception.cloud import CloudLayout, FieldSpec, read_cloud
from airside_perception.errors import CloudFormatError


def _pack(points, dtype_fields, bigendian=False, extra=()):
    """Packs (N, 4) points into records described by ``dtype_fields`` [(name, dtype)]."""
    order = ">" if bigendian else "<"
    names = [n for n, _ in dtype_fields]
    dt = np.dtype([(n, np.dtype(t).newbyteorder(order)) for n, t in dtype_fields])
    rec = np.zeros(len(points), dt)
    for i, n in enumerate(("x", "y", "z", "intensity")):
        if n in names:
            rec[n] = points[:, i]
    for n, value in extra:
        rec[n] = value
    fields = [FieldSpec(n, dt.fields[n][1], np.dtype(t).name) for n, t in dtype_fields]
    return rec.tobytes(), fields, dt.itemsize


def _layout(fields, step, n, bigendian=False, height=1):
    return CloudLayout(fields, step, step * (n // height), height, n // height, bigendian)


@pytest.fixture
def pts():
    rng = np.random.default_rng(0)
    return rng.normal(0, 20, size=(1000, 4)).astype(np.float32)


def test_plain_xyzi_roundtrip(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    cloud = read_cloud(data, _layout(fields, step, len(pts)), 10_000)
    np.testing.assert_array_equal(cloud.points, pts)
    assert cloud.has_intensity and cloud.is_finite.all()


def test_extra_fields_other_order_and_float64(pts):
    spec = [("ring", "u2"), ("intensity", "f4"), ("time", "f8"), ("z", "f8"), ("x", "f8"),
            ("laser_id", "u1"), ("y", "f8")]
    data, fields, step = _pack(pts, spec, extra=[("ring", 3), ("laser_id", 7)])
    cloud = read_cloud(data, _layout(fields, step, len(pts)), 10_000)
    np.testing.assert_allclose(cloud.points, pts, rtol=1e-6)


def test_big_endian(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")], True)
    cloud = read_cloud(data, _layout(fields, step, len(pts), bigendian=True), 10_000)
    np.testing.assert_array_equal(cloud.points, pts)


def test_organized_cloud_keeps_row_major_order(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    cloud = read_cloud(data, _layout(fields, step, len(pts), height=10), 10_000)
    np.testing.assert_array_equal(cloud.points, pts)


def test_padded_rows(pts):
    data, fields, step = _pack(pts[:100], [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    rows = np.frombuffer(data, np.uint8).reshape(10, 160)
    padded = np.concatenate([rows, np.zeros((10, 8), np.uint8)], axis=1).tobytes()
    layout = CloudLayout(fields, step, 168, 10, 10, False)
    np.testing.assert_array_equal(read_cloud(padded, layout, 1000).points, pts[:100])


def test_nan_points_are_kept_in_place_and_flagged(pts):
    pts = pts.copy()
    pts[[3, 500], 0] = np.nan
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    cloud = read_cloud(data, _layout(fields, step, len(pts)), 10_000)
    assert cloud.n_points == 1000
    assert np.flatnonzero(~cloud.is_finite).tolist() == [3, 500]


def test_empty_cloud():
    _, fields, step = _pack(np.zeros((0, 4), np.float32), [("x", "f4"), ("y", "f4"), ("z", "f4")])
    cloud = read_cloud(b"", _layout(fields, step, 0), 10)
    assert cloud.points.shape == (0, 4) and not cloud.has_intensity


def test_missing_intensity_reads_zero(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4")])
    cloud = read_cloud(data, _layout(fields, step, len(pts)), 10_000)
    assert not cloud.has_intensity and (cloud.points[:, 3] == 0).all()


def test_too_many_points_names_the_parameter(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    with pytest.raises(CloudFormatError, match="max_points"):
        read_cloud(data, _layout(fields, step, len(pts)), 999)


def test_missing_coordinate_is_named(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("intensity", "f4")])
    with pytest.raises(CloudFormatError, match="no field z"):
        read_cloud(data, _layout(fields, step, len(pts)), 10_000)


def test_truncated_buffer(pts):
    data, fields, step = _pack(pts, [("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "f4")])
    with pytest.raises(CloudFormatError, match="truncated"):
        read_cloud(data[:-5], _layout(fields, step, len(pts)), 10_000)


def test_field_outside_point_step():
    fields = [FieldSpec("x", 0, "float32"), FieldSpec("y", 4, "float32"), FieldSpec("z", 14, "float32")]
    with pytest.raises(CloudFormatError, match="does not fit"):
        read_cloud(bytes(160), CloudLayout(fields, 16, 160, 1, 10, False), 100)
