import numpy as np
import pytest

from airside_perception.ops.occupancy import decode_occupancy
from airside_perception.ops.segmentation import scatter_labels, softmax_max


def test_labels_back_in_input_order_with_255_elsewhere():
    logits = np.array([[0.0, 2.0], [3.0, 0.0]], np.float32)
    labels, scores = softmax_max(logits)
    assert labels.tolist() == [1, 0]
    assert scores[0] == pytest.approx(np.exp(2) / (1 + np.exp(2)))
    full, full_scores = scatter_labels(np.array([3, 1]), labels, scores, 5)
    assert full.tolist() == [255, 0, 255, 1, 255] and full_scores[0] == 0


def test_softmax_max_equals_the_textbook_form_ties_included():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(1000, 9)).astype(np.float32)
    logits[::7, 4] = logits[::7, 2] = 9.0  # ties go to the first class, as argmax
    before = logits.copy()
    labels, scores = softmax_max(logits)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    assert labels.dtype == np.uint8 and scores.dtype == np.float32
    assert (labels == logits.argmax(axis=1)).all()
    assert np.allclose(scores, p.max(axis=1), atol=1e-6)
    assert (logits == before).all()  # the engine's output is left as it was
    empty_labels, empty_scores = softmax_max(np.zeros((0, 9), np.float32))
    assert empty_labels.shape == empty_scores.shape == (0,)


def test_occupancy_crop_and_threshold():
    logits = np.full((1, 4, 16, 16), -5.0, np.float32)
    logits[0, 2, 8, 9] = 5.0
    g = decode_occupancy(logits, bev_half_extent_m=3.2, resolution_m=0.4, out_half_extent_m=2.4, threshold=0.5)
    assert g.cells.shape == (12, 12) and g.origin_x_m == pytest.approx(-2.4)
    assert np.argwhere(g.cells == 100).tolist() == [[6, 7]]
