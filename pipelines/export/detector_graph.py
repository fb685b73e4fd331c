"""The detector's exported graph: images of any size in; boxes in their own pixels, labels, scores and count out.

Letterboxing, decoding and class-aware non-max suppression run inside the graph.
"""

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models import detection_graph, image_graph


class DetectorGraph(tf.Module):
    """Images of any size (pixels or encoded bytes) in; boxes, scores, classes, labels and count out."""

    OUTPUTS = ("boxes", "scores", "classes", "labels", "count")

    def __init__(
        self,
        model: keras.Model,
        class_names: list[str],
        anchors: np.ndarray,
        *,
        score_threshold: float = 0.6,
        iou_threshold: float = 0.5,
        max_detections: int = 100,
    ):
        super().__init__()
        self.model = model
        self.height, self.width, self.channels = (int(d) for d in model.input_shape[1:])
        self.class_names = tf.constant(class_names)
        self.anchors = tf.constant(anchors, tf.float32)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections

    def _detect(
        self,
        canvas: tf.Tensor,
        scale: tf.Tensor,
        offset: tf.Tensor,
        original_size: tf.Tensor,
        score_threshold: tf.Tensor,
        iou_threshold: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        checks = [
            tf.debugging.assert_equal(
                tf.logical_and(score_threshold >= 0.0, score_threshold <= 1.0),
                True,
                message="score_threshold must be a number from 0 to 1",
            ),
            tf.debugging.assert_equal(
                tf.logical_and(iou_threshold >= 0.0, iou_threshold <= 1.0),
                True,
                message="iou_threshold must be a number from 0 to 1",
            ),
        ]
        with tf.control_dependencies(checks):
            canvas = tf.identity(canvas)
        boxes, scores = detection_graph.decode_predictions(
            self.model(canvas, training=False), self.anchors, image_size=(self.height, self.width)
        )
        found = detection_graph.non_max_suppression(
            boxes,
            scores,
            image_size=(self.height, self.width),
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=self.max_detections,
        )
        valid = tf.sequence_mask(found["count"], self.max_detections)
        return {
            "boxes": detection_graph.to_original_pixels(found["boxes"], scale, offset, original_size),
            "scores": found["scores"],
            "classes": found["classes"],
            "labels": tf.where(valid, tf.gather(self.class_names, found["classes"]), ""),
            "count": found["count"],
        }

    def _detect_pixels(
        self, images: tf.Tensor, score_threshold: tf.Tensor, iou_threshold: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        images = image_graph.to_channels(tf.cast(images, tf.float32), self.channels)
        canvas, scale, offset = detection_graph.letterbox(images, self.height, self.width)
        original_size = tf.tile(tf.shape(images)[tf.newaxis, 1:3], [tf.shape(images)[0], 1])
        return self._detect(canvas, scale, offset, original_size, score_threshold, iou_threshold)

    def _letterbox_encoded(self, image_bytes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        image = image_graph.decode_pixels(image_bytes, self.channels)[tf.newaxis]
        canvas, scale, offset = detection_graph.letterbox(image, self.height, self.width)
        return canvas[0], scale[0], offset[0], tf.shape(image)[1:3]

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])
    def detect_default(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._detect_pixels(images, tf.constant(self.score_threshold), tf.constant(self.iou_threshold))

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.float32, name="images"),
            tf.TensorSpec([], tf.float32, name="score_threshold"),
            tf.TensorSpec([], tf.float32, name="iou_threshold"),
        ]
    )
    def detect_images(
        self, images: tf.Tensor, score_threshold: tf.Tensor, iou_threshold: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        return self._detect_pixels(images, score_threshold, iou_threshold)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name="image_bytes"),
            tf.TensorSpec([], tf.float32, name="score_threshold"),
            tf.TensorSpec([], tf.float32, name="iou_threshold"),
        ]
    )
    def detect_image_bytes(
        self, image_bytes: tf.Tensor, score_threshold: tf.Tensor, iou_threshold: tf.Tensor
    ) -> dict[str, tf.Tensor]:
        canvas, scale, offset, original_size = tf.map_fn(
            self._letterbox_encoded,
            image_bytes,
            fn_output_signature=(
                tf.TensorSpec([self.height, self.width, self.channels], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.float32),
                tf.TensorSpec([2], tf.int32),
            ),
        )
        return self._detect(canvas, scale, offset, original_size, score_threshold, iou_threshold)

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.detect_default,
            "detect_images": self.detect_images,
            "detect_image_bytes": self.detect_image_bytes,
        }
