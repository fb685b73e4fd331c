"""COCO detection metrics: agreement with pycocotools on random scenarios, plus cases computed by hand."""

import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from pipelines.evaluation.detection_metrics import (
    Detections,
    GroundTruth,
    average_precision,
    evaluate_detections,
    match_detections,
)


def random_boxes(rng: np.random.Generator, count: int, image_size: float = 200.0) -> np.ndarray:
    corners = rng.uniform(0, image_size * 0.8, size=(count, 2))
    sizes = rng.uniform(8, image_size * 0.4, size=(count, 2))
    return np.concatenate([corners, corners + sizes], axis=1)


def jitter(rng: np.random.Generator, box: np.ndarray, scale: float) -> np.ndarray:
    size = np.tile(box[2:] - box[:2], 2)
    moved = box + rng.normal(0, scale, size=4) * size
    return np.concatenate([np.minimum(moved[:2], moved[2:] - 1), np.maximum(moved[2:], moved[:2] + 1)])


def random_scenario(seed: int, tied_scores: bool = False) -> tuple[list[Detections], list[GroundTruth], int]:
    """Several images and 3-10 classes with missed objects, duplicates, wrong classes and false positives.

    Image 0 has no ground truth, the last class never appears in the ground truth and class 0 is never
    predicted. With `tied_scores`, scores are rounded to one decimal so that sort stability matters.
    """
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(3, 11))
    predicted_classes = np.arange(1, num_classes)
    predictions, truths = [], []
    for image in range(int(rng.integers(4, 9))):
        gt_count = 0 if image == 0 else int(rng.integers(1, 12))
        gt_boxes = random_boxes(rng, gt_count)
        gt_classes = rng.integers(0, num_classes - 1, size=gt_count)
        boxes, classes = [], []
        for box, label in zip(gt_boxes, gt_classes):
            for _ in range(rng.choice([0, 1, 1, 1, 2])):  # missed, found, or found twice
                boxes.append(jitter(rng, box, scale=rng.choice([0.03, 0.1, 0.25])))
                wrong_class = rng.random() < 0.15 or label == 0
                classes.append(rng.choice(predicted_classes) if wrong_class else label)
        false_positives = int(rng.integers(0, 6))
        boxes.extend(random_boxes(rng, false_positives))
        classes.extend(rng.choice(predicted_classes, size=false_positives))
        scores = rng.uniform(0.05, 1.0, size=len(boxes))
        if tied_scores:
            scores = np.round(scores, 1)
        predictions.append(Detections(np.array(boxes).reshape(-1, 4), scores, np.array(classes, dtype=int)))
        truths.append(GroundTruth(gt_boxes, gt_classes))
    return predictions, truths, num_classes


def xywh(box: np.ndarray) -> list[float]:
    return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]


def pycocotools_maps(predictions, truths, num_classes: int, max_detections: int = 100) -> tuple[float, float, float]:
    """pycocotools' mAP@[.5:.95], mAP@0.5 and mAP@0.75 for the same data, area range "all"."""
    # Ids start at 1: pycocotools records matches by ground-truth id and would read an id of 0 as "unmatched".
    annotations = []
    for image, truth in enumerate(truths):
        for box, label in zip(truth.boxes, truth.classes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image + 1,
                    "category_id": int(label) + 1,
                    "bbox": xywh(box),
                    "area": float(np.prod(box[2:] - box[:2])),
                    "iscrowd": 0,
                }
            )
    dataset = {
        "images": [{"id": image + 1} for image in range(len(truths))],
        "categories": [{"id": label + 1} for label in range(num_classes)],
        "annotations": annotations,
    }
    results = [
        {"image_id": image + 1, "category_id": int(label) + 1, "bbox": xywh(box), "score": float(score)}
        for image, prediction in enumerate(predictions)
        for box, score, label in zip(prediction.boxes, prediction.scores, prediction.classes)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iouType="bbox")
        evaluator.params.maxDets = [1, min(10, max_detections), max_detections]
        evaluator.evaluate()
        evaluator.accumulate()
    # What `summarize` averages, read directly because this pycocotools' `summarize` always asks for maxDets 100:
    # precision is (iou thresholds, recall points, classes, area ranges, maxDets), -1 for classes without ground truth.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    at_50, at_75 = (precision[np.isclose(evaluator.params.iouThrs, t)] for t in (0.5, 0.75))
    return tuple(float(np.mean(p[p > -1])) for p in (precision, at_50, at_75))


def assert_agrees_with_pycocotools(predictions, truths, num_classes: int, max_detections: int = 100) -> dict:
    ours = evaluate_detections(predictions, truths, num_classes=num_classes, max_detections=max_detections)
    reference = pycocotools_maps(predictions, truths, num_classes, max_detections)
    assert ours["map_50_95"] == pytest.approx(reference[0], abs=1e-3)
    assert ours["map_50"] == pytest.approx(reference[1], abs=1e-3)
    assert ours["map_75"] == pytest.approx(reference[2], abs=1e-3)
    return ours


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_pycocotools_on_random_scenarios(seed):
    ours = assert_agrees_with_pycocotools(*random_scenario(seed))
    assert 0.0 < ours["map_50_95"] < ours["map_50"] < 1.0


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_agrees_with_pycocotools_when_scores_tie(seed):
    assert_agrees_with_pycocotools(*random_scenario(seed, tied_scores=True))


def test_agrees_with_pycocotools_when_detections_are_capped():
    # Keeping only the best detection per image and class drops true positives, so the cap changes the result.
    predictions, truths, num_classes = random_scenario(7)
    capped = assert_agrees_with_pycocotools(predictions, truths, num_classes, max_detections=1)
    uncapped = evaluate_detections(predictions, truths, num_classes=num_classes)
    assert capped["map_50"] < uncapped["map_50"]


def test_classes_without_ground_truth_are_left_out():
    predictions, truths, num_classes = random_scenario(0)
    result = evaluate_detections(predictions, truths, num_classes=num_classes)
    per_class = result["per_class_ap_50"]
    assert len(per_class) == num_classes
    assert per_class[-1] is None  # the scenario's last class has no ground truth
    present = [ap for ap in per_class if ap is not None]
    assert result["map_50"] == pytest.approx(np.mean(present))
    curve = result["precision_recall_50"]
    assert len(curve["recall"]) == len(curve["precision"]) == 101
    assert np.all(np.diff(curve["precision"]) <= 1e-12)  # the envelope never rises with recall


def test_perfect_detections_score_one():
    _, truths, num_classes = random_scenario(3)
    perfect = [Detections(t.boxes, np.linspace(1.0, 0.5, len(t.boxes)), t.classes) for t in truths]
    result = evaluate_detections(perfect, truths, num_classes=num_classes)
    assert [result["map_50"], result["map_75"], result["map_50_95"]] == pytest.approx([1.0, 1.0, 1.0])


def test_no_detections_score_zero():
    _, truths, num_classes = random_scenario(4)
    empty = [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int)) for _ in truths]
    result = evaluate_detections(empty, truths, num_classes=num_classes)
    assert result["map_50"] == result["map_75"] == result["map_50_95"] == 0.0


def test_hand_computed_single_class_ap():
    # Scores 0.9 (hit), 0.8 (miss), 0.7 (hit) against 2 objects: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # The envelope is 1 for the 51 recall points 0..0.5 and 2/3 for the 50 points above: AP = (51 + 100/3) / 101.
    truth = GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 70.0, 60.0]]), np.array([0, 0]))
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [50.0, 50.0, 70.0, 60.0]])
    prediction = Detections(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]))
    result = evaluate_detections([prediction], [truth], num_classes=1)
    expected = (51 + 100 / 3) / 101
    assert result["map_50"] == pytest.approx(expected)
    assert result["map_50_95"] == pytest.approx(expected)
    assert result["per_class_ap_50"] == [pytest.approx(expected)]
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([True, False, True]), 2) == pytest.approx(expected)


def test_iou_between_thresholds_counts_only_at_the_lower_ones():
    # IoU 62/100 = 0.62 is a hit at 0.5, 0.55 and 0.6 only: mAP@[.5:.95] = 3/10.
    truth = GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0]))
    prediction = Detections(np.array([[0.0, 0.0, 10.0, 6.2]]), np.array([0.5]), np.array([0]))
    result = evaluate_detections([prediction], [truth], num_classes=1)
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map_75"] == 0.0
    assert result["map_50_95"] == pytest.approx(0.3)


def test_greedy_matching_takes_best_unmatched_truth():
    ious = np.array([[0.6, 0.9], [0.55, 0.95], [0.7, 0.4]])
    # First detection takes truth 1 (0.9); the second's best, truth 1, is taken, so it falls to truth 0.
    np.testing.assert_array_equal(match_detections(ious, 0.5), [True, True, False])
    np.testing.assert_array_equal(match_detections(ious, 0.6), [True, False, True])


def test_rejects_mismatched_inputs():
    truth = GroundTruth(np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([0]))
    bad_class = Detections(np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([0.5]), np.array([2]))
    with pytest.raises(ValueError, match="class indices"):
        evaluate_detections([bad_class], [truth], num_classes=2)
    with pytest.raises(ValueError, match="prediction sets"):
        evaluate_detections([], [truth], num_classes=1)
    nothing = GroundTruth(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="no ground truth"):
        evaluate_detections([bad_class], [nothing], num_classes=3)
