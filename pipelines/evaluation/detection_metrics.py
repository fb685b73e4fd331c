"""COCO-style evaluation of object detections: mAP@0.5, mAP@0.75 and mAP@[.5:.95].

The rules are those of pycocotools' `COCOeval` for bounding boxes, area range "all" and maxDets 100, which
the tests use as the reference (agreement within 0.001):

* per image and class, detections are sorted by score (stable, so ties keep their input order) and only the
  best `max_detections` are kept: the cap applies per image *and class*, as in pycocotools;
* at each IoU threshold, each detection in turn takes the unmatched ground truth box it overlaps most, if
  that IoU reaches the threshold (on equal IoUs the later ground-truth box wins, as in pycocotools' loop);
* per class, the detections of all images are merged, again stably sorted by score, and precision is made
  monotone (the "envelope") and read at 101 recall points 0, 0.01, ..., 1; AP is their mean;
* classes without ground truth have no AP and are left out of the means.

There are no crowd regions or area ranges. Boxes are `[x1, y1, x2, y2]` pixels without the "+1" convention,
which is what pycocotools computes on the equivalent `[x, y, w, h]` boxes.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.box_ops import iou_matrix

# linspace rather than arange: arange's accumulated rounding puts e.g. 0.7000000000000001 on the grid, and a
# threshold must be exactly the one pycocotools uses for an IoU that lands on it to be judged the same way.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Detections:
    """One image's predictions: boxes (N, 4) xyxy pixels, confidence scores (N,), class indices (N,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class GroundTruth:
    """One image's labelled objects: boxes (M, 4) xyxy pixels and class indices (M,)."""

    boxes: np.ndarray
    classes: np.ndarray


def _checked_detections(prediction: Detections, num_classes: int) -> Detections:
    boxes, classes = _checked_boxes(prediction.boxes, prediction.classes, num_classes, "detections")
    scores = np.asarray(prediction.scores, dtype=float).reshape(-1)
    if len(scores) != len(boxes):
        raise ValueError(f"detections: {len(boxes)} boxes but {len(scores)} scores")
    return Detections(boxes, scores, classes)


def _checked_truth(truth: GroundTruth, num_classes: int) -> GroundTruth:
    return GroundTruth(*_checked_boxes(truth.boxes, truth.classes, num_classes, "ground truth"))


def _checked_boxes(
    boxes: np.ndarray, classes: np.ndarray, num_classes: int, what: str
) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if len(boxes) != len(classes):
        raise ValueError(f"{what}: {len(boxes)} boxes but {len(classes)} classes")
    if len(classes) and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"{what}: class indices must lie in [0, {num_classes})")
    return boxes, classes.astype(int)


def match_detections(ious: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy COCO matching for one image and class: which detections are true positives.

    `ious` is (D, G) with detections already in descending score order. Returns a boolean (D,) array.
    """
    # pycocotools caps the threshold so that a perfect IoU of 1 still matches at threshold 1.
    threshold = min(iou_threshold, 1 - 1e-10)
    matched_truths = np.zeros(ious.shape[1], dtype=bool)
    true_positive = np.zeros(ious.shape[0], dtype=bool)
    for detection, overlaps in enumerate(ious):
        candidates = np.where(matched_truths, -np.inf, overlaps)
        if not len(candidates) or candidates.max() < threshold:
            continue
        # The last of equally good boxes, as pycocotools' `>=` scan over the ground truth picks it.
        best = len(candidates) - 1 - int(np.argmax(candidates[::-1]))
        matched_truths[best] = True
        true_positive[detection] = True
    return true_positive


def precision_at_recall_points(scores: np.ndarray, true_positive: np.ndarray, num_truths: int) -> np.ndarray:
    """Interpolated precision of one class at the 101 COCO recall points.

    `scores` and `true_positive` hold every detection of the class over all images, in image order; they are
    sorted here by descending score with a stable sort. Recall points beyond the highest recall reached get
    precision 0.
    """
    if num_truths < 1:
        raise ValueError("precision is undefined for a class without ground truth")
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    hits = np.asarray(true_positive, dtype=bool)[order]
    tp = np.cumsum(hits).astype(float)
    fp = np.cumsum(~hits).astype(float)
    recall = tp / num_truths
    # pycocotools adds the spacing term; kept so that results agree with it to the last bit.
    precision = tp / (tp + fp + np.spacing(1))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    indices = np.searchsorted(recall, RECALL_POINTS, side="left")
    reached = indices < len(envelope)
    interpolated = np.zeros(len(RECALL_POINTS))
    interpolated[reached] = envelope[indices[reached]]
    return interpolated


def average_precision(scores: np.ndarray, true_positive: np.ndarray, num_truths: int) -> float:
    """COCO's 101-point interpolated AP of one class at one IoU threshold (see `precision_at_recall_points`)."""
    return float(precision_at_recall_points(scores, true_positive, num_truths).mean())


def _image_class_results(
    prediction: Detections, truth: GroundTruth, label: int, thresholds: np.ndarray, max_detections: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Scores (D,), true-positive flags (T, D) and ground-truth count of one image and class."""
    mine = prediction.classes == label
    boxes, scores = prediction.boxes[mine], prediction.scores[mine]
    order = np.argsort(-scores, kind="mergesort")[:max_detections]
    boxes, scores = boxes[order], scores[order]
    ious = iou_matrix(boxes, truth.boxes[truth.classes == label])
    hits = np.array([match_detections(ious, t) for t in thresholds]).reshape(len(thresholds), len(scores))
    return scores, hits, int(np.sum(truth.classes == label))


def _precision_table(
    predictions: Sequence[Detections],
    truths: Sequence[GroundTruth],
    num_classes: int,
    thresholds: np.ndarray,
    max_detections: int,
) -> np.ndarray:
    """Interpolated precision (T, 101, K); NaN for classes without ground truth."""
    predictions = [_checked_detections(p, num_classes) for p in predictions]
    truths = [_checked_truth(t, num_classes) for t in truths]
    table = np.full((len(thresholds), len(RECALL_POINTS), num_classes), np.nan)
    for label in range(num_classes):
        results = [_image_class_results(p, t, label, thresholds, max_detections) for p, t in zip(predictions, truths)]
        num_truths = sum(count for _, _, count in results)
        if num_truths == 0:
            continue
        scores = np.concatenate([s for s, _, _ in results])
        hits = np.concatenate([h for _, h, _ in results], axis=1)
        for t in range(len(thresholds)):
            table[t, :, label] = precision_at_recall_points(scores, hits[t], num_truths)
    return table


def _threshold_index(thresholds: np.ndarray, value: float) -> int:
    matches = np.flatnonzero(np.isclose(thresholds, value))
    if not len(matches):
        raise ValueError(f"iou_thresholds must include {value}")
    return int(matches[0])


def evaluate_detections(
    predictions: Sequence[Detections],
    truths: Sequence[GroundTruth],
    *,
    num_classes: int,
    iou_thresholds: np.ndarray = COCO_IOU_THRESHOLDS,
    max_detections: int = 100,
) -> dict:
    """COCO bbox metrics over a dataset; `predictions[i]` and `truths[i]` belong to the same image.

    Returns `map_50`, `map_75` and `map_50_95` (the mean over `iou_thresholds`, which must include 0.5 and
    0.75), `per_class_ap_50` (None for classes without ground truth) and `precision_recall_50`, the
    101-point precision at IoU 0.5 averaged over classes, for plotting a PR curve. Raises ValueError if no
    image has any ground truth.
    """
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} prediction sets but {len(truths)} ground-truth sets")
    thresholds = np.asarray(iou_thresholds, dtype=float).reshape(-1)
    index_50, index_75 = _threshold_index(thresholds, 0.5), _threshold_index(thresholds, 0.75)

    table = _precision_table(predictions, truths, num_classes, thresholds, max_detections)
    present = ~np.isnan(table[0, 0])
    if not present.any():
        raise ValueError("no ground truth boxes: mAP is undefined")
    ap = table[:, :, present].mean(axis=1)  # (T, classes with ground truth)
    return {
        "map_50": float(ap[index_50].mean()),
        "map_75": float(ap[index_75].mean()),
        "map_50_95": float(ap.mean()),
        "per_class_ap_50": [float(v) if ok else None for v, ok in zip(table[index_50].mean(axis=0), present)],
        "precision_recall_50": {
            "recall": RECALL_POINTS.tolist(),
            "precision": table[index_50][:, present].mean(axis=1).tolist(),
        },
    }


def precision_recall_at(
    predictions: Sequence[Detections],
    truths: Sequence[GroundTruth],
    *,
    num_classes: int,
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Precision and recall of the detections scoring above `score_threshold`: what a user of the served model sees.

    A detection is correct when it takes an unmatched ground-truth box of its class with IoU at least
    `iou_threshold` (the same greedy matching as the mAP).
    """
    true_positives = detections = objects = 0
    for prediction, truth in zip(predictions, truths):
        prediction, truth = _checked_detections(prediction, num_classes), _checked_truth(truth, num_classes)
        kept = prediction.scores > score_threshold
        objects += len(truth.classes)
        detections += int(kept.sum())
        for label in np.unique(prediction.classes[kept]):
            mine = kept & (prediction.classes == label)
            order = np.argsort(-prediction.scores[mine], kind="mergesort")
            ious = iou_matrix(prediction.boxes[mine][order], truth.boxes[truth.classes == label])
            true_positives += int(match_detections(ious, iou_threshold).sum())
    return {
        "precision": true_positives / detections if detections else 1.0,
        "recall": true_positives / objects if objects else 1.0,
        "detections": detections,
        "objects": objects,
    }
