"""Call a loaded model's signatures through adaptive batchers and shape the answers per task."""

import os
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving import inputs
from serving.batching import AdaptiveBatcher
from serving.store import LoadedModel

BATCHING_ENV = "MODELSERVICE_BATCHING"
MAX_MODEL_BATCH = int(os.environ.get("MODELSERVICE_MAX_BATCH", "256"))


class ModelRuntime:
    """One served model: its signatures, one batcher per (signature, item shape, dtype)."""

    def __init__(self, model: LoadedModel):
        self.model = model
        batching = os.environ.get(BATCHING_ENV, "1") != "0"
        self.max_batch_size = MAX_MODEL_BATCH if batching else 1
        self._batchers: dict[tuple, AdaptiveBatcher] = {}

    def input_spec(self, signature_name: str) -> tf.TensorSpec:
        _, kwargs = self.model.signatures[signature_name].structured_input_signature
        (spec,) = kwargs.values()
        return spec

    async def run(self, signature_name: str, batch: np.ndarray) -> dict[str, np.ndarray]:
        key = (signature_name, batch.shape[1:], batch.dtype.str)
        if key not in self._batchers:
            self._batchers[key] = AdaptiveBatcher(lambda items: self._call(signature_name, items), max_batch_size=self.max_batch_size)
        try:
            return await self._batchers[key](batch)
        except tf.errors.InvalidArgumentError as error:
            # Pillow accepts some files TensorFlow's decoders do not (a 1-bit BMP): the client's file, not a server fault.
            if signature_name != self.model.metadata["signatures"].get("image_bytes"):
                raise
            raise inputs.InputError(
                f"the image could not be decoded by the model: {_reason(error.message)}",
                expected="a PNG, JPEG, GIF or 24/32-bit BMP file",
            ) from None

    def _call(self, signature_name: str, items: np.ndarray) -> dict[str, np.ndarray]:
        function = self.model.signatures[signature_name]
        spec = self.input_spec(signature_name)
        outputs = function(**{spec.name: tf.constant(items, dtype=spec.dtype)})
        return {key: value.numpy() for key, value in outputs.items()}

    def tensor_values(self, signature_name: str, payload: Any, row_format: bool) -> np.ndarray:
        """A TF Serving request's `instances` (rows) or `inputs` (columns) as one checked batch array."""
        spec = self.input_spec(signature_name)
        if row_format:
            items = [item[spec.name] if isinstance(item, dict) and spec.name in item else item for item in _as_list(payload)]
        else:
            items = payload[spec.name] if isinstance(payload, dict) and spec.name in payload else payload
        if spec.dtype == tf.string:
            return self._string_batch(signature_name, items)
        return inputs.pixel_batch(items, dtype=spec.dtype.name)

    def _string_batch(self, signature_name: str, items: Any) -> np.ndarray:
        inputs.check_batch(items, "a list of strings or {\"b64\": ...} objects")
        if signature_name == self.model.metadata["signatures"].get("image_bytes"):
            values = [inputs.b64_image(item, f"instance {index}") for index, item in enumerate(items)]
        else:
            values = [_text(item, index) for index, item in enumerate(items)]
        return np.array(values, dtype=object)

    def signature_defs(self) -> dict[str, Any]:
        """The signatures in the shape of TF Serving's metadata response."""
        return {name: _signature_def(name, function) for name, function in self.model.signatures.items()}

    def batch_sizes(self) -> list[int]:
        return [size for batcher in self._batchers.values() for size in batcher.batch_sizes]


def to_json(value: Any) -> Any:
    """Tensor values as JSON: bytes become text, numpy scalars become Python numbers."""
    value = np.asarray(value)
    if value.dtype.kind in "SO":
        return np.vectorize(lambda item: item.decode("utf-8", "replace"), otypes=[object])(value).tolist()
    return value.tolist()


def classifier_predictions(outputs: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    labels = to_json(outputs["labels"])
    top_labels = to_json(outputs["top_k_labels"])
    return [
        {
            "label": labels[row],
            "score": float(outputs["scores"][row]),
            "top_k": [{"label": label, "score": float(score)} for label, score in zip(top_labels[row], outputs["top_k_scores"][row])],
        }
        for row in range(len(labels))
    ]


def _reason(message: str) -> str:
    """The op's own message out of a TensorFlow graph error (which also names nodes and stack traces)."""
    lines = [line for line in message.splitlines() if line.strip() and not line.startswith(("\t", "<", "Graph execution error", "Detected at node"))]
    return lines[-1] if lines else message


def _as_list(payload: Any) -> list:
    if not isinstance(payload, list):
        raise inputs.InputError(f"'instances' is a {type(payload).__name__}, not a list", expected="a list of instances")
    return payload


def _text(item: Any, index: int) -> bytes:
    if isinstance(item, dict) and "b64" in item:
        return inputs.b64_bytes(item, f"instance {index}")
    if not isinstance(item, str):
        raise inputs.InputError(f"instance {index} is a {type(item).__name__}, not a string", expected="strings")
    return item.encode("utf-8")


def _tensor_info(spec: tf.TensorSpec, name: str) -> dict[str, Any]:
    dims = [{"size": str(-1 if size is None else size), "name": ""} for size in spec.shape.as_list()]
    return {"dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum), "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}


def _signature_def(name: str, function: Any) -> dict[str, Any]:
    _, kwargs = function.structured_input_signature
    return {
        "inputs": {key: _tensor_info(spec, f"{name}_{key}:0") for key, spec in kwargs.items()},
        "outputs": {key: _tensor_info(spec, f"StatefulPartitionedCall:{index}") for index, (key, spec) in enumerate(sorted(function.structured_outputs.items()))},
        "method_name": "tensorflow/serving/predict",
    }
