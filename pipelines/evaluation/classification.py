"""Metrics and the bias/variance diagnosis shared by every model family.

Scores follow scikit-learn's conventions (zero_division=0, macro = unweighted mean over classes) so reports
can be checked against it, while staying plain numpy and JSON-serialisable.
"""

from dataclasses import asdict, dataclass

import numpy as np

ACTIONS = {
    "high bias": "bigger network, train longer",
    "high variance": "more data, regularization (L2, dropout), augmentation",
    "high bias and high variance": "change the architecture, clean the data",
    "data mismatch": "synthesize data like the dev set, collect target data",
    "overfit to dev": "get a bigger dev set",
    "good fit": "keep the model",
}


def _ratio(numerator: float, denominator: float) -> float:
    # An empty denominator (no predictions or no examples of a class) scores 0, as sklearn's zero_division=0.
    return float(numerator / denominator) if denominator else 0.0


def _scores(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return precision, recall, _ratio(2 * precision * recall, precision + recall)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Counts of (true, predicted) label pairs: rows are true labels, columns predicted ones."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"expected two label vectors of one length, got {y_true.shape} and {y_pred.shape}")
    labels = np.concatenate([y_true, y_pred])
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def detection_report(probabilities, positives, threshold: float) -> dict[str, float | int]:
    """Precision and recall of "positive" decided as `probability >= threshold`, with the counts behind them."""
    predicted, actual = _binary(probabilities, positives, threshold)
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    precision, recall, f1 = _scores(tp, fp, fn)
    return {
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "positives": int(actual.sum()),
        "negatives": int((~actual).sum()),
        "false_positives": fp,
        "false_negatives": fn,
    }


def calibrate_threshold(probabilities, positives) -> float:
    """The threshold on `probability >= threshold` that decides the most examples right.

    Every threshold between two neighbouring probabilities decides alike, so among the best such gaps the
    widest (in log-probability: the scores span orders of magnitude) is taken, at its geometric middle:
    the threshold furthest from both sides' examples.
    """
    _, actual = _binary(probabilities, positives, 0.0)
    scores = np.asarray(probabilities, np.float64)
    edges = np.unique(np.concatenate([scores, [0.0, 1.0]]))
    correct = np.array([np.sum((scores >= edge) == actual) for edge in edges])
    best = np.flatnonzero(correct == correct.max())
    floor = 1e-12  # a gap down to probability 0 is measured from here
    lows = np.maximum(edges[np.maximum(best - 1, 0)], floor)
    highs = np.maximum(edges[best], floor)
    widest = int(np.argmax(np.log(highs) - np.log(lows)))
    return float(np.sqrt(lows[widest] * highs[widest]))


def _binary(probabilities, positives, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    scores, actual = np.asarray(probabilities, np.float64), np.asarray(positives, bool)
    if scores.shape != actual.shape or scores.ndim != 1:
        raise ValueError(f"expected two vectors of one length, got {scores.shape} and {actual.shape}")
    return scores >= threshold, actual


def classification_report(y_true, y_pred, class_names: list[str]) -> dict:
    """Accuracy, macro and per-class precision/recall/F1 and the confusion matrix, as JSON-ready values."""
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    if not matrix.sum():
        raise ValueError("cannot report on zero examples")
    tp = np.diag(matrix)
    per_class = {}
    for k, class_name in enumerate(class_names):
        fp = matrix[:, k].sum() - tp[k]
        fn = matrix[k, :].sum() - tp[k]
        precision, recall, f1 = _scores(tp[k], fp, fn)
        per_class[class_name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(matrix[k, :].sum()),
        }
    macro = {
        metric: float(np.mean([scores[metric] for scores in per_class.values()]))
        for metric in ("precision", "recall", "f1")
    }
    return {
        "accuracy": float(tp.sum() / matrix.sum()),
        "macro": macro,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


@dataclass(frozen=True)
class Diagnosis:
    """Which gap dominates a model's errors, and what to do about it."""

    diagnosis: str
    action: str
    avoidable_bias: float
    variance: float
    mismatch: float | None
    dev_test_gap: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def diagnose_bias_variance(
    *,
    train_error: float,
    dev_error: float,
    test_error: float | None = None,
    train_dev_error: float | None = None,
    human_error: float = 0.0,
    threshold: float = 0.02,
) -> Diagnosis:
    """Diagnoses bias, variance, data mismatch and dev-set overfitting from error rates (fractions, not %).

    Avoidable bias is train - human error; variance is dev - train error, or train-dev - train error when a
    train-dev split (same distribution as train) is given, in which case dev - train-dev is the mismatch;
    test - dev error measures overfitting to the dev set. A gap counts when it exceeds `threshold`.
    """
    errors = {
        "train_error": train_error,
        "dev_error": dev_error,
        "test_error": test_error,
        "train_dev_error": train_dev_error,
        "human_error": human_error,
    }
    for label, error in errors.items():
        # Percentages passed by mistake (11 for 11%) would otherwise yield a plausible but wrong diagnosis.
        if error is not None and not 0.0 <= error <= 1.0:
            raise ValueError(f"{label} must be a fraction in [0, 1], got {error}")

    avoidable_bias = train_error - human_error
    if train_dev_error is None:
        variance, mismatch = dev_error - train_error, None
    else:
        variance, mismatch = train_dev_error - train_error, dev_error - train_dev_error
    dev_test_gap = None if test_error is None else test_error - dev_error

    high_bias = avoidable_bias > threshold
    high_variance = variance > threshold
    # Problems are reported in the order they should be fixed: fit train, then train-dev, dev and test.
    if high_bias and high_variance:
        diagnosis = "high bias and high variance"
    elif high_bias:
        diagnosis = "high bias"
    elif high_variance:
        diagnosis = "high variance"
    elif mismatch is not None and mismatch > threshold:
        diagnosis = "data mismatch"
    elif dev_test_gap is not None and dev_test_gap > threshold:
        diagnosis = "overfit to dev"
    else:
        diagnosis = "good fit"
    return Diagnosis(
        diagnosis=diagnosis,
        action=ACTIONS[diagnosis],
        avoidable_bias=avoidable_bias,
        variance=variance,
        mismatch=mismatch,
        dev_test_gap=dev_test_gap,
    )
