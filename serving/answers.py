"""The served answers' JSON shape per task, from a signature's output arrays (no TensorFlow here:
the server's parent process and `modelservice predict` format answers without loading it)."""

from typing import Any

import numpy as np


def to_json(value: Any) -> Any:
    """Tensor values as JSON: bytes become text, numpy scalars become Python numbers."""
    value = np.asarray(value)
    if value.dtype.kind in "SO":
        return np.vectorize(lambda item: item.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def seq2seq_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    texts = to_json(outputs["texts"])
    beam_texts = to_json(outputs["beam_texts"])
    return [
        {
            "text": texts[row],
            "score": float(outputs["scores"][row]),
            "beams": [
                {"text": text, "score": float(score)}
                for text, score in zip(beam_texts[row], outputs["beam_scores"][row])
            ],
        }
        for row in range(len(texts))
    ]


def classifier_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    labels = to_json(outputs["labels"])
    top_labels = to_json(outputs["top_k_labels"])
    return [
        {
            "label": labels[row],
            "score": float(outputs["scores"][row]),
            "top_k": [
                {"label": label, "score": float(score)}
                for label, score in zip(top_labels[row], outputs["top_k_scores"][row])
            ],
        }
        for row in range(len(labels))
    ]


def detector_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per image, its first `count` detections (the rest is padding), best first.

    Boxes are [x1, y1, x2, y2] in the image's own pixels.
    """
    labels = to_json(outputs["labels"])
    return [
        {
            "detections": [
                {
                    "box": outputs["boxes"][row, index].tolist(),
                    "label": labels[row][index],
                    "class_id": int(outputs["classes"][row, index]),
                    "score": float(outputs["scores"][row, index]),
                }
                for index in range(int(count))
            ]
        }
        for row, count in enumerate(outputs["count"])
    ]
