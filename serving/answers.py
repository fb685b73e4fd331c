"""The served answers' JSON shape per task, from a signature's output arrays (no TensorFlow here:
the server's parent process and `modelservice predict` format answers without loading it)."""

from typing import Any

import numpy as np


def to_json(value: Any) -> Any:
    """Tensor values as JSON: bytes become text, numpy scalars become Python numbers."""
    value = np.asarray(value)
    return _texts(value.tolist()) if value.dtype.kind in "SO" else value.tolist()


def _texts(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return [_texts(item) for item in value] if isinstance(value, list) else value


def ranked(
    outputs: dict[str, np.ndarray], *, best: tuple[str, str], ranking: tuple[str, str], key: str, listed: str
) -> list[dict[str, Any]]:
    """Per row, the best answer and the ranked alternatives, each {key: text, "score": number}.

    `best` and `ranking` name the (texts, scores) outputs: one per row, and a ranked list per row.
    """
    texts, scores = (to_json(outputs[name]) for name in best)
    ranked_texts, ranked_scores = (to_json(outputs[name]) for name in ranking)
    return [
        {
            key: text,
            "score": score,
            listed: [{key: other, "score": other_score} for other, other_score in zip(others, other_scores)],
        }
        for text, score, others, other_scores in zip(texts, scores, ranked_texts, ranked_scores)
    ]


NOT_A_DATE = "not a date"


def seq2seq_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per text, the answer, its score and the beams; where the graph says the input is not a date
    (`is_date`, in versions that have it), `"text": null` with the reason, and the best guess kept beside;
    from the attention signature, the attention behind the best answer (`attention_maps`)."""
    predictions = ranked(
        outputs, best=("texts", "scores"), ranking=("beam_texts", "beam_scores"), key="text", listed="beams"
    )
    if "attention" in outputs:
        for prediction, attention in zip(predictions, attention_maps(outputs)):
            prediction["attention"] = attention
    if "is_date" not in outputs:
        return predictions
    for prediction, is_date, probability in zip(
        predictions, to_json(outputs["is_date"]), to_json(outputs["date_probability"])
    ):
        prediction["date_probability"] = probability
        if not is_date:
            prediction.update(text=None, reason=NOT_A_DATE, guess=prediction["text"])
    return predictions


def attention_maps(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per text, {"source", "output", "weights"}: the characters the model read (normalised, as the graph
    reads them), those of its best answer (the guess too, where it says "not a date"), and weights[i][j], how
    much writing output character i attended to source character j. Cut to the real lengths: the graph pads
    the source to the batch's longest and the output to the longest answer it may write."""
    maps = []
    for source, text, weights in zip(
        to_json(outputs["source_characters"]), to_json(outputs["texts"]), outputs["attention"]
    ):
        source = [char for char in source if char]  # "" is padding: a character read is never empty
        output = list(text)
        maps.append({"source": source, "output": output, "weights": weights[: len(output), : len(source)].tolist()})
    return maps


def classifier_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return ranked(
        outputs, best=("labels", "scores"), ranking=("top_k_labels", "top_k_scores"), key="label", listed="top_k"
    )


def detector_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per image, its first `count` detections (the rest is padding), best first.

    Boxes are [x1, y1, x2, y2] in the image's own pixels.
    """
    predictions = []
    for row, count in enumerate(outputs["count"].tolist()):
        # Cut before converting: the graph pads to its maximum (100), and a scene has a few objects.
        labels, boxes, classes, scores = (to_json(outputs[name][row, :count]) for name in DETECTION_OUTPUTS)
        predictions.append(
            {
                "detections": [
                    {"box": box, "label": label, "class_id": class_id, "score": score}
                    for label, box, class_id, score in zip(labels, boxes, classes, scores)
                ]
            }
        )
    return predictions


DETECTION_OUTPUTS = ("labels", "boxes", "classes", "scores")
