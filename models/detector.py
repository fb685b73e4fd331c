"""A YOLO-style single-shot detector: a convolutional backbone and a prediction head on an S×S grid.

`build_yolo` returns an uncompiled Functional `keras.Model`:

    input   image (N, H, W, C) float32, 0–255 (scaling lives inside the model)
    output  (N, S, S, A, 5 + num_classes) raw predictions per grid cell and anchor:
            tx, ty (cell offsets, through a sigmoid), tw, th (log-scale factors of the anchor),
            objectness logit, class logits

with S = H / (stem_strides × 2^downsamplings). Encoding boxes into targets, decoding predictions into boxes and non-max
suppression live in `models/detection_graph.py` (they run in tf.data and in the exported graph), so the
model outputs the raw values its loss needs.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers

LEAKY_SLOPE = 0.1  # YOLO's leaky ReLU


def conv_block(x, filters: int, kernel_size: int = 3, strides: int = 1, *, momentum: float = 0.99, name: str):
    """Conv → BatchNorm → LeakyReLU, the unit every YOLO backbone is built from."""
    # BatchNormalization's beta takes the role of the bias.
    x = layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)


def residual_block(x, filters: int, *, momentum: float = 0.99, name: str):
    """1×1 bottleneck then 3×3, added to the input (Darknet-53's block)."""
    shortcut = x
    x = conv_block(x, filters // 2, 1, momentum=momentum, name=f"{name}_reduce")
    x = conv_block(x, filters, 3, momentum=momentum, name=f"{name}_expand")
    return layers.Add(name=f"{name}_add")([shortcut, x])


def build_yolo(
    *,
    input_shape: tuple[int, int, int] = (128, 128, 1),
    num_classes: int = 10,
    num_anchors: int = 3,
    base_filters: int = 16,
    downsamplings: int = 4,
    stem_strides: int = 1,
    residual_blocks: int = 1,
    head_convolutions: int = 1,
    objectness_prior: float = 0.01,
    batch_norm_momentum: float = 0.99,
    name: str = "yolo",
) -> keras.Model:
    """Builds the detector.

    Args:
        input_shape: (height, width, channels); height and width divisible by stem_strides × 2^downsamplings.
        num_classes: number of object classes.
        num_anchors: anchor boxes per grid cell (A).
        base_filters: filters of the first convolution; each downsampling doubles them.
        downsamplings: stride-2 convolutions after the stem.
        stem_strides: the first convolution's stride. At 2 the costliest layers, those at full resolution,
            are gone (a third of the step time for the same widths); objects of 12 px and more keep their
            shape at half resolution. The grid is height / (stem_strides × 2^downsamplings) cells a side.
        residual_blocks: residual blocks after each downsampling.
        head_convolutions: 3×3 convolutions between the last stage and the 1×1 predictions. With a stride-2
            stem the last stage's residual block already sees a digit whole; 0 saves a quarter of the FLOPs
            (the one at the widest filters) and trained the digit-scene detector as well.
        objectness_prior: the objectness every prediction starts with. Nearly all cells are empty, so a
            start at 0.5 would make the empty cells' loss swamp everything else for the first steps
            (the prior-probability initialisation of Lin et al., 2017).
        batch_norm_momentum: how much of its running mean and variance each BatchNormalization keeps per
            step. Keras's 0.99 needs several hundred steps before inference-mode statistics are the data's;
            a short run needs less (YOLOv5 keeps 0.97).
        name: model name.
    """
    height, width, _ = input_shape
    stride = stem_strides * 2**downsamplings
    if height % stride or width % stride:
        raise ValueError(
            f"input height and width must be divisible by {stride} ({stem_strides} × 2^{downsamplings}), "
            f"got {height}×{width}"
        )
    image = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 255.0, name="scale")(image)
    x = conv_block(x, base_filters, strides=stem_strides, momentum=batch_norm_momentum, name="stem")
    filters = base_filters
    for stage in range(1, downsamplings + 1):
        filters *= 2
        x = conv_block(x, filters, strides=2, momentum=batch_norm_momentum, name=f"down{stage}")
        for block in range(residual_blocks):
            x = residual_block(x, filters, momentum=batch_norm_momentum, name=f"stage{stage}_res{block}")
    for index in range(head_convolutions):  # the first keeps the name the single head convolution always had
        x = conv_block(x, filters, momentum=batch_norm_momentum, name="head" if index == 0 else f"head{index + 1}")
    outputs = layers.Conv2D(
        num_anchors * (5 + num_classes),
        1,
        name="predictions",
        bias_initializer=_objectness_bias(num_anchors, num_classes, objectness_prior),
    )(x)
    grid_h, grid_w = height // stride, width // stride
    outputs = layers.Reshape((grid_h, grid_w, num_anchors, 5 + num_classes), name="per_anchor")(outputs)
    return keras.Model(image, outputs, name=name)


def _objectness_bias(num_anchors: int, num_classes: int, prior: float) -> keras.initializers.Constant:
    """Zero biases except the objectness logits, which start at logit(prior)."""
    bias = np.zeros((num_anchors, 5 + num_classes), np.float32)
    bias[:, 4] = np.log(prior / (1 - prior))
    return keras.initializers.Constant(bias.reshape(-1).tolist())


# --- loss ------------------------------------------------------------------------------------------

# The training target per grid cell and anchor, as `models.detection_graph.encode_targets` writes it:
# x offset in cell, y offset in cell, log(w / anchor w), log(h / anchor h), objectness, class id.
TARGET_FIELDS = 6


def _per_image(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(values, axis=[1, 2, 3])


@keras.saving.register_keras_serializable(package="modelservice")
class YoloLoss(keras.losses.Loss):
    """Sum over predictions of: box offsets (MSE on the sigmoid cell offsets and the log scale factors) and
    class cross-entropy where an object is assigned; objectness BCE everywhere, down-weighted where there is
    none (most cells are empty). Averaged over images."""

    def __init__(
        self,
        *,
        box_weight: float = 5.0,
        no_object_weight: float = 0.5,
        class_weight: float = 1.0,
        name: str = "yolo_loss",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.box_weight = box_weight
        self.no_object_weight = no_object_weight
        self.class_weight = class_weight

    def call(self, y_true, y_pred):
        components = self.components(y_true, y_pred)
        return components["box"] + components["objectness"] + components["class"]

    def components(self, y_true, y_pred) -> dict[str, tf.Tensor]:
        """The three loss terms per image, (N,) each."""
        y_pred = tf.cast(y_pred, tf.float32)
        has_object = y_true[..., 4]
        offset_error = tf.reduce_sum(tf.square(tf.sigmoid(y_pred[..., 0:2]) - y_true[..., 0:2]), axis=-1)
        scale_error = tf.reduce_sum(tf.square(y_pred[..., 2:4] - y_true[..., 2:4]), axis=-1)
        objectness = tf.nn.sigmoid_cross_entropy_with_logits(labels=has_object, logits=y_pred[..., 4])
        class_error = tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y_true[..., 5], tf.int32), logits=y_pred[..., 5:]
        )
        weights = has_object + self.no_object_weight * (1.0 - has_object)
        return {
            "box": self.box_weight * _per_image(has_object * (offset_error + scale_error)),
            "objectness": _per_image(weights * objectness),
            "class": self.class_weight * _per_image(has_object * class_error),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "box_weight": self.box_weight,
            "no_object_weight": self.no_object_weight,
            "class_weight": self.class_weight,
        }


# The loss terms (at the default weights) as Keras metrics, so the training history and its plot show which part
# is still high.
@keras.saving.register_keras_serializable(package="modelservice")
def box_loss(y_true, y_pred):
    return YoloLoss().components(y_true, y_pred)["box"]


@keras.saving.register_keras_serializable(package="modelservice")
def objectness_loss(y_true, y_pred):
    return YoloLoss().components(y_true, y_pred)["objectness"]


@keras.saving.register_keras_serializable(package="modelservice")
def class_loss(y_true, y_pred):
    return YoloLoss().components(y_true, y_pred)["class"]


LOSS_METRICS = [box_loss, objectness_loss, class_loss]
