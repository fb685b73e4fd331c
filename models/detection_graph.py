"""YOLO box coding in TensorFlow ops: training targets, prediction decoding, letterboxing and NMS.

Encoding (boxes → targets, in tf.data) and decoding (raw predictions → boxes, in the exported graph) are
inverses of each other, so they live together. Boxes are `[x1, y1, x2, y2]` pixels, as in `box_ops`.

Per grid cell (column i, row j, `cell` pixels a side) and anchor (w_a, h_a), the model predicts
(tx, ty, tw, th, objectness, class logits...):

    centre x = (i + sigmoid(tx)) * cell_w        width  = w_a * exp(tw)
    centre y = (j + sigmoid(ty)) * cell_h        height = h_a * exp(th)
    score per class = sigmoid(objectness) * softmax(class logits)

The exported graph letterboxes an image of any size onto the model's input (scaled to fit, aspect ratio
kept (antialiased bilinear), centred, the rest filled with `image_graph.border_mean`, as `scene_data.augment`
fills), then maps the detected boxes back to the pixels of the original image.
"""

import tensorflow as tf

from models.box_ops import wh_iou_tf
from models.detector import TARGET_FIELDS
from models.image_graph import border_mean

# exp() of a raw scale prediction above this would make a box 150 times its anchor: clamped, so an
# untrained or confused model cannot produce infinite boxes.
MAX_LOG_SCALE = 5.0


def encode_targets(
    boxes: tf.Tensor, classes: tf.Tensor, *, image_size: tuple[int, int], grid: tuple[int, int], anchors: tf.Tensor
) -> tf.Tensor:
    """One image's boxes (K, 4) xyxy pixels and classes (K,) → the (S_h, S_w, A, 6) training target.

    Each box is the responsibility of one prediction: the grid cell holding its centre, with the anchor
    whose shape overlaps it most (best-anchor IoU). If two boxes claim the same cell and anchor, the
    later one wins; with cells a few digits wide that is rare.
    """
    grid_h, grid_w = grid
    anchors = tf.cast(anchors, tf.float32)
    boxes = tf.cast(boxes, tf.float32)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    size = tf.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
    scaled = centre / _cell_size(image_size, grid)
    cell = tf.clip_by_value(tf.cast(tf.floor(scaled), tf.int32), 0, tf.constant([grid_w - 1, grid_h - 1]))
    anchor = tf.argmax(wh_iou_tf(size, anchors), axis=1, output_type=tf.int32)
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


def _cell_size(image_size: tuple[int, int], grid: tuple[int, int]) -> tf.Tensor:
    """(width, height) of one grid cell in pixels."""
    return tf.constant([image_size[1] / grid[1], image_size[0] / grid[0]], tf.float32)


def decode_predictions(
    raw: tf.Tensor, anchors: tf.Tensor, *, image_size: tuple[int, int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """Raw model output (N, S_h, S_w, A, 5 + C) → boxes (N, S_h·S_w·A, 4) xyxy pixels and class scores
    (N, S_h·S_w·A, C)."""
    raw = tf.cast(raw, tf.float32)
    grid_h, grid_w, num_anchors = raw.shape[1], raw.shape[2], raw.shape[3]
    columns, rows = tf.meshgrid(tf.range(grid_w, dtype=tf.float32), tf.range(grid_h, dtype=tf.float32))
    cells = tf.stack([columns, rows], axis=-1)[tf.newaxis, :, :, tf.newaxis]  # (1, S_h, S_w, 1, 2) as (x, y)
    centre = (cells + tf.sigmoid(raw[..., 0:2])) * _cell_size(image_size, (grid_h, grid_w))
    size = tf.cast(anchors, tf.float32) * tf.exp(tf.minimum(raw[..., 2:4], MAX_LOG_SCALE))
    boxes = tf.concat([centre - size / 2, centre + size / 2], axis=-1)
    scores = tf.sigmoid(raw[..., 4:5]) * tf.nn.softmax(raw[..., 5:], axis=-1)
    count = grid_h * grid_w * num_anchors
    return tf.reshape(boxes, [-1, count, 4]), tf.reshape(scores, [-1, count, raw.shape[4] - 5])


def non_max_suppression(
    boxes: tf.Tensor,
    scores: tf.Tensor,
    *,
    image_size: tuple[int, int],
    score_threshold: tf.Tensor | float,
    iou_threshold: tf.Tensor | float,
    max_detections: int,
) -> dict[str, tf.Tensor]:
    """Class-aware NMS over a batch: boxes (N, B, 4) pixels, scores (N, B, C) → the best `max_detections` per image.

    A box is kept when its score is above `score_threshold` and it overlaps no better box of the same
    class by more than `iou_threshold`. Boxes are clipped to the image. Outputs are padded with zeros
    after `count` detections, best first.
    """
    height, width = image_size
    extent = tf.constant([width, height, width, height], tf.float32)
    # The op clips to [0, 1] and compares coordinates only with each other, so normalised xyxy works as well as yxyx.
    nmsed = tf.image.combined_non_max_suppression(
        (boxes / extent)[:, :, tf.newaxis, :],
        scores,
        max_output_size_per_class=max_detections,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        clip_boxes=True,
    )
    return {
        "boxes": nmsed.nmsed_boxes * extent,
        "scores": nmsed.nmsed_scores,
        "classes": tf.cast(nmsed.nmsed_classes, tf.int32),
        "count": nmsed.valid_detections,
    }


def letterbox(images: tf.Tensor, height: int, width: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Fit a float batch (N, H, W, C) of one size onto (N, height, width, C), aspect ratio kept.

    Returns the canvas, the scale (N, 2) as (x, y) and the offset (N, 2) as (x, y) such that a point
    p of the original image lands at p * scale + offset on the canvas.
    """
    batch = tf.shape(images)[0]
    original = tf.cast(tf.shape(images)[1:3], tf.float32)  # (H, W)
    target = tf.constant([height, width], tf.float32)
    fit = tf.reduce_min(target / original)
    resized_size = tf.clip_by_value(tf.round(original * fit), 1.0, target)
    resized_size_int = tf.cast(resized_size, tf.int32)
    same_size = tf.reduce_all(tf.equal(tf.shape(images)[1:3], resized_size_int))
    resized = tf.cond(
        same_size,
        lambda: images,
        lambda: tf.image.resize(images, resized_size_int, method="bilinear", antialias=True),
    )
    pad = tf.cast(target, tf.int32) - resized_size_int
    top_left = pad // 2
    fill = border_mean(images)[:, tf.newaxis, tf.newaxis, tf.newaxis]
    paddings = [[0, 0], [top_left[0], pad[0] - top_left[0]], [top_left[1], pad[1] - top_left[1]], [0, 0]]
    canvas = tf.pad(resized - fill, paddings) + fill
    canvas = tf.ensure_shape(canvas, [None, height, width, images.shape[-1]])
    scale = tf.reverse(resized_size / original, axis=[0])  # (x, y)
    offset = tf.reverse(tf.cast(top_left, tf.float32), axis=[0])
    return canvas, tf.tile(scale[tf.newaxis], [batch, 1]), tf.tile(offset[tf.newaxis], [batch, 1])


def to_original_pixels(boxes: tf.Tensor, scale: tf.Tensor, offset: tf.Tensor, original_size: tf.Tensor) -> tf.Tensor:
    """Undo `letterbox` for boxes (N, M, 4) on the canvas; clip to each original (N, 2) (height, width)."""
    scale4 = tf.tile(scale, [1, 2])[:, tf.newaxis]
    offset4 = tf.tile(offset, [1, 2])[:, tf.newaxis]
    limits = tf.tile(tf.reverse(tf.cast(original_size, tf.float32), axis=[1]), [1, 2])[:, tf.newaxis]
    return tf.clip_by_value((boxes - offset4) / scale4, 0.0, limits)
