import numpy as np
import pytest

from airside_perception import classes
from airside_perception.baseline.ground import GroundParams, fit_ground
from airside_perception.baseline.pipeline import BaselineParams, run_baseline
from airside_perception.sim.world import make_scan


def test_ground_follows_a_sloped_apron():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-60, 60, size=(40000, 2))
    z = 0.01 * xy[:, 0] - 0.008 * xy[:, 1] + rng.normal(0, 0.01, len(xy))
    box = np.column_stack([rng.uniform(10, 12, 2000), rng.uniform(-1, 1, 2000), rng.uniform(0, 2, 2000)])
    pts = np.column_stack([np.vstack([np.column_stack([xy, z]), box]), np.zeros(42000)]).astype(np.float32)
    model = fit_ground(pts, GroundParams())
    assert model.global_plane[:2] == pytest.approx([0.01, -0.008], abs=2e-3)
    h = model.height(np.array([50.0], np.float32), np.array([-40.0], np.float32))
    assert h[0] == pytest.approx(0.5 + 0.32, abs=0.05)


@pytest.fixture(scope="module")
def result_and_scan():
    scan = make_scan(110016)
    return run_baseline(scan.points, BaselineParams()), scan


def test_ground_f1_on_a_busy_apron(result_and_scan):
    r, scan = result_and_scan
    m = r.labels != 255
    truth, pred = scan.labels[m] == classes.GROUND, r.labels[m] == 0
    tp = (truth & pred).sum()
    f1 = 2 * tp / (2 * tp + (~truth & pred).sum() + (truth & ~pred).sum())
    assert f1 > 0.97


def test_every_near_person_is_inside_an_obstacle_box(result_and_scan):
    r, scan = result_and_scan
    persons = [b for b, lab, n in zip(scan.boxes, scan.box_labels, scan.box_points)
               if lab == classes.PERSON and n >= 5 and np.hypot(b[0], b[1]) < 20]
    assert len(persons) >= 3
    for p in persons:
        d = r.boxes
        c, s = np.cos(d[:, 6]), np.sin(d[:, 6])
        u = c * (p[0] - d[:, 0]) + s * (p[1] - d[:, 1])
        v = -s * (p[0] - d[:, 0]) + c * (p[1] - d[:, 1])
        assert ((np.abs(u) <= d[:, 3] / 2 + 0.3) & (np.abs(v) <= d[:, 4] / 2 + 0.3)).any(), p


def test_nan_and_empty_input():
    pts = np.full((100, 4), np.nan, np.float32)
    r = run_baseline(pts, BaselineParams())
    assert (r.labels == 255).all() and len(r.boxes) == 0 and r.grid.shape == (200, 200)


def test_evaluation_command_reports_ground_f1_and_person_recall():
    from airside_perception.tools.evaluate_baseline import covered, evaluate

    boxes = np.array([[0, 0, 0, 2, 1, 1, np.pi / 2]], float)
    assert covered(np.array([[0.0, 0.8], [1.2, 0.0]]), boxes).tolist() == [True, False]
    m = evaluate("val", 3, progress=False)
    assert m["ground"]["f1"] > 95 and 0 <= m["person_recall_20m"] <= 100
    assert set(m["recall_within_20m"]) >= {"person", "aircraft", "cone"}


def _clusters_one_point_at_a_time(pts, height, params):
    """Reference: per-cluster statistics with ufunc.at, point by point (the plain formulation)."""
    from scipy import ndimage
    half, cell = params.cluster_half_extent_m, params.cluster_cell_m
    size = int(np.ceil(2 * half / cell))
    ix = ((pts[:, 0] + half) / cell).astype(np.int64)
    iy = ((pts[:, 1] + half) / cell).astype(np.int64)
    occupied = np.zeros((size, size), bool)
    occupied[iy, ix] = True
    comp, n = ndimage.label(occupied, structure=np.ones((3, 3), bool))
    lab = comp[iy, ix] - 1
    count = np.bincount(lab, minlength=n).astype(float)
    x, y = pts[:, 0].astype(float), pts[:, 1].astype(float)
    mx, my = np.bincount(lab, x, n) / count, np.bincount(lab, y, n) / count
    dx, dy = x - mx[lab], y - my[lab]
    cxx, cyy = np.bincount(lab, dx * dx, n) / count, np.bincount(lab, dy * dy, n) / count
    cxy = np.bincount(lab, dx * dy, n) / count
    yaw = 0.5 * np.arctan2(2 * cxy, cxx - cyy)
    u = np.cos(yaw)[lab] * dx + np.sin(yaw)[lab] * dy
    v = -np.sin(yaw)[lab] * dx + np.cos(yaw)[lab] * dy
    ext = {}
    for name, values in (("u", u), ("v", v), ("g", pts[:, 2] - height), ("z", pts[:, 2].astype(float))):
        lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
        np.minimum.at(lo, lab, values)
        np.maximum.at(hi, lab, values)
        ext[name] = (lo, hi)
    keep = count >= params.min_cluster_points
    return count[keep], yaw[keep], {k: (lo[keep], hi[keep]) for k, (lo, hi) in ext.items()}


def test_clusters_equal_the_point_by_point_statistics():
    from airside_perception.baseline.pipeline import cluster_boxes
    rng = np.random.default_rng(3)
    centres = rng.uniform(-50, 50, size=(60, 2))
    pts = np.vstack([np.column_stack([c + rng.normal(0, rng.uniform(0.2, 2.0), size=(rng.integers(1, 400), 2))])
                     for c in centres])
    pts = np.column_stack([pts, rng.uniform(0.2, 3.0, len(pts)), np.zeros(len(pts))]).astype(np.float32)
    height = (pts[:, 2] - rng.uniform(-0.05, 0.05, len(pts))).astype(np.float32)
    params = BaselineParams()
    boxes, counts = cluster_boxes(pts, height, params)
    ref_count, ref_yaw, ext = _clusters_one_point_at_a_time(pts, height, params)
    np.testing.assert_array_equal(counts, ref_count)
    np.testing.assert_allclose(boxes[:, 6], ref_yaw, atol=1e-5)
    length = np.maximum(ext["u"][1] - ext["u"][0], params.cluster_cell_m)
    width = np.maximum(ext["v"][1] - ext["v"][0], params.cluster_cell_m)
    np.testing.assert_allclose(boxes[:, 3], length, atol=1e-4)
    np.testing.assert_allclose(boxes[:, 4], width, atol=1e-4)
    np.testing.assert_allclose(boxes[:, 2], (ext["g"][0] + ext["z"][1]) / 2, atol=1e-4)
