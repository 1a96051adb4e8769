import numpy as np
import pytest

from airside_perception.errors import ConfigError
from airside_perception.ops.detection import DecodeParams, decode_centerpoint, nms_rotated, rotated_iou_bev


def test_rotated_iou_known_values():
    a = np.array([0, 0, 0, 2, 2, 1, 0], float)
    assert rotated_iou_bev(a, a) == pytest.approx(1.0)
    shifted = a.copy()
    shifted[0] = 1.0
    assert rotated_iou_bev(a, shifted) == pytest.approx(2 / 6)
    turned = a.copy()
    turned[6] = np.pi / 4
    inter = 4 * (np.sqrt(2) - 1) * 2  # regular octagon of a square and its 45-degree turn
    assert rotated_iou_bev(a, turned) == pytest.approx(inter / (8 - inter), rel=1e-6)
    far = a.copy()
    far[0] = 10
    assert rotated_iou_bev(a, far) == 0.0


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = np.array([[0, 0, 0, 4, 2, 1, 0], [0.2, 0, 0, 4, 2, 1, 0.05], [0.2, 0, 0, 4, 2, 1, 0],
                      [9, 9, 0, 1, 1, 1, 0]])
    keep = nms_rotated(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 1, 0]), 0.3)
    assert keep.tolist() == [0, 2, 3]


def test_decode_a_planted_peak():
    heat = np.full((1, 2, 16, 16), -10.0, np.float32)
    reg = np.zeros((1, 8, 16, 16), np.float32)
    heat[0, 1, 5, 7] = 5.0
    reg[0, :, 5, 7] = [0.5, 0.25, 1.2, np.log(4.0), np.log(2.0), np.log(1.5), np.sin(0.3), np.cos(0.3)]
    out = decode_centerpoint(heat, reg, DecodeParams(0.3, 10, 0.2, half_extent_m=6.4, cell_m=0.8))
    assert out.labels.tolist() == [1]
    x, y, z, length, width, height, yaw = out.boxes[0]
    assert (x, y) == pytest.approx(((7.5 * 0.8) - 6.4, (5.25 * 0.8) - 6.4))
    assert (z, length, width, height, yaw) == pytest.approx((1.2, 4.0, 2.0, 1.5, 0.3), rel=1e-5)


def test_bad_decode_params():
    with pytest.raises(ConfigError, match="score_threshold"):
        DecodeParams(1.5, 10, 0.2, 51.2, 0.8)


@pytest.mark.parametrize("seed", range(12))
def test_sparse_peaks_are_the_full_map_peaks_above_the_threshold(seed):
    """The CPU decode checks the 3x3 neighbourhood only at cells above the threshold: the same
    cells as the whole-map max-pool, ties, plateaus, saturated probabilities and borders included."""
    from airside_perception.ops.detection import heatmap_peaks, peaks_above

    rng = np.random.default_rng(seed)
    logits = rng.normal(-4, 4, size=(5, 32, 40)).astype(np.float32)
    logits[0, :3, :3] = 30.0  # a saturated plateau in a corner: sigmoid 1.0 in every cell
    logits[1, 10, 10:12] = 5.0  # two equal neighbours: both are maxima of their 3x3
    logits[2, -1, -1] = 8.0  # a peak on the border
    heat = 1.0 / (1.0 + np.exp(-logits))
    for threshold in (0.05, 0.3, 0.9):
        want = np.nonzero(heatmap_peaks(heat) & (heat > threshold))
        got = peaks_above(heat, threshold)
        assert all(np.array_equal(a, b) for a, b in zip(want, got)), threshold
    assert all(len(a) == 0 for a in peaks_above(heat * 0, 0.5))


@pytest.mark.parametrize("seed", range(12))
def test_largest_logits_are_the_partition_of_the_whole_map(seed):
    from airside_perception.pipelines.tasks import largest

    rng = np.random.default_rng(seed)
    logits = rng.normal(-3, 3, size=(1, 5, 24, 24)).astype(np.float32)
    if seed % 3 == 0:  # the largest values all in one cell's classes, and ties
        logits[0, :, 4, 4] = 20.0
        logits[0, 2, 7, 7] = 20.0
    for k in (1, 16, 100, 200):  # 200: more than the map's 4 x 4 blocks
        flat = logits.reshape(-1)
        want = np.sort(np.partition(flat, len(flat) - k)[-k:])
        assert np.array_equal(np.sort(largest(logits, k)), want)
    odd = logits[:, :, :, :22]  # no whole 4 x 4 blocks across: per cell
    want = np.sort(np.partition(odd.reshape(-1), odd.size - 16)[-16:])
    assert np.array_equal(np.sort(largest(odd, 16)), want)
    tiny = logits[:, :, :1, :3]  # fewer values than k: every value
    assert np.array_equal(np.sort(largest(tiny, 16)), np.sort(tiny.reshape(-1)))
    few_cells = logits[:, :, :2, :2]  # fewer cells than k, more values
    want = np.sort(np.partition(few_cells.reshape(-1), 20 - 16)[-16:])
    assert np.array_equal(np.sort(largest(few_cells, 16)), want)


def _nms_one_box_at_a_time(boxes, scores, labels, iou_threshold):
    """The greedy NMS written plainly: each kept box against every box not yet suppressed."""
    order = np.argsort(-scores, kind="stable")
    radius = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
    suppressed = np.zeros(len(boxes), bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        dist = np.hypot(boxes[:, 0] - boxes[i, 0], boxes[:, 1] - boxes[i, 1])
        for j in np.flatnonzero(~suppressed & (labels == labels[i]) & (dist < radius + radius[i])):
            if j != i and rotated_iou_bev(boxes[i], boxes[j]) > iou_threshold:
                suppressed[j] = True
    return np.asarray(keep, dtype=np.int64)


@pytest.mark.parametrize("seed", range(20))
def test_nms_keeps_what_the_plain_greedy_nms_keeps(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 120))
    centres = rng.uniform(-6, 6, size=(n, 2))
    if n > 10:  # crowds: boxes on top of each other and groups a metre apart
        centres[: n // 3] = centres[0] + rng.normal(0, 0.6, size=(n // 3, 2))
    boxes = np.column_stack([centres, rng.normal(0, 1, n), rng.uniform(0.4, 5, n), rng.uniform(0.4, 2.5, n),
                             rng.uniform(1, 3, n), rng.uniform(-np.pi, np.pi, n)]).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if n > 4:
        scores[1] = scores[2]  # ties keep their order
    labels = rng.integers(0, 3, n)
    for threshold in (0.1, 0.2, 0.5):
        assert np.array_equal(nms_rotated(boxes, scores, labels, threshold),
                              _nms_one_box_at_a_time(boxes, scores, labels, threshold))
