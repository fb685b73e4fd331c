"""The YOLO-style detector: builder output layout, training targets and the loss on hand-built cases."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.box_ops import wh_iou_tf
from models.detection_graph import encode_targets
from models.detector import YoloLoss, build_yolo


def test_output_is_one_prediction_vector_per_cell_and_anchor():
    keras.utils.set_random_seed(0)
    model = build_yolo(input_shape=(128, 128, 1), num_classes=10, num_anchors=3)
    outputs = model(np.zeros((2, 128, 128, 1), np.float32))
    assert outputs.shape == (2, 8, 8, 3, 15)


@pytest.mark.parametrize("downsamplings, grid", [(3, 16), (5, 4)])
def test_grid_follows_the_downsampling(downsamplings, grid):
    model = build_yolo(
        input_shape=(128, 96, 3), num_classes=2, num_anchors=2, base_filters=8, downsamplings=downsamplings
    )
    assert model.output_shape == (None, grid, grid * 3 // 4, 2, 7)


@pytest.mark.parametrize("head_convolutions", [0, 1, 2])
def test_head_convolutions_sit_between_the_last_stage_and_the_predictions(head_convolutions):
    model = build_yolo(
        input_shape=(32, 32, 1), num_classes=2, num_anchors=1, base_filters=4, downsamplings=2,
        head_convolutions=head_convolutions,
    )  # fmt: skip
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convolutions) == 1 + 2 * 3 + head_convolutions + 1  # stem, stages, head, predictions
    head = [layer.name for layer in convolutions if layer.name.startswith("head")]
    assert len(head) == head_convolutions and all(layer.kernel_size == (3, 3) for layer in convolutions[7:-1])
    fed_by = "stage2_res0_add" if head_convolutions == 0 else "head_act" if head_convolutions == 1 else "head2_act"
    assert model.get_layer("predictions").input is model.get_layer(fed_by).output
    assert model.output_shape == (None, 8, 8, 1, 7)


def test_indivisible_input_is_refused():
    with pytest.raises(ValueError, match="divisible by 16"):
        build_yolo(input_shape=(100, 128, 1))


def test_input_scaling_lives_inside_the_model():
    model = build_yolo(input_shape=(32, 32, 1), num_classes=1, num_anchors=1, base_filters=4, downsamplings=2)
    assert model.get_layer("scale").scale == pytest.approx(1 / 255)


def test_every_batch_norm_keeps_the_asked_share_of_its_running_statistics():
    model = build_yolo(input_shape=(32, 32, 1), num_classes=1, base_filters=4, downsamplings=2, batch_norm_momentum=0.9)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 1 + 2 * 3 + 1  # stem, each stage's downsampling and residual pair, head
    assert {layer.momentum for layer in norms} == {0.9}
    default = build_yolo(input_shape=(32, 32, 1), downsamplings=2)
    assert {layer.momentum for layer in default.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.99}


# --- targets and loss ---------------------------------------------------------------------------------

ANCHORS = tf.constant([[10.0, 10.0], [30.0, 30.0], [20.0, 40.0]])


def targets(boxes, classes):
    return encode_targets(
        tf.constant(boxes, tf.float32), tf.constant(classes), image_size=(128, 128), grid=(8, 8), anchors=ANCHORS
    ).numpy()


def test_anchor_iou_compares_shapes_only():
    iou = wh_iou_tf(tf.constant([[24.0, 24.0]]), ANCHORS).numpy()[0]
    np.testing.assert_allclose(iou, [100 / 576, 576 / 900, 480 / 896], rtol=1e-6)


def test_each_box_goes_to_its_centre_cell_and_best_anchor():
    target = targets([[20, 36, 44, 60], [100, 4, 110, 24]], [7, 3])
    assert target.shape == (8, 8, 3, 6)
    # 24×24 box centred at (32, 48): cell column 2, row 3, offset (0, 0); anchor 30×30 fits best.
    np.testing.assert_allclose(target[3, 2, 1], [0, 0, math.log(0.8), math.log(0.8), 1, 7], atol=1e-6)
    # 10×20 box centred at (105, 14): cell column 6, row 0, offset (0.5625, 0.875); anchor 10×10 (IoU 0.5) wins.
    np.testing.assert_allclose(target[0, 6, 0], [0.5625, 0.875, 0, math.log(2), 1, 3], atol=1e-6)
    assert target[..., 4].sum() == 2


def test_an_image_without_boxes_has_an_all_zero_target():
    target = encode_targets(
        tf.zeros([0, 4]), tf.zeros([0], tf.int32), image_size=(128, 128), grid=(8, 8), anchors=ANCHORS
    )
    assert target.shape == (8, 8, 3, 6) and float(tf.reduce_sum(tf.abs(target))) == 0.0


def test_a_box_centre_on_the_far_edge_stays_in_the_grid():
    target = targets([[120, 120, 128, 128]], [1])
    assert target[7, 7, :, 4].sum() == 1


def perfect_prediction(target: np.ndarray, num_classes: int = 10) -> np.ndarray:
    prediction = np.zeros((*target.shape[:3], 5 + num_classes), np.float32)
    offsets = np.clip(target[..., :2], 1e-4, 1 - 1e-4)
    prediction[..., :2] = np.log(offsets / (1 - offsets))
    prediction[..., 2:4] = target[..., 2:4]
    prediction[..., 4] = np.where(target[..., 4] > 0, 30.0, -30.0)
    classes = target[..., 5].astype(int)
    prediction[..., 5:] = -30.0
    np.put_along_axis(prediction[..., 5:], classes[..., None], 30.0, axis=-1)
    return prediction


def test_loss_of_a_perfect_prediction_is_about_zero():
    target = targets([[24, 40, 40, 56], [100, 4, 110, 24]], [7, 3])[None]
    loss = YoloLoss()(tf.constant(target), tf.constant(perfect_prediction(target[0])[None]))
    assert float(loss) < 1e-3


def test_loss_terms_of_an_all_zero_prediction_match_a_hand_computation():
    target = targets([[24, 40, 40, 56]], [7])[None]  # one 16×16 box centred at (32, 48): offsets (0, 0), anchor 10×10
    components = {
        key: float(value[0])
        for key, value in YoloLoss().components(tf.constant(target), tf.zeros((1, 8, 8, 3, 15))).items()
    }
    scale = math.log(1.6)
    assert components["box"] == pytest.approx(5.0 * (0.25 + 0.25 + scale**2 + scale**2), rel=1e-5)
    assert components["objectness"] == pytest.approx(math.log(2) * (1 + 0.5 * (8 * 8 * 3 - 1)), rel=1e-5)
    assert components["class"] == pytest.approx(math.log(10), rel=1e-5)


def test_predictions_start_from_the_objectness_prior():
    model = build_yolo(
        input_shape=(32, 32, 1), num_classes=4, num_anchors=2, base_filters=4, downsamplings=2, objectness_prior=0.01
    )
    bias = model.get_layer("predictions").bias.numpy().reshape(2, 9)
    np.testing.assert_allclose(bias[:, 4], math.log(0.01 / 0.99), rtol=1e-6)
    assert not np.any(np.delete(bias, 4, axis=1))


def test_the_class_weight_scales_only_the_class_term():
    target = targets([[24, 40, 40, 56]], [7])[None]
    prediction = tf.zeros((1, 8, 8, 3, 15))
    plain, weighted = (
        YoloLoss().components(tf.constant(target), prediction),
        YoloLoss(class_weight=3.0).components(tf.constant(target), prediction),
    )
    assert float(weighted["class"][0]) == pytest.approx(3 * float(plain["class"][0]))
    assert float(weighted["box"][0]) == float(plain["box"][0]) and float(weighted["objectness"][0]) == float(
        plain["objectness"][0]
    )
    assert YoloLoss.from_config(YoloLoss(class_weight=3.0).get_config()).class_weight == 3.0


def test_the_no_object_weight_scales_only_the_empty_predictions_objectness():
    target = targets([[24, 40, 40, 56]], [7])[None]
    components = YoloLoss(no_object_weight=0.125).components(tf.constant(target), tf.zeros((1, 8, 8, 3, 15)))
    assert float(components["objectness"][0]) == pytest.approx(math.log(2) * (1 + 0.125 * (8 * 8 * 3 - 1)), rel=1e-5)
    assert float(components["class"][0]) == pytest.approx(math.log(10), rel=1e-5)
    assert YoloLoss.from_config(YoloLoss(no_object_weight=0.125).get_config()).no_object_weight == 0.125
