"""Warm-up requests inside an artifact, in TF Serving's format, so that both servers warm up on our exports.

`assets.extra/tf_serving_warmup_requests` is a TFRecord file of `PredictionLog` protos, each holding one
`PredictRequest` (a signature name and its input tensors). Export writes a few real requests per signature
(`write_warmup`); a server runs them all before a version takes traffic (`read_warmup`), so the first real
request after a swap does not pay for TensorFlow's first-call graph preparation. TF Serving reads at most
1,000 records; so does this.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's limit


@dataclass(frozen=True)
class WarmupRequest:
    signature_name: str
    inputs: Mapping[str, np.ndarray]


def write_warmup(artifact_dir: Path, model_name: str, requests: Sequence[WarmupRequest]) -> Path:
    path = artifact_dir / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests[:MAX_WARMUP_RECORDS]:
            predict = predict_pb2.PredictRequest()
            predict.model_spec.name = model_name
            predict.model_spec.signature_name = request.signature_name
            for name, value in request.inputs.items():
                predict.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict))
            writer.write(log.SerializeToString())
    return path


def read_warmup(artifact_dir: Path) -> list[WarmupRequest]:
    """The artifact's warm-up requests; [] when it has none (an artifact exported before warm-up existed)."""
    path = artifact_dir / WARMUP_FILE
    if not path.is_file():
        return []
    requests = []
    for record in tf.data.TFRecordDataset(str(path)).take(MAX_WARMUP_RECORDS):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if log.WhichOneof("log_type") != "predict_log":
            raise ValueError(f"{WARMUP_FILE} holds a {log.WhichOneof('log_type')}: only predict_log is supported")
        request = log.predict_log.request
        inputs = {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}
        requests.append(WarmupRequest(request.model_spec.signature_name or "serving_default", inputs))
    return requests
