"""Per-point label gathering from the segmentation network's logits."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from airside_perception.classes import UNLABELLED


def softmax_max(logits: np.ndarray, xp=np) -> Tuple[np.ndarray, np.ndarray]:
    """``(K, C)`` logits -> (K,) uint8 argmax (the first of equal maxima) and (K,) float32 its
    probability.

    Works on the transposed logits: NumPy reduces along a short last axis element by element,
    and along the first axis with whole-row vector operations (on 110k x 9 logits, 3.2 ms
    against 6.7 ms with ``argmax(axis=1)``).
    """
    rows = xp.array(logits.T, xp.float32, order="C", copy=True)  # (C, K), ours to overwrite
    top = rows.max(axis=0)
    labels = xp.zeros(rows.shape[1], xp.uint8)
    for c in range(rows.shape[0] - 1, 0, -1):
        xp.copyto(labels, xp.uint8(c), where=rows[c] == top)
    rows -= top
    xp.exp(rows, out=rows)
    return labels, xp.reciprocal(rows.sum(axis=0)).astype(xp.float32, copy=False)


def scatter_labels(kept: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_points: int, xp=np):
    """Labels for all ``n_points`` input points, in input order; 255 / 0.0 where not classified."""
    out_labels = xp.full(n_points, UNLABELLED, xp.uint8)
    out_scores = xp.zeros(n_points, xp.float32)
    out_labels[kept] = labels
    out_scores[kept] = scores
    return out_labels, out_scores
