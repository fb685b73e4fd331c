"""Box geometry shared by the object detector: areas, IoU and k-means anchor fitting.

Boxes are `[x1, y1, x2, y2]` in pixels (corner format), as floats. There is no "+1" pixel convention: a box
from 1 to 3 is 2 pixels wide, so IoU((1,1,3,3), (2,2,4,4)) = 1 / (4 + 4 - 1) = 1/7, as pycocotools computes it
on the same boxes in `[x, y, w, h]` form.

Degenerate boxes (x2 <= x1 or y2 <= y1) have area 0, and any IoU whose union is empty is defined as 0 rather
than NaN: a collapsed predicted box must not poison a metric.

The NumPy functions serve data preparation and evaluation; `wh_iou_tf` picks each box's anchor inside tf.data.
Anchors are fitted as in YOLOv2: k-means on the (width, height) of the training boxes with distance 1 - IoU, so
that large boxes do not dominate the way they would under a Euclidean distance.
"""

import numpy as np
import tensorflow as tf


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, with 0 wherever the denominator is 0 (and no warning)."""
    numerator, denominator = np.broadcast_arrays(np.asarray(numerator, float), np.asarray(denominator, float))
    return np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator > 0)


def box_area(boxes: np.ndarray) -> np.ndarray:
    """Areas of `(..., 4)` boxes, shape `(...)`; 0 for degenerate boxes."""
    boxes = np.asarray(boxes, dtype=float)
    widths = np.clip(boxes[..., 2] - boxes[..., 0], 0.0, None)
    heights = np.clip(boxes[..., 3] - boxes[..., 1], 0.0, None)
    return widths * heights


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4): shape (N, M)."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    overlap = np.clip(bottom_right - top_left, 0.0, None)
    intersection = overlap[..., 0] * overlap[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - intersection
    return _safe_divide(intersection, union)


def wh_iou(wh_a: np.ndarray, wh_b: np.ndarray) -> np.ndarray:
    """IoU of (width, height) pairs as if the boxes shared a centre: (N, 2), (K, 2) -> (N, K).

    This is the similarity between a box's shape and an anchor's, independent of where the box lies.
    """
    wh_a = np.asarray(wh_a, dtype=float).reshape(-1, 2)
    wh_b = np.asarray(wh_b, dtype=float).reshape(-1, 2)
    overlap = np.minimum(wh_a[:, None, :], wh_b[None, :, :])
    intersection = overlap[..., 0] * overlap[..., 1]
    union = np.prod(wh_a, axis=1)[:, None] + np.prod(wh_b, axis=1)[None, :] - intersection
    return _safe_divide(intersection, union)


def wh_iou_tf(wh_a: tf.Tensor, wh_b: tf.Tensor) -> tf.Tensor:
    """`wh_iou` in TF ops, (N, 2), (K, 2) -> (N, K): picks each box's anchor inside tf.data."""
    wh_a, wh_b = tf.convert_to_tensor(wh_a, tf.float32), tf.convert_to_tensor(wh_b, tf.float32)
    intersection = tf.reduce_prod(tf.minimum(wh_a[:, tf.newaxis], wh_b[tf.newaxis]), axis=-1)
    union = tf.reduce_prod(wh_a, axis=-1)[:, tf.newaxis] + tf.reduce_prod(wh_b, axis=-1)[tf.newaxis] - intersection
    return tf.math.divide_no_nan(intersection, union)


def _check_wh(wh: np.ndarray) -> np.ndarray:
    wh = np.asarray(wh, dtype=float)
    if wh.ndim != 2 or wh.shape[1] != 2:
        raise ValueError(f"expected (N, 2) widths and heights, got shape {wh.shape}")
    if not np.all(np.isfinite(wh)) or np.any(wh <= 0):
        raise ValueError("widths and heights must be finite and positive")
    return wh


def _seed_centres(wh: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding under the 1 - IoU distance: each new centre is drawn with probability proportional
    to the squared distance from the nearest centre so far, which spreads the seeds over the clusters."""
    centres = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):
        distance = 1.0 - wh_iou(wh, np.array(centres)).max(axis=1)
        weights = distance**2
        # Never all zero: with at least k distinct shapes, some box still differs from every centre so far.
        centres.append(wh[rng.choice(len(wh), p=weights / weights.sum())])
    return np.array(centres)


def kmeans_anchors(wh: np.ndarray, k: int, *, seed: int = 0, iterations: int = 300) -> np.ndarray:
    """Fit `k` anchor shapes to the (width, height) of training boxes with k-means under distance 1 - IoU.

    Returns the (k, 2) anchors sorted by area, smallest first. Raises ValueError for k < 1 or when there are
    fewer distinct box shapes than anchors. Deterministic for a given seed.
    """
    wh = _check_wh(wh)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    distinct = len(np.unique(wh, axis=0))
    if distinct < k:
        raise ValueError(f"cannot fit {k} anchors to {distinct} distinct box shapes")

    rng = np.random.default_rng(seed)
    centres = _seed_centres(wh, k, rng)
    assignment = None
    for _ in range(iterations):
        new_assignment = wh_iou(wh, centres).argmax(axis=1)
        if assignment is not None and np.array_equal(new_assignment, assignment):
            break
        assignment = new_assignment
        for cluster in range(k):
            members = wh[assignment == cluster]
            # An emptied cluster keeps its old centre rather than producing a NaN mean.
            if len(members):
                centres[cluster] = members.mean(axis=0)
    return centres[np.argsort(np.prod(centres, axis=1), kind="stable")]


def mean_best_iou(wh: np.ndarray, anchors: np.ndarray) -> float:
    """Average over boxes of the IoU with their best-matching anchor: how well the anchors fit the data."""
    wh = _check_wh(wh)
    return float(wh_iou(wh, anchors).max(axis=1).mean())
