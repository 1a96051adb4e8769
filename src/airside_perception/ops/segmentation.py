"""Per-point label gathering from the segmentation network's logits."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from airside_perception.classes import UNLABELLED


def softmax_max(logits: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(K, C)`` logits -> (K,) uint8 argmax and (K,) float32 its probability."""
    labels = np.argmax(logits, axis=1)
    top = np.take_along_axis(logits, labels[:, None], axis=1)
    denom = np.exp(logits - top).sum(axis=1)
    return labels.astype(np.uint8), (1.0 / denom).astype(np.float32)


def scatter_labels(kept: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_points: int):
    """Labels for all ``n_points`` input points, in input order; 255 / 0.0 where not classified."""
    out_labels = np.full(n_points, UNLABELLED, np.uint8)
    out_scores = np.zeros(n_points, np.float32)
    out_labels[kept] = labels
    out_scores[kept] = scores
    return out_labels, out_scores
