"""The classifier's exported graph: pixels or encoded images in; probabilities, top-k labels and scores out."""

from typing import Any

import keras
import tensorflow as tf

from models import image_graph

TOP_K = 5


class ClassifierGraph(tf.Module):
    """The exported graph: raw pixels or encoded image bytes in, probabilities and label strings out."""

    OUTPUTS = ("probabilities", "class_ids", "labels", "scores", "top_k_labels", "top_k_scores")

    def __init__(self, model: keras.Model, class_names: list[str]):
        super().__init__()
        self.model = model
        self.height, self.width, self.channels = (int(d) for d in model.input_shape[1:])
        self.class_names = tf.constant(class_names)
        self.top_k = min(TOP_K, len(class_names))

    def _classify(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = self.model(
            image_graph.fit_images(images, self.height, self.width, self.channels), training=False
        )
        top_scores, top_ids = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "probabilities": probabilities,
            "class_ids": top_ids[:, 0],
            "labels": tf.gather(self.class_names, top_ids[:, 0]),
            "scores": top_scores[:, 0],
            "top_k_labels": tf.gather(self.class_names, top_ids),
            "top_k_scores": top_scores,
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32, name="images")])
    def classify_images(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(images)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
    def classify_uint8(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(images)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def classify_image_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self._classify(image_graph.decode_images(image_bytes, self.height, self.width, self.channels))

    def signatures(self) -> dict[str, Any]:
        return {
            "serving_default": self.classify_images,
            "classify_uint8": self.classify_uint8,
            "classify_image_bytes": self.classify_image_bytes,
        }
