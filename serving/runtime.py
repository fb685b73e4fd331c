"""Call a loaded model's signatures through adaptive batchers."""

import json
from typing import Any

import numpy as np
import tensorflow as tf
from prometheus_client import Histogram
from tensorflow.core.framework import types_pb2

from serving import inputs, settings
from serving.batching import AdaptiveBatcher
from serving.contract import Role
from serving.store import LoadedModel, ModelLoadError
from serving.warmup import WarmupRequest

# Per model call, not per request: how much batching the traffic allows, beside BentoML's request metrics.
BATCH_SIZES = Histogram(
    "modelservice_batch_size",
    "Items per model call (adaptive batching joins concurrent requests' items)",
    ["model", "version", "signature"],
    buckets=[2**power for power in range(9)],
)


class ModelRuntime:
    """One served model: its signatures, one batcher per (signature, item shape, dtype)."""

    def __init__(self, model: LoadedModel):
        self.model = model
        configured = settings.current()
        self.max_batch_size = configured.max_batch if configured.batching else 1
        self._batchers: dict[tuple, AdaptiveBatcher] = {}
        self.in_flight = 0  # requests inside `run`: an unloading version waits for them
        self._specs: dict[str, dict[str, tf.TensorSpec]] = {}

    def batch_spec(self, signature_name: str) -> tf.TensorSpec:
        """The signature's batched input (batch axis first)."""
        return next(spec for spec in self.input_specs(signature_name).values() if spec.shape.rank)

    def option_specs(self, signature_name: str) -> dict[str, tf.TensorSpec]:
        """The signature's scalar inputs, such as a beam width: one value for the whole request."""
        return {name: spec for name, spec in self.input_specs(signature_name).items() if not spec.shape.rank}

    def input_specs(self, signature_name: str) -> dict[str, tf.TensorSpec]:
        # Read once per signature: rebuilding them from the function's signature on every request and
        # model call cost more than the rest of a small TF Serving request's parsing.
        if signature_name not in self._specs:
            _, kwargs = self.model.signatures[signature_name].structured_input_signature
            self._specs[signature_name] = {spec.name: spec for spec in kwargs.values()}
        return self._specs[signature_name]

    async def run(self, signature_name: str, batch: np.ndarray, **options: Any) -> dict[str, np.ndarray]:
        """Call a signature on `batch`; requests with the same signature, item shape and options share batches."""
        key = self.batch_key(signature_name, batch, options)
        if key not in self._batchers:
            self._batchers[key] = AdaptiveBatcher(
                lambda items: self.call(signature_name, items, options), max_batch_size=self.max_batch_size
            )
        self.in_flight += 1
        try:
            return await self._batchers[key](batch)
        except tf.errors.InvalidArgumentError as error:
            # The graph checks what it is given (an image TensorFlow cannot decode, a beam width out of
            # range): the input is at fault, not the server.
            raise self._rejected(signature_name, _reason(error.message)) from None
        finally:
            self.in_flight -= 1

    @staticmethod
    def batch_key(signature_name: str, batch: np.ndarray, options: dict[str, Any]) -> tuple:
        """Which batcher a request joins, whichever API it came through."""
        return (signature_name, batch.shape[1:], batch.dtype.str, tuple(sorted(options.items())))

    def warm_up(self, requests: list[WarmupRequest]) -> None:
        """Run the artifact's warm-up requests (serving.warmup), as TF Serving does before a version serves."""
        for index, request in enumerate(requests):
            function = self.model.signatures.get(request.signature_name)
            if function is None:
                raise ModelLoadError(
                    f"warm-up request {index} names signature {request.signature_name!r}, which the SavedModel lacks"
                )
            try:
                function(**{name: tf.constant(value) for name, value in request.inputs.items()})
            except (tf.errors.OpError, TypeError, ValueError) as error:
                reason = _reason(error.message) if isinstance(error, tf.errors.OpError) else str(error)
                raise ModelLoadError(
                    f"warm-up request {index} ({request.signature_name}) failed: {reason.splitlines()[0]}"
                ) from None

    def close(self) -> None:
        """Stop the batchers' workers (safe from any thread): an unloaded version keeps nothing alive."""
        for batcher in self._batchers.values():
            batcher.close()
        self._batchers = {}

    def _rejected(self, signature_name: str, reason: str) -> inputs.InputError:
        # A failed assertion is the graph's own check of an input (a beam width, a threshold), even on a
        # signature that also decodes images; any other error there is the decoder's.
        checked = _assertion(reason)
        if checked is None and self.model.takes(signature_name, Role.IMAGE_BYTES):
            # Pillow accepts some files TensorFlow's decoders do not (a 1-bit BMP).
            return inputs.InputError(
                f"the image could not be decoded by the model: {reason}",
                expected="a PNG, JPEG, GIF or 24/32-bit BMP file",
            )
        return inputs.InputError(
            f"the model rejected the input: {checked or reason}",
            expected=(
                f"inputs that match the signature {signature_name!r}: see GET /v1/models/{self.model.name}/metadata"
            ),
        )

    def call(self, signature_name: str, items: np.ndarray, options: dict[str, Any]) -> dict[str, np.ndarray]:
        """One model call on `items` (batch axis first), here and now: what each shared batch runs."""
        BATCH_SIZES.labels(self.model.name, self.model.version, signature_name).observe(len(items))
        function = self.model.signatures[signature_name]
        spec = self.batch_spec(signature_name)
        arguments = {spec.name: tf.constant(items, dtype=spec.dtype)}
        arguments |= {
            name: tf.constant(options[name], dtype=option.dtype)
            for name, option in self.option_specs(signature_name).items()
        }
        outputs = function(**arguments)
        return {key: value.numpy() for key, value in outputs.items()}

    def tensor_values(
        self, signature_name: str, payload: Any, row_format: bool, *, booleans_possible: bool = True
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A TF Serving request's `instances` (rows) or `inputs` (columns): one checked batch, its scalar options."""
        spec = self.batch_spec(signature_name)
        option_specs = self.option_specs(signature_name)
        if row_format:
            rows = _as_list(payload)
            items = [row[spec.name] if isinstance(row, dict) and spec.name in row else row for row in rows]
            options = {name: _row_option(rows, name) for name in option_specs}
        else:
            named = isinstance(payload, dict) and spec.name in payload
            items = payload[spec.name] if named else payload
            options = {name: payload.get(name) if named else None for name in option_specs}
        missing = [name for name, value in options.items() if value is None]
        if missing:
            raise inputs.InputError(
                f"missing input {missing[0]!r} of signature {signature_name!r}",
                expected=f"inputs {sorted(self.input_specs(signature_name))}",
            )
        options = {name: scalar_option(value, name, option_specs[name].dtype) for name, value in options.items()}
        if spec.dtype == tf.string:
            return self.string_batch(signature_name, items), options
        return inputs.pixel_batch(items, dtype=spec.dtype.name, booleans_possible=booleans_possible), options

    def string_batch(self, signature_name: str, items: Any) -> np.ndarray:
        if self.model.takes(signature_name, Role.IMAGE_BYTES):
            inputs.check_batch(items, 'a list of {"b64": ...} encoded images')
            budget = inputs.DecodeBudget()
            # JSON carries binary strings as {"b64": ...}; a gRPC string tensor as bytes.
            return np.array(
                [
                    inputs.encoded_image(item, f"instance {index}", budget)
                    if isinstance(item, bytes)
                    else inputs.b64_image(item, f"instance {index}", budget)
                    for index, item in enumerate(items)
                ],
                dtype=object,
            )
        return inputs.text_batch(items, max_length=self.model.text_input.max_length)

    def signature_defs(self) -> dict[str, Any]:
        """The signatures in the shape of TF Serving's metadata response."""
        return {name: _signature_def(name, function) for name, function in self.model.signatures.items()}

    def signature_summaries(self) -> dict[str, Any]:
        """Each signature's inputs and outputs as {name: {"dtype": "uint8", "shape": [null, 8, 8, 1]}}."""
        return {name: _signature_summary(function) for name, function in self.model.signatures.items()}

    def batch_sizes(self) -> list[int]:
        return [size for batcher in self._batchers.values() for size in batcher.batch_sizes]


def scalar_option(value: Any, name: str, dtype: tf.DType) -> int | float:
    """A TF Serving scalar input as a number of its dtype.

    The graph checks the range it accepts; this keeps the value convertible to the dtype (an int32 below
    2**31, a float32 that stays finite) so it reaches that check.
    """
    if dtype.is_integer:
        return inputs.integer_option(value, name, low=dtype.min, high=dtype.max)
    if dtype.is_floating:
        return inputs.number_option(value, name, low=dtype.min, high=dtype.max)
    raise TypeError(f"scalar input {name!r} of dtype {dtype.name} is not supported")


def _assertion(reason: str) -> str | None:
    """The message of a failed tf.debugging assertion ("assertion failed: [message] [Condition ...]"), if it is one."""
    prefix = "assertion failed: ["
    if not reason.startswith(prefix) or "]" not in reason:
        return None
    return reason[len(prefix) : reason.index("]")]


def _reason(message: str) -> str:
    """The op's own message out of a TensorFlow graph error (which also names nodes and stack traces)."""
    lines = [
        line
        for line in message.splitlines()
        if line.strip() and not line.startswith(("\t", "<", "Graph execution error", "Detected at node"))
    ]
    return lines[-1] if lines else message


def _as_list(payload: Any) -> list:
    if not isinstance(payload, list):
        raise inputs.InputError(
            f"'instances' is a {type(payload).__name__}, not a list", expected="a list of instances"
        )
    return payload


def _row_option(rows: list, name: str) -> Any:
    """A scalar input given per row in TF Serving's row format: every row must carry the same value."""
    values = [row.get(name) for row in rows if isinstance(row, dict)]
    distinct = {json.dumps(value) for value in values}
    if len(distinct) > 1:
        raise inputs.InputError(
            f"instances disagree on {name!r}: {sorted(distinct)}", expected=f"one {name!r} for the whole request"
        )
    return values[0] if values else None


def _tensor_info(spec: tf.TensorSpec, name: str) -> dict[str, Any]:
    dims = [{"size": str(-1 if size is None else size), "name": ""} for size in spec.shape.as_list()]
    return {
        "dtype": types_pb2.DataType.Name(spec.dtype.as_datatype_enum),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }


def _signature_def(name: str, function: Any) -> dict[str, Any]:
    _, kwargs = function.structured_input_signature
    return {
        "inputs": {key: _tensor_info(spec, f"{name}_{key}:0") for key, spec in kwargs.items()},
        "outputs": {
            key: _tensor_info(spec, f"StatefulPartitionedCall:{index}")
            for index, (key, spec) in enumerate(sorted(function.structured_outputs.items()))
        },
        "method_name": "tensorflow/serving/predict",
    }


def _signature_summary(function: Any) -> dict[str, Any]:
    _, kwargs = function.structured_input_signature
    return {
        "inputs": {key: _tensor_summary(spec) for key, spec in kwargs.items()},
        "outputs": {key: _tensor_summary(spec) for key, spec in sorted(function.structured_outputs.items())},
    }


def _tensor_summary(spec: tf.TensorSpec) -> dict[str, Any]:
    return {"dtype": spec.dtype.name, "shape": spec.shape.as_list() if spec.shape.rank is not None else None}
