"""A YOLO-style single-shot detector: a convolutional backbone and a prediction head on an S×S grid.

`build_yolo` returns an uncompiled Functional `keras.Model`:

    input   image (N, H, W, C) float32, 0–255 (scaling lives inside the model)
    output  (N, S, S, A, 5 + num_classes) raw predictions per grid cell and anchor:
            tx, ty (cell offsets, through a sigmoid), tw, th (log-scale factors of the anchor),
            objectness logit, class logits

with S = H / 2^downsamplings. Decoding these into boxes, and non-max suppression, happen in the
exported graph, not in the model, so training sees the raw values its loss needs.
"""

import keras
import tensorflow as tf
from keras import layers

LEAKY_SLOPE = 0.1  # YOLO's leaky ReLU


def conv_block(x, filters: int, kernel_size: int = 3, strides: int = 1, *, name: str):
    """Conv → BatchNorm → LeakyReLU, the unit every YOLO backbone is built from."""
    # BatchNormalization's beta takes the role of the bias.
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.LeakyReLU(LEAKY_SLOPE, name=f"{name}_act")(x)


def residual_block(x, filters: int, *, name: str):
    """1×1 bottleneck then 3×3, added to the input (Darknet-53's block)."""
    shortcut = x
    x = conv_block(x, filters // 2, 1, name=f"{name}_reduce")
    x = conv_block(x, filters, 3, name=f"{name}_expand")
    return layers.Add(name=f"{name}_add")([shortcut, x])


def build_yolo(
    *,
    input_shape: tuple[int, int, int] = (128, 128, 1),
    num_classes: int = 10,
    num_anchors: int = 3,
    base_filters: int = 16,
    downsamplings: int = 4,
    residual_blocks: int = 1,
    name: str = "yolo",
) -> keras.Model:
    """Builds the detector.

    Args:
        input_shape: (height, width, channels); height and width divisible by 2^downsamplings.
        num_classes: number of object classes.
        num_anchors: anchor boxes per grid cell (A).
        base_filters: filters of the first convolution; each downsampling doubles them.
        downsamplings: stride-2 convolutions; the grid is (height / 2^downsamplings) cells a side.
        residual_blocks: residual blocks after each downsampling.
        name: model name.
    """
    height, width, _ = input_shape
    stride = 2**downsamplings
    if height % stride or width % stride:
        raise ValueError(f"input height and width must be divisible by {stride} (2^{downsamplings}), got {height}×{width}")
    image = keras.Input(shape=input_shape, name="image")
    x = layers.Rescaling(1 / 255.0, name="scale")(image)
    x = conv_block(x, base_filters, name="stem")
    filters = base_filters
    for stage in range(1, downsamplings + 1):
        filters *= 2
        x = conv_block(x, filters, strides=2, name=f"down{stage}")
        for block in range(residual_blocks):
            x = residual_block(x, filters, name=f"stage{stage}_res{block}")
    x = conv_block(x, filters, name="head")
    outputs = layers.Conv2D(num_anchors * (5 + num_classes), 1, name="predictions")(x)
    grid_h, grid_w = height // stride, width // stride
    outputs = layers.Reshape((grid_h, grid_w, num_anchors, 5 + num_classes), name="per_anchor")(outputs)
    return keras.Model(image, outputs, name=name)


# --- training targets and loss ---------------------------------------------------------------------

TARGET_FIELDS = 6  # x offset in cell, y offset in cell, log(w / anchor w), log(h / anchor h), objectness, class id


def anchor_iou(box_wh: tf.Tensor, anchors: tf.Tensor) -> tf.Tensor:
    """IoU of boxes (K, 2) and anchors (A, 2) as if they shared a centre: (K, A). Picks each box's anchor."""
    intersection = tf.reduce_prod(tf.minimum(box_wh[:, tf.newaxis], anchors[tf.newaxis]), axis=-1)
    union = tf.reduce_prod(box_wh, axis=-1)[:, tf.newaxis] + tf.reduce_prod(anchors, axis=-1)[tf.newaxis] - intersection
    return intersection / tf.maximum(union, 1e-9)


def encode_targets(boxes: tf.Tensor, classes: tf.Tensor, *, image_size: tuple[int, int], grid: tuple[int, int], anchors: tf.Tensor) -> tf.Tensor:
    """One image's boxes (K, 4) xyxy pixels and classes (K,) → the (S_h, S_w, A, 6) training target.

    Each box is the responsibility of one prediction: the grid cell holding its centre, with the anchor
    whose shape overlaps it most (best-anchor IoU). If two boxes claim the same cell and anchor, the
    later one wins; with cells a few digits wide that is rare.
    """
    height, width = image_size
    grid_h, grid_w = grid
    anchors = tf.cast(anchors, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    size = tf.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
    cell_size = tf.constant([width / grid_w, height / grid_h], tf.float32)
    scaled = centre / cell_size
    cell = tf.clip_by_value(tf.cast(tf.floor(scaled), tf.int32), 0, tf.constant([grid_w - 1, grid_h - 1]))
    anchor = tf.argmax(anchor_iou(size, anchors), axis=1, output_type=tf.int32)
    values = tf.concat(
        [
            scaled - tf.cast(cell, tf.float32),
            tf.math.log(size / tf.gather(anchors, anchor)),
            tf.ones_like(size[:, :1]),
            tf.cast(classes, tf.float32)[:, tf.newaxis],
        ],
        axis=1,
    )
    indices = tf.stack([cell[:, 1], cell[:, 0], anchor], axis=1)
    target = tf.zeros([grid_h, grid_w, tf.shape(anchors)[0], TARGET_FIELDS])
    return tf.tensor_scatter_nd_update(target, indices, values)


def _per_image(values: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(values, axis=[1, 2, 3])


@keras.saving.register_keras_serializable(package="modelservice")
class YoloLoss(keras.losses.Loss):
    """Sum over predictions of: box offsets (MSE on the sigmoid cell offsets and the log scale factors) and
    class cross-entropy where an object is assigned; objectness BCE everywhere, down-weighted where there is
    none (most cells are empty). Averaged over images."""

    def __init__(self, *, box_weight: float = 5.0, no_object_weight: float = 0.5, name: str = "yolo_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.box_weight = box_weight
        self.no_object_weight = no_object_weight

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
        class_error = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y_true[..., 5], tf.int32), logits=y_pred[..., 5:])
        weights = has_object + self.no_object_weight * (1.0 - has_object)
        return {
            "box": self.box_weight * _per_image(has_object * (offset_error + scale_error)),
            "objectness": _per_image(weights * objectness),
            "class": _per_image(has_object * class_error),
        }

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight, "no_object_weight": self.no_object_weight}
