"""COCO detection metrics: known values on random scenarios, plus cases computed by hand."""

import numpy as np
import pytest

from pipelines.evaluation.detection_metrics import Detections, GroundTruth, evaluate_detections, precision_recall_at


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


# (mAP@[.5:.95], mAP@0.5, mAP@0.75) of `random_scenario(seed)`, and with tied scores. The hand-written evaluation
# this project used before pycocotools computed them, and agreed with pycocotools 2.0.11 to within 1e-16.
KNOWN_MAPS = {
    0: (0.157016295380, 0.321936881188, 0.119080033003),
    1: (0.160676567657, 0.264404440444, 0.174053405341),
    2: (0.195544849128, 0.370081918906, 0.182178217822),
    3: (0.148586358636, 0.223679867987, 0.150715071507),
    4: (0.152764686987, 0.247465818010, 0.161645450259),
    5: (0.163234323432, 0.284394153701, 0.150447901933),
    6: (0.205943444344, 0.336285628563, 0.203531353135),
    7: (0.174110744408, 0.327970297030, 0.174465660852),
}
KNOWN_TIED_MAPS = {
    100: (0.137875854550, 0.247209453088, 0.128415252240),
    101: (0.182413366337, 0.293935643564, 0.200671852900),
    102: (0.109698255540, 0.201791607732, 0.096534653465),
}


def assert_maps(result: dict, maps: tuple[float, float, float]) -> None:
    assert (result["map_50_95"], result["map_50"], result["map_75"]) == pytest.approx(maps, abs=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_known_maps_of_random_scenarios(seed):
    predictions, truths, num_classes = random_scenario(seed)
    result = evaluate_detections(predictions, truths, num_classes=num_classes)
    assert_maps(result, KNOWN_MAPS[seed])
    assert 0.0 < result["map_50_95"] < result["map_50"] < 1.0


@pytest.mark.parametrize("seed", [100, 101, 102])
def test_known_maps_when_scores_tie(seed):
    predictions, truths, num_classes = random_scenario(seed, tied_scores=True)
    assert_maps(evaluate_detections(predictions, truths, num_classes=num_classes), KNOWN_TIED_MAPS[seed])


def test_known_maps_when_detections_are_capped():
    # Keeping only the best detection per image and class drops true positives, so the cap changes the result.
    predictions, truths, num_classes = random_scenario(7)
    capped = evaluate_detections(predictions, truths, num_classes=num_classes, max_detections=1)
    assert_maps(capped, (0.135121012101, 0.271635496883, 0.123945727906))
    uncapped = evaluate_detections(predictions, truths, num_classes=num_classes)
    assert capped["map_50"] < uncapped["map_50"]


def test_known_per_class_ap_and_precision_recall_curve():
    predictions, truths, num_classes = random_scenario(0)
    result = evaluate_detections(predictions, truths, num_classes=num_classes)
    per_class = [0.0, 0.422442244224, 0.320544554455, 0.428571428571, 0.331683168317]
    per_class += [0.264497878359, 0.222772277228, 0.58498349835, None]
    assert result["per_class_ap_50"] == [None if ap is None else pytest.approx(ap, abs=1e-9) for ap in per_class]
    curve = result["precision_recall_50"]
    assert curve["recall"] == pytest.approx(np.linspace(0, 1, 101))
    every_tenth = [0.584821428571, 0.584821428571, 0.584821428571, 0.441369047619, 0.441369047619, 0.343154761905]
    every_tenth += [0.256696428571, 0.183779761905, 0.136904761905, 0.053571428571, 0.053571428571]
    assert curve["precision"][::10] == pytest.approx(every_tenth, abs=1e-9)


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


def test_iou_between_thresholds_counts_only_at_the_lower_ones():
    # IoU 62/100 = 0.62 is a hit at 0.5, 0.55 and 0.6 only: mAP@[.5:.95] = 3/10.
    truth = GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([0]))
    prediction = Detections(np.array([[0.0, 0.0, 10.0, 6.2]]), np.array([0.5]), np.array([0]))
    result = evaluate_detections([prediction], [truth], num_classes=1)
    assert result["map_50"] == pytest.approx(1.0)
    assert result["map_75"] == 0.0
    assert result["map_50_95"] == pytest.approx(0.3)


def test_greedy_matching_takes_best_unmatched_truth():
    # Boxes 10 high, so IoU is the overlap of the x ranges over their union. Truths [0, 10] and [2, 12]; detections,
    # best first: [2, 12] (IoU 1 with truth 1, 2/3 with truth 0), [1.5, 11.5] (0.905 with truth 1, 0.739 with
    # truth 0) and [0, 10] (1 with truth 0, 2/3 with truth 1).
    truth = GroundTruth(np.array([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]]), np.array([0, 0]))
    boxes = np.array([[2.0, 0.0, 12.0, 10.0], [1.5, 0.0, 11.5, 10.0], [0.0, 0.0, 10.0, 10.0]])
    prediction = Detections(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]))
    result = evaluate_detections([prediction], [truth], num_classes=1)
    # At 0.5 the first detection takes truth 1; the second's best, truth 1, is taken, so it falls to truth 0, and
    # the third finds both taken: hits, hit, miss, so AP 1.
    assert result["map_50"] == pytest.approx(1.0)
    # At 0.75 the second cannot take truth 0 (0.739), so the third does: hit, miss, hit, the AP of
    # `test_hand_computed_single_class_ap`. Thresholds 0.5-0.7 give AP 1, 0.75-0.95 this one.
    assert result["map_75"] == pytest.approx((51 + 100 / 3) / 101)
    assert result["map_50_95"] == pytest.approx((5 + 5 * (51 + 100 / 3) / 101) / 10)
    for iou_threshold in (0.5, 0.75):
        counts = precision_recall_at(
            [prediction], [truth], num_classes=1, score_threshold=0.0, iou_threshold=iou_threshold
        )
        assert counts == {"precision": pytest.approx(2 / 3), "recall": 1.0, "detections": 3, "objects": 2}


def test_precision_recall_at_counts_only_detections_above_the_threshold():
    predictions, truths, num_classes = random_scenario(1)
    everything = precision_recall_at(predictions, truths, num_classes=num_classes, score_threshold=0.0)
    confident = precision_recall_at(predictions, truths, num_classes=num_classes, score_threshold=0.5)
    assert everything["objects"] == confident["objects"] == sum(len(truth.classes) for truth in truths)
    assert everything["detections"] == sum(len(prediction.scores) for prediction in predictions)
    assert confident["detections"] == sum(int((prediction.scores > 0.5).sum()) for prediction in predictions)
    assert confident["recall"] <= everything["recall"]
    # Known values (13 and 8 hits), from the hand-written matching this project used before pycocotools.
    assert everything == {
        "precision": pytest.approx(13 / 45),
        "recall": pytest.approx(13 / 29),
        "detections": 45,
        "objects": 29,
    }
    assert confident == {
        "precision": pytest.approx(8 / 24),
        "recall": pytest.approx(8 / 29),
        "detections": 24,
        "objects": 29,
    }
    empty = [Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=int)) for _ in truths]
    assert precision_recall_at(empty, truths, num_classes=num_classes, score_threshold=0.5)["recall"] == 0.0


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


def test_pycocotools_progress_is_not_printed(capsys):
    predictions, truths, num_classes = random_scenario(2)
    evaluate_detections(predictions, truths, num_classes=num_classes)
    precision_recall_at(predictions, truths, num_classes=num_classes, score_threshold=0.5)
    assert capsys.readouterr().out == ""
