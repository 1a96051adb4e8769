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
