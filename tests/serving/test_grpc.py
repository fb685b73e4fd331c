"""TF Serving's gRPC API, called with the real stubs of `tensorflow-serving-api` against the session's four-model
server (tests/conftest.py), and against a second server of the same models whose gRPC runs on uvicorn's HTTP/2
(MODELSERVICE_GRPC_SERVER=zttp): every answer is checked against what the REST API answers for the same inputs on
the same server, and every client mistake against the status and message a gRPC client expects."""

import asyncio
import base64
import io
import json
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.inputs import InputError

pytestmark = pytest.mark.slow

TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 64 * 2**20  # what a client of large batches sets on its side too
NODE_CLIENT = Path(__file__).parent / "node_grpc"  # @grpc/grpc-js, installed by `make test` where npm is
GO_CLIENT = Path(__file__).parent / "go_grpc"  # grpc-go, built by the test against Debian's packaged sources
GO_SOURCES = Path("/usr/share/gocode/src")
PREDICT = "/tensorflow.serving.PredictionService/Predict"


class Served(NamedTuple):
    url: str  # the REST API of the server whose gRPC port this is
    grpc_port: int
    grpc_server: str  # MODELSERVICE_GRPC_SERVER


@pytest.fixture(scope="module", params=["grpcio", "zttp"])
def served(request, server, grpc_port, tmp_path_factory):
    """The session server (grpcio), or one beside it with the same models whose gRPC is the zttp one."""
    if request.param == "grpcio":
        yield Served(server, grpc_port, "grpcio")
        return
    from serving.process import free_port, home_beside, running_server

    port, folder = free_port(), tmp_path_factory.mktemp("zttp-server")
    env = {
        "MODELSERVICE_MODELS": "classifier,seq2seq,detector",
        "MODELSERVICE_GRPC_PORT": str(port),
        "MODELSERVICE_GRPC_SERVER": "zttp",
    }
    with running_server(env=env | home_beside(folder / "bentoml"), log_path=folder / "server.log") as url:
        yield Served(url, port, "zttp")


@pytest.fixture(scope="module")
def channel(served):
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}", options=options) as opened:
        yield opened


@pytest.fixture(scope="module")
def predictions(channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def model_service(channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(
    model: str, inputs: dict[str, Any], *, signature: str = "", version: int | None = None, label: str = ""
) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(value if hasattr(value, "tensor_shape") else tf.make_tensor_proto(value))
    return request


def outputs_of(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


def rest_outputs(server: str, model: str, signature: str, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """The same signature through TF Serving's REST API (columnar "inputs"), as arrays."""
    body = {"signature_name": signature, "inputs": inputs}
    answer = httpx.post(f"{server}/v1/models/{model}:predict", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return {name: np.asarray(value) for name, value in answer.json()["outputs"].items()}


def assert_same_outputs(grpc_outputs: dict[str, np.ndarray], rest: dict[str, np.ndarray]) -> None:
    assert set(grpc_outputs) == set(rest)
    for name, value in grpc_outputs.items():
        if value.dtype.kind in "SO":
            assert [item.decode() for item in value.ravel()] == [str(item) for item in rest[name].ravel()], name
        else:
            np.testing.assert_allclose(value, rest[name], rtol=1e-5, atol=1e-6, err_msg=name)


def assert_same_answers(answer: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Two gRPC answers to one request, output by output: equal, not just close (the same batch, alone)."""
    assert answer.keys() == expected.keys()
    for name, array in expected.items():
        np.testing.assert_array_equal(answer[name], array, err_msg=name)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image).squeeze().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, timeout=TIMEOUT, **kwargs)
    return raised.value


# --- each task, as the REST API answers it -----------------------------------------------------------


def test_classifier_pixels_and_image_bytes_answer_as_rest(served, predictions, digits):
    pixels = digits.test.images[:3].astype(np.float32)
    response = predictions.Predict(predict_request("classifier", {"images": pixels}), timeout=TIMEOUT)
    assert response.model_spec.name == "classifier" and response.model_spec.signature_name == "serving_default"
    assert response.model_spec.version.value >= 1
    assert_same_outputs(
        outputs_of(response), rest_outputs(served.url, "classifier", "serving_default", pixels.tolist())
    )

    files = [png_bytes(image) for image in digits.test.images[:3]]
    by_bytes = outputs_of(
        predictions.Predict(
            predict_request("classifier", {"image_bytes": files}, signature="classify_image_bytes"), timeout=TIMEOUT
        )
    )
    encoded = [{"b64": base64.b64encode(file).decode()} for file in files]
    assert_same_outputs(by_bytes, rest_outputs(served.url, "classifier", "classify_image_bytes", encoded))
    assert list(by_bytes["labels"]) == list(outputs_of(response)["labels"])  # the same digits, as PNG files


def test_texts_with_a_beam_width_answer_as_rest(served, predictions, date_answers):
    texts = ["20.01.2023", "March 4, 1999", "not a date at all"]
    for beam_width in (1, 3):
        inputs = {"texts": texts, "beam_width": np.int32(beam_width)}
        answer = outputs_of(
            predictions.Predict(predict_request("seq2seq", inputs, signature="translate"), timeout=TIMEOUT)
        )
        assert_same_outputs(
            answer, rest_outputs(served.url, "seq2seq", "translate", {"texts": texts, "beam_width": beam_width})
        )
        assert answer["beam_texts"].shape == (3, beam_width)
    answered = [text.decode() if is_date else None for text, is_date in zip(answer["texts"], answer["is_date"])]
    assert answered == date_answers(*texts, beam_width=3)


def test_detection_thresholds_answer_as_rest(served, predictions, scenes):
    files = [png_bytes(scene.image) for scene in scenes.test[:2]]
    for score_threshold in (0.2, 0.9):
        inputs = {
            "image_bytes": files,
            "score_threshold": np.float32(score_threshold),
            "iou_threshold": np.float32(0.5),
        }
        answer = outputs_of(
            predictions.Predict(predict_request("detector", inputs, signature="detect_image_bytes"), timeout=TIMEOUT)
        )
        rest_inputs = {
            "image_bytes": [{"b64": base64.b64encode(file).decode()} for file in files],
            "score_threshold": score_threshold,
            "iou_threshold": 0.5,
        }
        assert_same_outputs(answer, rest_outputs(served.url, "detector", "detect_image_bytes", rest_inputs))
        assert ((answer["scores"] >= score_threshold) | (answer["scores"] == 0)).all()


def test_output_filter_answers_only_the_named_outputs(predictions, digits):
    request = predict_request("classifier", {"images": digits.test.images[:2].astype(np.float32)})
    request.output_filter.extend(["labels", "scores"])
    assert sorted(predictions.Predict(request, timeout=TIMEOUT).outputs) == ["labels", "scores"]


def test_a_batch_of_64_images_is_past_grpcs_4_mib_default_and_answered(served, predictions, scenes):
    gray = np.stack([scene.image for scene in scenes.test[:64]]).astype(np.float32)
    images = np.repeat(gray, 3, axis=-1)  # 64 RGB images of 128×128: 12 MiB
    assert images.nbytes > 4 * 2**20
    request = predict_request("detector", {"images": images})
    answer = outputs_of(predictions.Predict(request, timeout=120))
    assert answer["count"].shape == (64,) and answer["boxes"].shape[0] == 64


def test_concurrent_calls_each_get_their_own_answer(predictions, digits):
    images = digits.test.images[:32].astype(np.float32)
    alone = outputs_of(predictions.Predict(predict_request("classifier", {"images": images}), timeout=TIMEOUT))

    def one(index: int) -> str:
        request = predict_request("classifier", {"images": images[index : index + 1]})
        return outputs_of(predictions.Predict(request, timeout=TIMEOUT))["labels"][0].decode()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(32)))
    assert answers == [label.decode() for label in alone["labels"]]


# --- metadata, status, health ----------------------------------------------------------------------------


def test_metadata_lists_the_signatures_the_rest_api_lists(served, predictions):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "detector"
    response = predictions.GetModelMetadata(request, timeout=TIMEOUT)
    definitions = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(definitions)
    rest = httpx.get(f"{served.url}/v1/models/detector/metadata", timeout=TIMEOUT).json()
    expected = rest["metadata"]["signature_def"]["signature_def"]
    assert set(definitions.signature_def) == set(expected) == {"serving_default", "detect_images", "detect_image_bytes"}
    threshold = definitions.signature_def["detect_images"].inputs["score_threshold"]
    assert tf.dtypes.as_dtype(threshold.dtype) == tf.float32 and len(threshold.tensor_shape.dim) == 0
    assert set(definitions.signature_def["detect_images"].outputs) == {"boxes", "classes", "count", "labels", "scores"}
    assert response.model_spec.name == "detector" and response.model_spec.version.value >= 1


def test_status_lists_each_version_and_its_state(served, model_service):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "seq2seq"
    response = model_service.GetModelStatus(request, timeout=TIMEOUT)
    rest = httpx.get(f"{served.url}/v1/models/seq2seq", timeout=TIMEOUT).json()["model_version_status"]
    assert [(status.version, status.state) for status in response.model_version_status] == [
        (int(status["version"]), get_model_status_pb2.ModelVersionStatus.State.Value(status["state"]))
        for status in rest
    ]
    assert response.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    request.model_spec.version.value = 99
    error = rpc_error(model_service.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "version 99 of 'seq2seq' is not known" in error.details()


def test_health_says_serving_for_the_server_and_both_services(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService", "tensorflow.serving.ModelService"):
        answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    assert rpc_error(stub.Check, health_pb2.HealthCheckRequest(service="other")).code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_streams_the_status_until_the_client_leaves(channel):
    answers = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    assert next(answers).status == health_pb2.HealthCheckResponse.SERVING
    answers.cancel()
    with pytest.raises(grpc.RpcError) as left:
        next(answers)
    assert left.value.code() == grpc.StatusCode.CANCELLED
    assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status


def test_thousands_of_calls_on_one_channel_are_all_answered(predictions, digits):
    # zttp 0.0.35 ends an HTTP/2 connection at its 4,097th stream as a flood; the zttp server retires each
    # connection before that (GOAWAY, NO_ERROR), and grpcio's client opens a new one.
    request = predict_request("classifier", {"images": digits.test.images[:1].astype(np.float32)})
    codes = []
    for _ in range(5000):
        try:
            predictions.Predict(request, timeout=TIMEOUT)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            codes.append(error.code())
    assert set(codes) == {grpc.StatusCode.OK}


def test_an_unknown_method_is_unimplemented(channel):
    call = channel.unary_unary("/tensorflow.serving.PredictionService/Explain")
    assert rpc_error(call, b"").code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate], ids=["gzip", "deflate"])
def test_a_compressed_call_gets_the_answer_of_an_uncompressed_one(predictions, digits, compression):
    request = predict_request("classifier", {"images": digits.test.images[:4].astype(np.float32)})
    plain = outputs_of(predictions.Predict(request, timeout=TIMEOUT))
    packed = outputs_of(predictions.Predict(request, timeout=TIMEOUT, compression=compression))
    assert packed["labels"].shape == (4,)
    assert_same_answers(packed, plain)


# --- clients in other languages: Node's @grpc/grpc-js and Go's grpc-go -----------------------------------


class ForeignAnswer(NamedTuple):
    code: grpc.StatusCode
    details: str
    response: bytes


@pytest.fixture(scope="session")
def go_client(tmp_path_factory) -> Path:
    """tests/serving/go_grpc/main.go built in GOPATH mode against Debian's golang-google-grpc-dev."""
    if shutil.which("go") is None or not (GO_SOURCES / "google.golang.org" / "grpc").is_dir():
        pytest.skip("needs go and grpc-go's sources (apt-get install golang-go golang-google-grpc-dev)")
    gopath = tmp_path_factory.mktemp("gopath")
    (gopath / "src" / "call").mkdir(parents=True)
    shutil.copy(GO_CLIENT / "main.go", gopath / "src" / "call" / "main.go")
    env = {**os.environ, "GOPATH": f"{gopath}:{GO_SOURCES.parent}", "GO111MODULE": "off", "GOFLAGS": ""}
    built = subprocess.run(
        ["go", "build", "-o", str(gopath / "call"), "call"], cwd=gopath, env=env, capture_output=True
    )
    assert built.returncode == 0, built.stderr.decode()
    return gopath / "call"


@pytest.fixture(scope="module", params=["node", "go"])
def foreign_call(request, served):
    """One unary call from Node's gRPC (tests/serving/node_grpc/call.js: HTTP/2 from Node's nghttp2) or Go's
    (tests/serving/go_grpc/main.go: grpc-go's own HTTP/2), not grpcio."""
    if request.param == "node":
        if shutil.which("node") is None or not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
            pytest.skip("needs node and `npm ci --prefix tests/serving/node_grpc` (make test runs it where npm is)")
        command = ["node", str(NODE_CLIENT / "call.js")]
    else:
        command = [str(request.getfixturevalue("go_client"))]
    codes = {code.value[0]: code for code in grpc.StatusCode}

    def call(method: str, message: bytes) -> ForeignAnswer:
        target = f"127.0.0.1:{served.grpc_port}"
        done = subprocess.run([*command, target, method], input=message, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()
        answer = json.loads(done.stdout)
        return ForeignAnswer(codes[answer["code"]], answer["details"], base64.b64decode(answer.get("response", "")))

    return call


def test_a_client_in_another_language_gets_the_answer_pythons_gets(predictions, foreign_call, digits):
    request = predict_request("classifier", {"images": digits.test.images[:5].astype(np.float32)})
    answer = foreign_call(PREDICT, request.SerializeToString())
    assert answer.code == grpc.StatusCode.OK
    from_there = outputs_of(predict_pb2.PredictResponse.FromString(answer.response))
    assert "top_k_labels" in from_there
    assert_same_answers(from_there, outputs_of(predictions.Predict(request, timeout=TIMEOUT)))


def test_a_client_in_another_language_sends_a_12_mib_batch_within_flow_control(foreign_call, scenes):
    images = np.repeat(np.stack([scene.image for scene in scenes.test[:64]]).astype(np.float32), 3, axis=-1)
    answer = foreign_call(PREDICT, predict_request("detector", {"images": images}).SerializeToString())
    assert answer.code == grpc.StatusCode.OK
    assert outputs_of(predict_pb2.PredictResponse.FromString(answer.response))["count"].shape == (64,)


def test_a_client_in_another_language_reads_a_mistakes_status_and_message(foreign_call):
    answer = foreign_call(PREDICT, predict_request("nope", {"images": digit_images()}).SerializeToString())
    assert answer.code == grpc.StatusCode.NOT_FOUND and "no model named 'nope' is served" in answer.details


def test_a_client_in_another_language_reads_the_health_of_the_server(foreign_call):
    answer = foreign_call("/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest().SerializeToString())
    assert answer.code == grpc.StatusCode.OK
    assert health_pb2.HealthCheckResponse.FromString(answer.response).status == health_pb2.HealthCheckResponse.SERVING


# --- a client's mistakes: the status it expects, and a message that says what was wrong ------------------


def digit_images(count: int = 1, dtype=np.float32) -> np.ndarray:
    return np.zeros((count, 8, 8, 1), dtype)


MISTAKES = {
    "unknown model": (
        lambda: predict_request("nope", {"images": digit_images()}),
        grpc.StatusCode.NOT_FOUND,
        "no model named 'nope' is served",
    ),
    "unknown version": (
        lambda: predict_request("classifier", {"images": digit_images()}, version=99),
        grpc.StatusCode.NOT_FOUND,
        "version 99 of 'classifier' is not available",
    ),
    "unknown label": (
        lambda: predict_request("classifier", {"images": digit_images()}, label="stable"),
        grpc.StatusCode.NOT_FOUND,
        "model 'classifier' has no label 'stable'",
    ),
    "no model name": (
        lambda: predict_request("", {"images": digit_images()}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model_spec.name is empty",
    ),
    "unknown signature": (
        lambda: predict_request("classifier", {"images": digit_images()}, signature="classify"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown signature_name 'classify'",
    ),
    "wrong dtype": (
        lambda: predict_request("classifier", {"images": digit_images(dtype=np.int32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'images' is int32, not float32; expected 'images' as a float32 tensor of shape [N, any, any, any]",
    ),
    "wrong rank": (
        lambda: predict_request("classifier", {"images": np.zeros((1, 8, 8), np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'images' has shape [1, 8, 8]",
    ),
    "two channels": (
        lambda: predict_request("classifier", {"images": np.zeros((1, 8, 8, 2), np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'images' has 2 channels",
    ),
    "pixels out of range": (
        lambda: predict_request("classifier", {"images": np.full((1, 8, 8, 1), 300, np.float32)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "values outside 0–255",
    ),
    "missing input": (
        lambda: predict_request("seq2seq", {"texts": ["1.2.2023"]}, signature="translate"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "missing input 'beam_width' of signature 'translate'",
    ),
    "unknown input": (
        lambda: predict_request("classifier", {"images": digit_images(), "colour": np.float32(1)}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input 'colour'",
    ),
    "beam width out of range": (
        lambda: predict_request("seq2seq", {"texts": ["1.2.2023"], "beam_width": np.int32(9)}, signature="translate"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "beam_width must be an integer from 1 to 8",
    ),
    "corrupt image": (
        lambda: predict_request("classifier", {"image_bytes": [b"\x89PNG broken"]}, signature="classify_image_bytes"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "instance 0 could not be decoded",
    ),
    "text too long": (
        lambda: predict_request("seq2seq", {"texts": ["9" * 65]}),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "has 65 characters, over the limit of 64",
    ),
    "batch too large": (
        lambda: predict_request("classifier", {"images": digit_images(65)}),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "batch of 65 images is over the limit of 64",
    ),
    # A few bytes that claim 16 GiB of pixels: refused before anything is allocated.
    "shape far larger than its values": (
        lambda: predict_request(
            "classifier", {"images": tf.make_tensor_proto(0.0, dtype=tf.float32, shape=[64, 4096, 4096, 4])}
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "over the largest message",
    ),
    "unknown output in output_filter": (
        lambda: filtered(predict_request("classifier", {"images": digit_images()}), "colour"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "output_filter names unknown outputs ['colour']",
    ),
}


def filtered(request: predict_pb2.PredictRequest, *names: str) -> predict_pb2.PredictRequest:
    request.output_filter.extend(names)
    return request


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_clients_mistake_gets_the_status_it_expects_and_says_what_was_wrong(predictions, mistake):
    build, code, message = MISTAKES[mistake]
    error = rpc_error(predictions.Predict, build())
    assert error.code() == code, error.details()
    assert message in error.details()


def test_classify_and_regress_say_predict_is_the_way(predictions):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "classifier"
    error = rpc_error(predictions.Classify, request)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "only predict signatures" in error.details() and "expected Predict" in error.details()
    request.model_spec.name = "nope"
    assert rpc_error(predictions.Classify, request).code() == grpc.StatusCode.NOT_FOUND


def test_the_server_keeps_serving_after_mistakes_and_counts_them(served, predictions, digits):
    for build, _, _ in MISTAKES.values():
        with pytest.raises(grpc.RpcError):
            predictions.Predict(build(), timeout=TIMEOUT)
    images = digits.test.images[:1].astype(np.float32)
    assert predictions.Predict(predict_request("classifier", {"images": images}), timeout=TIMEOUT).outputs["labels"]
    exposed = httpx.get(f"{served.url}/metrics", timeout=TIMEOUT).text
    route = 'route="/tensorflow.serving.PredictionService/Predict"'
    for status in ("OK", "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"):
        assert any(route in line and f'status="{status}"' in line for line in exposed.splitlines()), status


# --- gRPC and HTTP share the batches ----------------------------------------------------------------------


def test_grpc_and_json_requests_for_one_signature_join_the_same_batcher(trained_classifier, digits):
    from serving import store
    from serving.grpc_api import Services
    from serving.runtime import ModelRuntime

    runtime = ModelRuntime(store.load(trained_classifier[2]))
    images = digits.test.images[:2].astype(np.float32)
    by_grpc, grpc_options = Services(None, MAX_MESSAGE_BYTES).tensor_inputs(
        runtime, "serving_default", {"images": tf.make_tensor_proto(images)}
    )
    by_json, json_options = runtime.tensor_values("serving_default", {"images": images.tolist()}, row_format=False)
    assert runtime.batch_key("serving_default", by_grpc, grpc_options) == runtime.batch_key(
        "serving_default", by_json, json_options
    )

    async def both() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(runtime.run("serving_default", by_grpc), runtime.run("serving_default", by_json))

    grpc_answer, json_answer = asyncio.run(both())
    np.testing.assert_array_equal(grpc_answer["labels"], json_answer["labels"])
    assert sum(runtime.batch_sizes()) == 4
    runtime.close()


# --- the per-call conversions, without a server ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.full((1, 8, 8, 1), np.nan, np.float32), "'images' contains NaN or infinite values"),
        (np.full((1, 8, 8, 1), np.inf, np.float32), "'images' contains NaN or infinite values"),
        (np.full((1, 8, 8, 1), -1, np.float32), "'images' has values outside 0–255 (min -1, max -1)"),
        (np.zeros((1, 8, 8, 2), np.float32), "'images' has 2 channels (shape [1, 8, 8, 2])"),
        (np.zeros((0, 8, 8, 1), np.float32), "empty batch: 'images' has no images"),
        (np.zeros((1, 5000, 1, 1), np.uint8), "'images' (shape [1, 5000, 1, 1]) is 1×5000 pixels, over the limit"),
    ],
)
def test_a_pixel_tensor_that_fails_its_checks_says_why(pixels, message):
    from serving.inputs import pixel_tensor

    with pytest.raises(InputError) as error:
        pixel_tensor(pixels, "images")
    assert error.value.message == message


def test_a_pixel_tensor_in_range_is_passed_through_unchanged():
    from serving.inputs import pixel_tensor

    for pixels in (np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1) * 4, np.full((2, 8, 8, 3), 255.0, np.float32)):
        assert pixel_tensor(pixels, "images") is pixels


def test_outputs_are_written_into_the_response_as_tf_make_tensor_proto_writes_them():
    from serving.grpc_api import fill_tensor

    outputs = {
        "scores": np.array([[0.25, 0.5]], np.float32),
        "class_ids": np.array([3, 1], np.int32),
        "labels": np.array([[b"3", b"one"]], dtype=object),
    }
    response = predict_pb2.PredictResponse()
    for key, array in outputs.items():
        fill_tensor(response.outputs[key], array)
    for key, array in outputs.items():
        expected = tf.make_tensor_proto(array)
        assert response.outputs[key].dtype == expected.dtype, key
        assert response.outputs[key].tensor_shape == expected.tensor_shape, key
        np.testing.assert_array_equal(tf.make_ndarray(response.outputs[key]), array)


@pytest.mark.parametrize("content", [b"\x00" * 3, b"\x00" * 4 * 63], ids=["not whole floats", "too few floats"])
def test_tensor_content_that_does_not_fill_its_shape_is_the_clients_mistake(content):
    from tensorflow.core.framework import tensor_pb2, types_pb2

    from serving.grpc_api import Services, TensorCheck

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=content)
    for size in (1, 8, 8, 1):
        tensor.tensor_shape.dim.add(size=size)
    check = TensorCheck.of(tf.TensorSpec([None, None, None, None], tf.float32, name="images"))
    with pytest.raises(InputError) as error:
        Services(None, MAX_MESSAGE_BYTES).array(tensor, check, "images")
    assert error.value.message.startswith("input 'images' is not a valid TensorProto")
    assert error.value.status == 400
