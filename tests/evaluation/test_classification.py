import json

import numpy as np
import pytest
from sklearn import metrics

from pipelines.evaluation.classification import (
    Diagnosis,
    calibrate_threshold,
    classification_report,
    confusion_matrix,
    detection_report,
    diagnose_bias_variance,
)


def positive_class_scores(y_true, y_pred) -> tuple[float, float, float]:
    """Precision, recall and F1 of label 1 in a two-class report."""
    scores = classification_report(y_true, y_pred, ["negative", "positive"])["per_class"]["positive"]
    return scores["precision"], scores["recall"], scores["f1"]


def test_precision_recall_f1_hand_example():
    # Two positives, one found, one false alarm: 1 true positive, 1 false positive, 1 false negative.
    y_true = [0, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    y_pred = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    assert positive_class_scores(y_true, y_pred) == pytest.approx((0.5, 0.5, 0.5))


def test_predicting_all_positive_is_punished_by_f1():
    # 1% positives and a model that always says "positive": its recall is perfect, but F1, the harmonic mean of
    # precision and recall, stays near the poor precision, so always answering "positive" does not pay.
    y_true = np.zeros(100, dtype=int)
    y_true[0] = 1
    precision, recall, f1 = positive_class_scores(y_true, np.ones(100, dtype=int))
    assert (precision, recall) == pytest.approx((0.01, 1.0))
    assert f1 == pytest.approx(2 * 0.01 / 1.01)
    assert f1 == pytest.approx(0.0198, abs=1e-4)


@pytest.mark.parametrize(
    "y_true, y_pred",
    [
        ([0, 1, 1, 0], [0, 0, 0, 0]),  # nothing predicted positive: precision has no denominator
        ([0, 0, 0, 0], [1, 0, 0, 0]),  # no actual positives: recall has no denominator
    ],
)
def test_zero_division_scores_zero(y_true, y_pred):
    scores = positive_class_scores(y_true, y_pred)
    assert scores == (0.0, 0.0, 0.0)
    assert not any(np.isnan(scores))


def test_classification_report_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        classification_report([0, 1], [0, 1, 1], ["a", "b"])


def test_confusion_matrix_hand_example():
    y_true = [0, 0, 1, 1, 1, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    assert confusion_matrix(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError):
        confusion_matrix([0, 3], [0, 1], 3)


def test_classification_report_hand_example():
    report = classification_report([0, 0, 1, 1, 1, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c"])
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [1, 0, 0]]
    assert report["accuracy"] == pytest.approx(3 / 6)
    assert report["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["macro"]["recall"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    json.dumps(report)


def test_classification_report_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    num_classes = 6
    # Class 5 never occurs and class 0 is never predicted, so both zero-division paths are exercised.
    y_true = rng.integers(0, num_classes - 1, size=300)
    y_pred = np.where(rng.random(300) < 0.6, y_true, rng.integers(1, num_classes, size=300))
    y_pred[y_pred == 0] = 1
    names = [f"class_{k}" for k in range(num_classes)]
    labels = list(range(num_classes))

    report = classification_report(y_true, y_pred, names)

    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    assert report["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    assert report["confusion_matrix"] == metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    for k, name in enumerate(names):
        scores = report["per_class"][name]
        assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((precision[k], recall[k], f1[k]))
        assert scores["support"] == support[k]
    macro = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    assert (report["macro"]["precision"], report["macro"]["recall"], report["macro"]["f1"]) == pytest.approx(macro[:3])
    assert json.loads(json.dumps(report)) == report


@pytest.mark.parametrize(
    "errors, diagnosis",
    [
        # Human error 0%: avoidable bias is the train error, variance the dev - train gap.
        ({"train_error": 0.01, "dev_error": 0.11}, "high variance"),
        ({"train_error": 0.15, "dev_error": 0.16}, "high bias"),
        ({"train_error": 0.15, "dev_error": 0.30}, "high bias and high variance"),
        ({"train_error": 0.005, "dev_error": 0.01}, "good fit"),
        # A train-dev split (train's distribution, not trained on) separates variance from data mismatch.
        ({"train_error": 0.01, "train_dev_error": 0.09, "dev_error": 0.10}, "high variance"),
        ({"train_error": 0.01, "train_dev_error": 0.015, "dev_error": 0.10}, "data mismatch"),
        # Test much worse than dev with everything else fine.
        ({"train_error": 0.01, "dev_error": 0.015, "test_error": 0.06}, "overfit to dev"),
        ({"train_error": 0.01, "dev_error": 0.015, "test_error": 0.02}, "good fit"),
    ],
)
def test_diagnoses(errors, diagnosis):
    assert diagnose_bias_variance(**errors).diagnosis == diagnosis


def test_diagnosis_gaps_and_actions():
    result = diagnose_bias_variance(train_error=0.01, train_dev_error=0.015, dev_error=0.10, test_error=0.11)
    assert result.avoidable_bias == pytest.approx(0.01)
    assert result.variance == pytest.approx(0.005)
    assert result.mismatch == pytest.approx(0.085)
    assert result.dev_test_gap == pytest.approx(0.01)
    assert result.action == "synthesize data like the dev set, collect target data"
    assert diagnose_bias_variance(train_error=0.15, dev_error=0.16).action == "bigger network, train longer"
    assert "regularization" in diagnose_bias_variance(train_error=0.01, dev_error=0.11).action


def test_human_error_sets_the_bias_baseline():
    # 15% train error is not high bias when humans also get 15% wrong: only the gap to human error is avoidable.
    result = diagnose_bias_variance(train_error=0.15, dev_error=0.16, human_error=0.15)
    assert result.diagnosis == "good fit"
    assert result.avoidable_bias == pytest.approx(0.0)


def test_threshold_is_configurable():
    assert diagnose_bias_variance(train_error=0.01, dev_error=0.11, threshold=0.2).diagnosis == "good fit"


def test_diagnosis_to_dict_is_json_ready():
    result = diagnose_bias_variance(train_error=0.01, dev_error=0.11)
    as_dict = result.to_dict()
    assert set(as_dict) == {"diagnosis", "action", "avoidable_bias", "variance", "mismatch", "dev_test_gap"}
    assert as_dict["mismatch"] is None and as_dict["dev_test_gap"] is None
    assert Diagnosis(**json.loads(json.dumps(as_dict))) == result


def test_percentages_are_rejected():
    with pytest.raises(ValueError, match="fraction"):
        diagnose_bias_variance(train_error=1.0, dev_error=11.0)


def test_detection_report_counts_what_the_threshold_decides():
    report = detection_report([0.9, 0.6, 0.4, 0.1, 0.7], [True, True, True, False, False], threshold=0.5)
    assert report == {
        "threshold": 0.5,
        "precision": pytest.approx(2 / 3),
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(2 / 3),
        "positives": 3,
        "negatives": 2,
        "false_positives": 1,
        "false_negatives": 1,
    }
    assert detection_report([0.5], [True], threshold=0.5)["recall"] == 1.0  # the threshold itself is positive
    sklearn_precision = metrics.precision_score([1, 1, 1, 0, 0], [1, 1, 0, 0, 1])
    assert report["precision"] == pytest.approx(sklearn_precision)
    with pytest.raises(ValueError, match="one length"):
        detection_report([0.5, 0.5], [True], threshold=0.5)


def test_a_calibrated_threshold_sits_in_the_middle_of_the_gap_on_a_log_scale():
    # Negatives at 1e-6 and 1e-4, positives at 1e-2 and 0.9: every threshold in (1e-4, 1e-2] is right.
    threshold = calibrate_threshold([1e-6, 1e-4, 1e-2, 0.9], [False, False, True, True])
    assert threshold == pytest.approx(1e-3)
    assert detection_report([1e-6, 1e-4, 1e-2, 0.9], [False, False, True, True], threshold)["f1"] == 1.0


def test_a_calibrated_threshold_decides_the_most_examples_right_when_the_sides_overlap():
    rng = np.random.default_rng(0)
    positives = rng.random(400) < 0.7
    scores = np.where(positives, rng.beta(5, 2, 400), rng.beta(2, 5, 400))
    threshold = calibrate_threshold(scores, positives)

    def right(candidate: float) -> int:
        return int(np.sum((scores >= candidate) == positives))

    assert right(threshold) == max(right(candidate) for candidate in np.linspace(0, 1, 1001))
