"""YOLO box coding in the graph: targets ↔ decoded boxes, class-aware NMS and letterboxing, on hand-built cases."""

import math

import numpy as np
import pytest
import tensorflow as tf

from models.detection_graph import (
    decode_predictions,
    encode_targets,
    letterbox,
    non_max_suppression,
    to_original_pixels,
)
from models.image_graph import border_mean

ANCHORS = tf.constant([[10.0, 10.0], [30.0, 30.0], [20.0, 40.0]])
NUM_CLASSES = 10


def targets(boxes, classes):
    return encode_targets(
        tf.constant(boxes, tf.float32), tf.constant(classes), image_size=(128, 128), grid=(8, 8), anchors=ANCHORS
    ).numpy()


def prediction_from_target(target: np.ndarray, logit: float = 12.0) -> np.ndarray:
    """The raw output a perfect model would give for `target` (S, S, A, 6)."""
    prediction = np.zeros((*target.shape[:3], 5 + NUM_CLASSES), np.float32)
    offsets = np.clip(target[..., :2], 1e-6, 1 - 1e-6)
    prediction[..., :2] = np.log(offsets / (1 - offsets))
    prediction[..., 2:4] = target[..., 2:4]
    prediction[..., 4] = np.where(target[..., 4] > 0, logit, -logit)
    np.put_along_axis(prediction[..., 5:], target[..., 5:6].astype(int), logit, axis=-1)
    return prediction


def test_decoding_a_perfect_prediction_gives_back_the_encoded_boxes():
    boxes = np.array([[20, 36, 44, 60], [100, 4, 110, 24], [3.5, 90.25, 50, 127]], np.float32)
    raw = prediction_from_target(targets(boxes, [7, 3, 0]))[np.newaxis]
    decoded, scores = decode_predictions(tf.constant(raw), ANCHORS, image_size=(128, 128))
    assert decoded.shape == (1, 8 * 8 * 3, 4) and scores.shape == (1, 8 * 8 * 3, NUM_CLASSES)
    best = tf.argsort(tf.reduce_max(scores[0], axis=-1), direction="DESCENDING")[:3].numpy()
    found = sorted(
        zip(decoded.numpy()[0, best].tolist(), np.argmax(scores.numpy()[0, best], axis=-1).tolist()),
        key=lambda item: item[1],
    )
    np.testing.assert_allclose([box for box, _ in found], boxes[[2, 1, 0]], atol=1e-3)
    assert [label for _, label in found] == [0, 3, 7]
    assert float(tf.reduce_max(scores)) == pytest.approx(1.0, abs=1e-4)


def test_a_zero_prediction_is_its_anchor_centred_in_its_cell_with_score_half_over_classes():
    decoded, scores = decode_predictions(tf.zeros((1, 8, 8, 3, 15)), ANCHORS, image_size=(128, 128))
    boxes = decoded.numpy().reshape(8, 8, 3, 4)
    # Row 2, column 5: centre (5.5 × 16, 2.5 × 16) = (88, 40); anchor 2 is 20 × 40.
    np.testing.assert_allclose(boxes[2, 5, 2], [78, 20, 98, 60], atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), 0.5 / 10, atol=1e-7)


def test_huge_scale_predictions_are_clamped_to_finite_boxes():
    raw = np.zeros((1, 8, 8, 3, 15), np.float32)
    raw[..., 2:4] = 1e4
    decoded, _ = decode_predictions(tf.constant(raw), ANCHORS, image_size=(128, 128))
    assert np.all(np.isfinite(decoded.numpy()))


# --- non-max suppression -------------------------------------------------------------------------------


def nms(boxes, scores, *, score_threshold=0.6, iou_threshold=0.5, max_detections=10):
    found = non_max_suppression(
        tf.constant([boxes], tf.float32),
        tf.constant([scores], tf.float32),
        image_size=(100, 200),
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    count = int(found["count"][0])
    return found["boxes"].numpy()[0], found["scores"].numpy()[0], found["classes"].numpy()[0], count


def one_hot_scores(scores, classes, num_classes=3):
    table = np.zeros((len(scores), num_classes), np.float32)
    table[np.arange(len(scores)), classes] = scores
    return table


def test_nms_drops_low_scores_then_suppresses_overlaps_of_the_best():
    # Box 1 overlaps box 0 with IoU 64/136 ≈ 0.47 (kept at 0.5); box 2 overlaps box 0 with IoU 81/119 ≈ 0.68 (dropped).
    boxes = [[10, 10, 20, 20], [12, 12, 22, 22], [11, 11, 20, 20], [100, 50, 120, 90]]
    scores = one_hot_scores([0.9, 0.8, 0.85, 0.55], [0, 0, 0, 0])
    kept, kept_scores, _, count = nms(boxes, scores)
    assert count == 2
    np.testing.assert_allclose(kept[:count], [[10, 10, 20, 20], [12, 12, 22, 22]], atol=1e-4)
    np.testing.assert_allclose(kept_scores[:count], [0.9, 0.8], atol=1e-6)
    np.testing.assert_array_equal(kept[count:], 0)
    # A stricter IoU threshold suppresses box 1 too.
    assert nms(boxes, scores, iou_threshold=0.4)[3] == 1


def test_suppression_is_per_class():
    boxes = [[10, 10, 20, 20], [11, 11, 20, 20]]
    _, _, classes, count = nms(boxes, one_hot_scores([0.9, 0.8], [0, 2]))
    assert count == 2 and sorted(classes[:count].tolist()) == [0, 2]


def test_max_detections_keeps_the_best_and_boxes_are_clipped_to_the_image():
    boxes = [[x, 0, x + 10, 10] for x in range(0, 200, 20)] + [[-30, -5, 40, 130]]
    scores = one_hot_scores([0.7 + 0.01 * i for i in range(10)] + [0.99], [1] * 11)
    kept, kept_scores, _, count = nms(boxes, scores, max_detections=4)
    assert count == 4
    np.testing.assert_allclose(kept[0], [0, 0, 40, 100], atol=1e-4)
    np.testing.assert_allclose(kept_scores, [0.99, 0.79, 0.78, 0.77], atol=1e-6)


def test_thresholds_can_be_tensors_chosen_per_call():
    boxes = [[10, 10, 20, 20], [50, 50, 60, 60]]
    scores = one_hot_scores([0.9, 0.3], [0, 1])
    assert nms(boxes, scores, score_threshold=tf.constant(0.2))[3] == 2
    assert nms(boxes, scores, score_threshold=tf.constant(0.95))[3] == 0


# --- letterboxing ----------------------------------------------------------------------------------------


def ramp(height: int, width: int) -> tf.Tensor:
    values = np.arange(height * width, dtype=np.float32).reshape(1, height, width, 1) % 251
    return tf.constant(values)


def test_an_image_of_the_model_size_passes_through_unchanged():
    image = ramp(128, 128)
    canvas, scale, offset = letterbox(image, 128, 128)
    np.testing.assert_array_equal(canvas.numpy(), image.numpy())
    np.testing.assert_array_equal(scale.numpy(), [[1, 1]])
    np.testing.assert_array_equal(offset.numpy(), [[0, 0]])


def test_a_tall_image_is_scaled_to_fit_and_centred_between_border_coloured_bars():
    image = tf.concat([tf.fill([1, 256, 192, 1], 40.0)], axis=0)
    canvas, scale, offset = letterbox(image, 128, 128)
    # 256 × 192 → 128 × 96, so 16 columns of padding on each side.
    np.testing.assert_allclose(scale.numpy(), [[0.5, 0.5]])
    np.testing.assert_allclose(offset.numpy(), [[16, 0]])
    assert canvas.shape == (1, 128, 128, 1)
    np.testing.assert_allclose(canvas.numpy(), 40.0, atol=1e-4)


def test_padding_takes_the_mean_of_the_border():
    image = np.zeros((1, 4, 8, 1), np.float32)
    image[0, 0] = 80.0  # the top row: 8 of the 24 border pixel slots (rows and columns, corners twice)
    assert float(border_mean(tf.constant(image))[0]) == pytest.approx(80 * (8 + 2) / 24)
    canvas, _, offset = letterbox(tf.constant(image), 16, 16)
    np.testing.assert_allclose(offset.numpy(), [[0, 4]])
    np.testing.assert_allclose(canvas.numpy()[0, :4, :, 0], 80 * 10 / 24, atol=1e-4)


def test_boxes_map_back_to_the_original_pixels_and_are_clipped_to_it():
    image = ramp(60, 240)
    _, scale, offset = letterbox(image, 128, 128)
    original = np.array([[[24, 6, 120, 48], [200, 0, 240, 60]]], np.float32)
    on_canvas = original * np.tile(scale.numpy(), 2)[:, None] + np.tile(offset.numpy(), 2)[:, None]
    back = to_original_pixels(tf.constant(on_canvas), scale, offset, tf.constant([[60, 240]])).numpy()
    np.testing.assert_allclose(back, original, atol=1e-4)
    outside = to_original_pixels(
        tf.constant([[[-10.0, -10.0, 200.0, 200.0]]]), scale, offset, tf.constant([[60, 240]])
    ).numpy()
    np.testing.assert_allclose(outside, [[[0, 0, 240, 60]]])


def test_a_one_pixel_image_still_letterboxes():
    canvas, scale, _ = letterbox(tf.fill([1, 1, 1, 1], 9.0), 128, 128)
    np.testing.assert_allclose(canvas.numpy(), 9.0, atol=1e-4)
    assert math.isclose(float(scale[0, 0]), 128.0)
