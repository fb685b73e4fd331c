"""What a BentoML user would write instead of this project's service: the anchors `benchmarks.serving` measures.

    BENCH_SAVED_MODEL=artifacts/classifier/1 bentoml serve benchmarks.bentoml_anchors:BatchableClassifier
    bentoml serve benchmarks.bentoml_anchors:NoopService

- `NoopService`: BentoML 1.4's defaults with the same no-op route as `benchmarks.ceiling_app` (its JSON
  parsed into the API's typed argument, a constant answer): what BentoML's own request path costs.
- `BatchableClassifier`: the service BentoML's adaptive-batching guide recommends, on the same exported
  SavedModel: `@bentoml.api(batchable=True, max_batch_size=..., max_latency_ms=...)` taking the request's
  images as one NumPy array and answering the model's class probabilities.

Both take /classify's body, {"instances": [image, ...]}, so the same requests go to every target.
"""

import os

import bentoml
import numpy as np

SAVED_MODEL_ENV = "BENCH_SAVED_MODEL"
ANSWER = {"predictions": [{"label": "0", "score": 1.0}]}


@bentoml.service
class NoopService:
    @bentoml.api
    def classify(self, instances: list) -> dict:
        return ANSWER


@bentoml.service
class BatchableClassifier:
    def __init__(self) -> None:
        import tensorflow as tf

        self.tf = tf
        self.predict = tf.saved_model.load(os.environ[SAVED_MODEL_ENV]).signatures["serving_default"]

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=60_000)
    def classify(self, instances: np.ndarray) -> np.ndarray:
        images = self.tf.constant(instances[..., None], dtype=self.tf.float32)  # (N, H, W) pixels → (N, H, W, 1)
        return self.predict(images=images)["probabilities"].numpy()
