"""COCO-style evaluation of object detections: mAP@0.5, mAP@0.75 and mAP@[.5:.95], computed by pycocotools.

The boxes go to pycocotools' `COCOeval` for bounding boxes, area range "all" and at most `max_detections`
detections per image and class. Its rules, which the reports therefore follow:

* per image and class, detections are sorted by score (stable, so ties keep their input order) and only the
  best `max_detections` are kept: the cap applies per image *and class*;
* at each IoU threshold, each detection in turn takes the unmatched ground truth box it overlaps most, if
  that IoU reaches the threshold (on equal IoUs the later ground-truth box wins);
* per class, the detections of all images are merged, again stably sorted by score, and precision is made
  monotone (the "envelope") and read at 101 recall points 0, 0.01, ..., 1; AP is their mean;
* classes without ground truth have no AP and are left out of the means.

There are no crowd regions or area ranges. Boxes are `[x1, y1, x2, y2]` pixels without the "+1" convention,
which is what pycocotools computes on the equivalent `[x, y, w, h]` boxes.
"""

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from models.box_ops import box_area

# linspace rather than arange: arange's accumulated rounding puts e.g. 0.7000000000000001 on the grid, and an
# IoU that lands exactly on a threshold must be judged against exactly that threshold.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


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


def _coco_annotations(boxes: np.ndarray, classes: np.ndarray, image_id: int, first_id: int) -> list[dict]:
    # Degenerate boxes get width or height 0 rather than a negative one, so their area and IoU are 0 as in
    # `box_ops`; they still count as objects.
    sizes = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None)
    return [
        {
            # Ids start at 1: pycocotools records matches by annotation id and would read an id of 0 as "unmatched".
            "id": first_id + index,
            "image_id": image_id,
            "category_id": int(label) + 1,
            "bbox": [float(box[0]), float(box[1]), float(size[0]), float(size[1])],
            "area": float(area),
            "iscrowd": 0,
        }
        for index, (box, size, area, label) in enumerate(zip(boxes, sizes, box_area(boxes), classes))
    ]


def _coco(annotations: list[dict], num_images: int, num_classes: int) -> COCO:
    """An in-memory pycocotools dataset (`loadRes` would fail on an empty detection list)."""
    dataset = COCO()
    dataset.dataset = {
        "images": [{"id": image + 1} for image in range(num_images)],
        "categories": [{"id": label + 1} for label in range(num_classes)],
        "annotations": annotations,
    }
    dataset.createIndex()
    return dataset


def _evaluated(
    predictions: Sequence[Detections],
    truths: Sequence[GroundTruth],
    num_classes: int,
    iou_thresholds: np.ndarray,
    max_detections: int,
) -> COCOeval:
    """pycocotools' per-image evaluation of the data set (image i is `predictions[i]` and `truths[i]`)."""
    if len(predictions) != len(truths):
        raise ValueError(f"{len(predictions)} prediction sets but {len(truths)} ground-truth sets")
    predictions = [_checked_detections(p, num_classes) for p in predictions]
    truths = [_checked_truth(t, num_classes) for t in truths]
    truth_annotations, detection_annotations = [], []
    for image, (prediction, truth) in enumerate(zip(predictions, truths)):
        truth_annotations += _coco_annotations(truth.boxes, truth.classes, image + 1, len(truth_annotations) + 1)
        found = _coco_annotations(prediction.boxes, prediction.classes, image + 1, len(detection_annotations) + 1)
        for annotation, score in zip(found, prediction.scores):
            annotation["score"] = float(score)
        detection_annotations += found
    # pycocotools reports its progress on stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(
            _coco(truth_annotations, len(truths), num_classes),
            _coco(detection_annotations, len(truths), num_classes),
            iouType="bbox",
        )
        evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=float)
        evaluator.params.maxDets = [max_detections]
        # Only the area range "all": adding the small, medium and large ones would do the work four times over.
        evaluator.params.areaRng = evaluator.params.areaRng[:1]
        evaluator.params.areaRngLbl = evaluator.params.areaRngLbl[:1]
        evaluator.evaluate()
    return evaluator


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
    thresholds = np.asarray(iou_thresholds, dtype=float).reshape(-1)
    index_50, index_75 = _threshold_index(thresholds, 0.5), _threshold_index(thresholds, 0.75)
    evaluator = _evaluated(predictions, truths, num_classes, thresholds, max_detections)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
    # Precision is (IoU thresholds, recall points, classes, area ranges, maxDets), -1 for classes without ground
    # truth; there is one area range and one maxDets.
    table = evaluator.eval["precision"][:, :, :, 0, 0]
    present = table[0, 0] > -1
    if not present.any():
        raise ValueError("no ground truth boxes: mAP is undefined")
    ap = table[:, :, present].mean(axis=1)  # (T, classes with ground truth)
    return {
        "map_50": float(ap[index_50].mean()),
        "map_75": float(ap[index_75].mean()),
        "map_50_95": float(ap.mean()),
        "per_class_ap_50": [float(v) if ok else None for v, ok in zip(table[index_50].mean(axis=0), present)],
        "precision_recall_50": {
            "recall": evaluator.params.recThrs.tolist(),
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
    kept = []
    for prediction in predictions:
        prediction = _checked_detections(prediction, num_classes)
        above = prediction.scores > score_threshold
        kept.append(Detections(prediction.boxes[above], prediction.scores[above], prediction.classes[above]))
    detections = sum(len(prediction.scores) for prediction in kept)
    objects = sum(len(np.reshape(truth.classes, -1)) for truth in truths)
    # Every detection takes part: no cap.
    evaluator = _evaluated(kept, truths, num_classes, np.array([iou_threshold]), max(1, detections))
    true_positives = sum(int((result["dtMatches"][0] > 0).sum()) for result in evaluator.evalImgs if result)
    return {
        "precision": true_positives / detections if detections else 1.0,
        "recall": true_positives / objects if objects else 1.0,
        "detections": detections,
        "objects": objects,
    }
