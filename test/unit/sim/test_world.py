import numpy as np
import pytest

from airside_perception import classes
from airside_perception.sim import geometry as g
from airside_perception.sim.world import OCCUPANCY_GRID, SPLITS, make_scan, sequence, split_seeds


@pytest.fixture(scope="module")
def scan():
    return make_scan(110016)


def test_same_seed_same_scan():
    a, b = make_scan(5, "compact"), make_scan(5, "compact")
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.points[:100], make_scan(6, "compact").points[:100])


def test_scan_size_and_shapes(scan):
    assert 60_000 < len(scan.points) < 200_000
    assert scan.points.dtype == np.float32 and scan.points.shape[1] == 4
    assert scan.labels.shape == (len(scan.points),) and scan.labels.dtype == np.uint8
    assert scan.boxes.shape == (len(scan.box_labels), 7)
    assert scan.occupancy.shape == (OCCUPANCY_GRID.size, OCCUPANCY_GRID.size)
    assert np.isfinite(scan.points).all()


def test_density_presets_span_the_vehicle_range():
    assert 25_000 < len(make_scan(1, "compact").points) < 60_000
    assert 150_000 < len(make_scan(1, "dense").points) < 260_000


def test_busy_scene_has_every_object_class(scan):
    present = set(np.unique(scan.labels).tolist())
    for name in ("ground", "aircraft", "person", "vehicle", "cart", "cone", "structure"):
        assert classes.CLASS_IDS[name] in present, name


def test_object_points_lie_inside_their_boxes(scan):
    for label in (classes.PERSON, classes.CART, classes.CONE):
        pts = scan.points[scan.labels == label]
        boxes = scan.boxes[scan.box_labels == label]
        for p in pts[::7]:
            d = p[:2] - boxes[:, :2]
            c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
            lx, ly = c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]
            inside = (np.abs(lx) <= boxes[:, 3] / 2 + 0.1) & (np.abs(ly) <= boxes[:, 4] / 2 + 0.1) \
                & (np.abs(p[2] - boxes[:, 2]) <= boxes[:, 5] / 2 + 0.1)
            assert inside.any(), (label, p)


def test_vests_and_cones_are_brighter_than_the_apron(scan):
    ground = scan.points[scan.labels == classes.GROUND, 3]
    cones = scan.points[scan.labels == classes.CONE, 3]
    assert np.median(cones) > 3 * np.median(ground)


def test_occupancy_marks_objects_and_leaves_the_ego_spot_free(scan):
    occ = scan.occupancy
    assert 0.001 < occ.mean() < 0.2
    mid = OCCUPANCY_GRID.size // 2
    assert occ[mid - 2:mid + 2, mid - 2:mid + 2].sum() == 0


def test_objects_move_between_frames():
    frames = list(sequence(110016, 3, "compact"))
    moved = np.abs(frames[2].boxes[:, :2] - frames[0].boxes[:, :2]).max()
    assert 0.1 < moved < 2.0


def test_splits_are_disjoint():
    ranges = sorted(SPLITS.values())
    assert all(a[1] <= b[0] for a, b in zip(ranges, ranges[1:]))
    assert split_seeds("test", 3).tolist() == [110_000, 110_001, 110_002]
    with pytest.raises(ValueError, match="unknown split"):
        split_seeds("nope", 1)


def test_ray_hits_box_face_at_the_right_distance():
    prim = g.box((10.0, 0.0, 1.0), (2.0, 2.0, 2.0), 0.3, 0.5)
    dirs = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    t = g.intersect(prim, np.array([0.0, 0.0, 1.0]), dirs)
    half_diag = 1.0 / np.cos(0.3)
    assert t[0] == pytest.approx(10.0 - half_diag, abs=1e-6) and np.isinf(t[1])


def test_ray_hits_cylinders():
    z = g.zcyl((5.0, 0.0, 1.0), 0.5, 2.0, 0.5)
    x = g.xcyl((0.0, 0.0, 5.0), 10.0, 1.0, 0.0, 0.5)
    o = np.zeros(3)
    assert g.intersect(z, o, np.array([[1.0, 0.0, 0.0]]))[0] == pytest.approx(4.5)
    assert g.intersect(x, o, np.array([[0.0, 0.0, 1.0]]))[0] == pytest.approx(4.0)
