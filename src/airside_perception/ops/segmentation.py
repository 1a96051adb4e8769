"""Per-point label gathering from the segmentation network's logits."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from airside_perception.classes import UNLABELLED


def softmax_max(logits: np.ndarray, xp=np) -> Tuple[np.ndarray, np.ndarray]:
    """``(K, C)`` logits -> (K,) uint8 argmax (the first of equal maxima) and (K,) float32 its
    probability."""
    labels, probability, _ = softmax_top(logits, xp)
    return labels, probability


def softmax_top(logits: np.ndarray, xp=np) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, C)`` logits -> (K,) uint8 argmax, (K,) float32 its probability and (K,) float32
    the largest logit itself (which, unlike the probability, does not saturate).

    Works on the transposed logits with whole-row vector operations: NumPy reduces along a
    short last axis element by element. On 110k x 9 logits this takes 1.7 ms against 6.7 ms
    for ``argmax(axis=1)`` and a softmax.
    """
    rows = xp.array(logits.T, xp.float32, order="C", copy=True)  # (C, K), ours to overwrite
    n_classes, n = rows.shape
    top = rows.max(axis=0)
    # first maximum: the largest (C - 1 - c) among the classes c that equal the top
    first = xp.zeros(n, xp.uint8)
    is_top = xp.empty(n, bool)
    weighted = xp.empty(n, xp.uint8)
    for c in range(n_classes - 1):
        xp.equal(rows[c], top, out=is_top)
        xp.multiply(is_top.view(xp.uint8), xp.uint8(n_classes - 1 - c), out=weighted)
        xp.maximum(first, weighted, out=first)
    labels = (n_classes - 1 - first).astype(xp.uint8)
    rows -= top
    xp.exp(rows, out=rows)
    return labels, xp.reciprocal(rows.sum(axis=0)).astype(xp.float32, copy=False), top


def scatter_labels(kept: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_points: int, xp=np):
    """Labels for all ``n_points`` input points, in input order; 255 / 0.0 where not classified."""
    out_labels = xp.full(n_points, UNLABELLED, xp.uint8)
    out_scores = xp.zeros(n_points, xp.float32)
    out_labels[kept] = labels
    out_scores[kept] = scores
    return out_labels, out_scores
