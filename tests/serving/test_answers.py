"""The answers' JSON shape per task, from synthetic signature outputs (no model needed)."""

import numpy as np

from serving.answers import classifier_predictions, detector_predictions, seq2seq_predictions, to_json


def test_to_json_decodes_text_at_any_depth_and_unwraps_numbers():
    assert to_json(np.array([[b"a", "é".encode()], [b"\xff", b""]], dtype=object)) == [["a", "é"], ["\ufffd", ""]]
    assert to_json(np.float32(0.5)) == 0.5
    assert to_json(np.array([1, 2], np.int64)) == [1, 2]


def test_classifier_answers_rank_the_top_k():
    outputs = {
        "labels": np.array([b"7", b"1"], dtype=object),
        "scores": np.array([0.75, 0.5], np.float32),
        "top_k_labels": np.array([[b"7", b"1"], [b"1", b"7"]], dtype=object),
        "top_k_scores": np.array([[0.75, 0.25], [0.5, 0.5]], np.float32),
    }
    assert classifier_predictions(outputs) == [
        {"label": "7", "score": 0.75, "top_k": [{"label": "7", "score": 0.75}, {"label": "1", "score": 0.25}]},
        {"label": "1", "score": 0.5, "top_k": [{"label": "1", "score": 0.5}, {"label": "7", "score": 0.5}]},
    ]


def test_seq2seq_answers_list_the_beams():
    outputs = {
        "texts": np.array([b"1999-03-04"], dtype=object),
        "scores": np.array([-0.25], np.float32),
        "beam_texts": np.array([[b"1999-03-04", b"1999-04-03"]], dtype=object),
        "beam_scores": np.array([[-0.25, -2.5]], np.float32),
    }
    assert seq2seq_predictions(outputs) == [
        {
            "text": "1999-03-04",
            "score": -0.25,
            "beams": [{"text": "1999-03-04", "score": -0.25}, {"text": "1999-04-03", "score": -2.5}],
        }
    ]


def test_seq2seq_answers_say_not_a_date_and_keep_the_best_guess():
    outputs = {
        "texts": np.array([b"1999-03-04", b"2001-02-28"], dtype=object),
        "scores": np.array([-0.25, -0.5], np.float32),
        "beam_texts": np.array([[b"1999-03-04"], [b"2001-02-28"]], dtype=object),
        "beam_scores": np.array([[-0.25], [-0.5]], np.float32),
        "is_date": np.array([True, False]),
        "date_probability": np.array([0.875, 0.125], np.float32),
    }
    assert seq2seq_predictions(outputs) == [
        {
            "text": "1999-03-04",
            "score": -0.25,
            "beams": [{"text": "1999-03-04", "score": -0.25}],
            "date_probability": 0.875,
        },
        {
            "text": None,
            "reason": "not a date",
            "guess": "2001-02-28",
            "score": -0.5,
            "beams": [{"text": "2001-02-28", "score": -0.5}],
            "date_probability": 0.125,
        },
    ]


def test_seq2seq_attention_is_cut_to_the_characters_read_and_written():
    # Two texts of two and one characters, answers of one and two (the second a guess): the graph pads the
    # source to the longest text and the rows to the longest answer it may write, [END] included.
    attention = np.zeros((2, 3, 2), np.float32)
    attention[0, 0] = [0.25, 0.75]
    attention[1, :2, 0] = 1.0
    outputs = {
        "texts": np.array([b"7", "٣é".encode()], dtype=object),
        "scores": np.array([-0.25, -0.5], np.float32),
        "beam_texts": np.array([[b"7"], ["٣é".encode()]], dtype=object),
        "beam_scores": np.array([[-0.25], [-0.5]], np.float32),
        "is_date": np.array([True, False]),
        "date_probability": np.array([0.875, 0.125], np.float32),
        "attention": attention,
        "source_characters": np.array([[b"a", b" "], ["ß".encode(), b""]], dtype=object),
    }
    predictions = seq2seq_predictions(outputs)
    assert [prediction["attention"] for prediction in predictions] == [
        {"source": ["a", " "], "output": ["7"], "weights": [[0.25, 0.75]]},
        {"source": ["ß"], "output": ["٣", "é"], "weights": [[1.0], [1.0]]},
    ]
    assert predictions[1]["guess"] == "٣é" and predictions[1]["text"] is None


def test_detector_answers_drop_the_padding_after_count():
    outputs = {
        "count": np.array([1, 0], np.int32),
        "boxes": np.array([[[1, 2, 3, 4], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32),
        "classes": np.array([[3, 0], [0, 0]], np.int64),
        "labels": np.array([[b"3", b""], [b"", b""]], dtype=object),
        "scores": np.array([[0.875, 0.0], [0.0, 0.0]], np.float32),
    }
    answer = detector_predictions(outputs)
    assert answer == [
        {"detections": [{"box": [1.0, 2.0, 3.0, 4.0], "label": "3", "class_id": 3, "score": 0.875}]},
        {"detections": []},
    ]
    assert all(type(value) in (list, str, int, float) for value in answer[0]["detections"][0].values())
