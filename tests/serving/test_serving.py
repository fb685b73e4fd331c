"""End-to-end tests of the HTTP service: the real BentoML server, real HTTP requests, no mocks.

The session fixtures train a small classifier on the digits, export it, register it in a private
BentoML store and start `bentoml serve` on a free port (tests/conftest.py). Every answer is checked
against the Keras model itself, and every bad request must get its exact 4xx status with a JSON
error that says what was wrong — after which the service must still answer a good request.
"""

import asyncio
import base64
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from serving import store
from serving.contract import read_metadata
from serving.inputs import MAX_BATCH, MAX_PAYLOAD_BYTES

pytestmark = pytest.mark.slow

TIMEOUT = 30.0
TOP_K = 5


# --- helpers -------------------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray, mode: str | None = None, size: tuple[int, int] | None = None) -> bytes:
    """A uint8 (H, W) or (H, W, 1) digit as PNG; `mode` converts (e.g. "RGB"), `size` resizes (W, H)."""
    image = Image.fromarray(
        np.asarray(pixels, dtype=np.uint8).squeeze(-1) if np.ndim(pixels) == 3 else pixels, mode="L"
    )
    if mode:
        image = image.convert(mode)
    if size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return encode(image, "PNG")


def encode(image: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def huge_png(width: int = 20000, height: int = 20000, *, rgba: bool = False) -> bytes:
    """A valid PNG declaring width×height, 1-bit grayscale or 8-bit RGBA: all-zero rows deflate to a few tens
    of KB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # bit depth 8, color type 6 (RGBA) or bit depth 1, color type 0 (grayscale)
    header = struct.pack(">IIBBBBB", width, height, *((8, 6) if rgba else (1, 0)), 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = bytes(1 + (width * 4 if rgba else (width + 7) // 8))  # filter byte + the pixels
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def animated_gif(frames: int = 3) -> bytes:
    pictures = [Image.new("L", (16, 16), 40 * index) for index in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, "GIF", save_all=True, append_images=pictures[1:])
    return buffer.getvalue()


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def post_json(url: str, body: Any, path: str = "/classify") -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=TIMEOUT)


def post_raw(url: str, body: bytes, path: str = "/classify", content_type: str = "application/json") -> httpx.Response:
    return httpx.post(url + path, content=body, headers={"content-type": content_type}, timeout=TIMEOUT)


def upload(
    url: str, data: bytes, filename: str = "digit.png", content_type: str = "image/png", field: str = "image"
) -> httpx.Response:
    return httpx.post(url + "/classify", files={field: (filename, data, content_type)}, timeout=TIMEOUT)


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return body["error"]


@dataclass(frozen=True)
class Reference:
    """What the Keras model says about some test digits, and the served model's tag."""

    images: np.ndarray  # uint8 (N, 8, 8, 1)
    true_labels: list[str]
    probabilities: np.ndarray  # (N, 10) from the Keras model
    labels: list[str]  # the Keras model's labels
    class_names: list[str]
    version: str


@pytest.fixture(scope="module")
def ref(digits, trained_classifier) -> Reference:
    model, _, artifact = trained_classifier
    images = digits.test.images[:50]
    probabilities = model.predict(images.astype("float32"), verbose=0)
    names = digits.class_names
    return Reference(
        images=images,
        true_labels=[names[i] for i in digits.test.labels[:50]],
        probabilities=probabilities,
        labels=[names[i] for i in np.argmax(probabilities, axis=1)],
        class_names=names,
        version=str(read_metadata(artifact).version),
    )


def assert_still_serving(url: str, ref: Reference) -> None:
    """A good request right after a bad one still gets the Keras model's answer."""
    response = post_json(url, {"instances": [ref.images[0].tolist()]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == ref.labels[0]


def check_prediction(prediction: dict[str, Any], probabilities: np.ndarray, label: str, class_names: list[str]) -> None:
    assert set(prediction) == {"label", "score", "top_k"}
    assert prediction["label"] == label
    assert isinstance(prediction["score"], float)
    assert prediction["score"] == pytest.approx(float(probabilities.max()), abs=1e-4)
    top_k = prediction["top_k"]
    assert len(top_k) == TOP_K and all(set(entry) == {"label", "score"} for entry in top_k)
    assert top_k[0] == {"label": prediction["label"], "score": prediction["score"]}
    scores = [entry["score"] for entry in top_k]
    assert scores == sorted(scores, reverse=True)
    assert len({entry["label"] for entry in top_k}) == TOP_K
    for entry in top_k:
        assert entry["score"] == pytest.approx(float(probabilities[class_names.index(entry["label"])]), abs=1e-4)


def check_valid_answer(response: httpx.Response, ref: Reference) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert prediction["label"] in ref.class_names
    assert 0.0 <= prediction["score"] <= 1.0
    assert prediction["top_k"][0] == {"label": prediction["label"], "score": prediction["score"]}
    return prediction


# --- 1. JSON pixels ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["HxW", "HxWx1"])
def test_json_instances_get_the_keras_models_labels(server, ref, layout):
    images = ref.images[:8]
    instances = [image[..., 0].tolist() if layout == "HxW" else image.tolist() for image in images]
    response = post_json(server, {"instances": instances})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"predictions", "model"}
    assert body["model"] == {"name": "classifier", "version": ref.version}
    assert len(body["predictions"]) == len(images)
    for row, prediction in enumerate(body["predictions"]):
        check_prediction(prediction, ref.probabilities[row], ref.labels[row], ref.class_names)


def test_json_accuracy_on_50_test_digits(server, ref):
    response = post_json(server, {"instances": ref.images.tolist()})
    assert response.status_code == 200, response.text
    labels = [prediction["label"] for prediction in response.json()["predictions"]]
    assert labels == ref.labels
    accuracy = np.mean([label == truth for label, truth in zip(labels, ref.true_labels)])
    assert accuracy >= 0.9, accuracy


def test_json_float_pixels_and_other_sizes_are_accepted(server, ref):
    # 28×28 and RGB instances are resized / converted to grayscale in-graph.
    big = np.asarray(
        Image.fromarray(ref.images[0][..., 0]).resize((28, 28), Image.Resampling.BILINEAR), dtype=np.float32
    )
    check_valid_answer(post_json(server, {"instances": [big.tolist()]}), ref)
    rgb = np.repeat(ref.images[0].astype(np.float32) * 0.99 + 0.5, 3, axis=-1)
    check_valid_answer(post_json(server, {"instances": [rgb.tolist()]}), ref)


# --- 2. multipart uploads ------------------------------------------------------------------------


def test_png_upload_gets_the_same_label_as_json(server, ref):
    for index in range(4):
        response = upload(server, png_bytes(ref.images[index]))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": "classifier", "version": ref.version}
        (prediction,) = body["predictions"]
        check_prediction(prediction, ref.probabilities[index], ref.labels[index], ref.class_names)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda image: encode(Image.fromarray(image[..., 0]), "JPEG", quality=95), id="jpeg"),
        pytest.param(lambda image: png_bytes(image, mode="RGB"), id="rgb-png"),
        pytest.param(lambda image: png_bytes(image, mode="RGBA"), id="rgba-png"),
        pytest.param(lambda image: png_bytes(image, size=(28, 28)), id="28x28-png"),
        pytest.param(lambda image: encode(Image.fromarray(image[..., 0]), "GIF"), id="gif"),
        pytest.param(lambda image: encode(Image.fromarray(image[..., 0]).convert("RGB"), "BMP"), id="bmp"),
    ],
)
def test_other_uploads_get_a_valid_answer(server, ref, make):
    check_valid_answer(
        upload(server, make(ref.images[0]), filename="digit.img", content_type="application/octet-stream"), ref
    )


# --- 3. TF Serving REST API ----------------------------------------------------------------------

PREDICT = "/v1/models/classifier:predict"
OUTPUT_KEYS = {"probabilities", "class_ids", "labels", "scores", "top_k_labels", "top_k_scores"}


def check_rows(rows: list[dict[str, Any]], ref: Reference, count: int) -> None:
    assert len(rows) == count
    for index, row in enumerate(rows):
        assert set(row) == OUTPUT_KEYS
        np.testing.assert_allclose(row["probabilities"], ref.probabilities[index], atol=1e-4)
        assert row["labels"] == ref.labels[index]
        assert ref.class_names[row["class_ids"]] == ref.labels[index]
        assert row["scores"] == pytest.approx(float(ref.probabilities[index].max()), abs=1e-4)
        assert len(row["top_k_labels"]) == len(row["top_k_scores"]) == TOP_K
        assert row["top_k_labels"][0] == row["labels"]
        assert row["top_k_scores"] == sorted(row["top_k_scores"], reverse=True)


def test_tfserving_predict_instances(server, ref):
    response = post_json(server, {"instances": ref.images[:6].astype(float).tolist()}, PREDICT)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"predictions"}
    check_rows(response.json()["predictions"], ref, 6)


def test_tfserving_predict_named_instances(server, ref):
    response = post_json(server, {"instances": [{"images": image.tolist()} for image in ref.images[:3]]}, PREDICT)
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], ref, 3)


@pytest.mark.parametrize("named", [False, True], ids=["list", "dict"])
def test_tfserving_predict_inputs_columns(server, ref, named):
    images = ref.images[:5].tolist()
    response = post_json(server, {"inputs": {"images": images} if named else images}, PREDICT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"outputs"}
    outputs = body["outputs"]
    assert set(outputs) == OUTPUT_KEYS
    np.testing.assert_allclose(outputs["probabilities"], ref.probabilities[:5], atol=1e-4)
    assert outputs["labels"] == ref.labels[:5]
    assert [ref.class_names[i] for i in outputs["class_ids"]] == ref.labels[:5]
    assert np.shape(outputs["top_k_labels"]) == np.shape(outputs["top_k_scores"]) == (5, TOP_K)


def test_tfserving_image_bytes_signature(server, ref):
    instances = [b64(png_bytes(image)) for image in ref.images[:3]] + [{"image_bytes": b64(png_bytes(ref.images[3]))}]
    response = post_json(server, {"signature_name": "classify_image_bytes", "instances": instances}, PREDICT)
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], ref, 4)


def test_tfserving_uint8_signature(server, ref):
    response = post_json(server, {"signature_name": "classify_uint8", "instances": ref.images[:4].tolist()}, PREDICT)
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], ref, 4)


def test_tfserving_versioned_predict(server, ref):
    response = post_json(
        server, {"instances": ref.images[:2].tolist()}, f"/v1/models/classifier/versions/{ref.version}:predict"
    )
    assert response.status_code == 200, response.text
    check_rows(response.json()["predictions"], ref, 2)


def test_tfserving_model_status_and_metadata(server, ref):
    for path in ("/v1/models/classifier", f"/v1/models/classifier/versions/{ref.version}"):
        response = httpx.get(server + path, timeout=TIMEOUT)
        assert response.status_code == 200, response.text
        (status,) = response.json()["model_version_status"]
        assert status["state"] == "AVAILABLE" and status["version"] == ref.version
        assert status["status"]["error_code"] == "OK"
    response = httpx.get(server + "/v1/models/classifier/metadata", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_spec"]["name"] == "classifier" and body["model_spec"]["version"] == ref.version
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "classify_uint8", "classify_image_bytes"} <= set(signatures)
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_FLOAT"
    assert len(images["tensor_shape"]["dim"]) == 4
    assert signatures["classify_uint8"]["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert signatures["classify_image_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == OUTPUT_KEYS


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        pytest.param(
            "POST",
            "/v1/models/nope:predict",
            {"instances": [[[0]]]},
            404,
            "no model named 'nope'",
            id="unknown-model-predict",
        ),
        pytest.param("GET", "/v1/models/nope", None, 404, "no model named 'nope'", id="unknown-model-status"),
        pytest.param(
            "GET", "/v1/models/nope/metadata", None, 404, "no model named 'nope'", id="unknown-model-metadata"
        ),
        pytest.param(
            "POST",
            "/v1/models/classifier/versions/999:predict",
            {"instances": [[[0]]]},
            404,
            "version 999",
            id="unknown-version-predict",
        ),
        pytest.param(
            "GET", "/v1/models/classifier/versions/999", None, 404, "version 999", id="unknown-version-status"
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "nope", "instances": [[[0]]]},
            400,
            "unknown signature_name 'nope'",
            id="unknown-signature",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": ["x"], "instances": [[[0]]]},
            400,
            "signature_name",
            id="signature-not-a-string",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"instances": [[[0]]], "inputs": [[[0]]]},
            400,
            "exactly one of",
            id="both-instances-and-inputs",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "serving_default"},
            400,
            "exactly one of",
            id="neither-instances-nor-inputs",
        ),
        pytest.param("POST", PREDICT, [1, 2], 400, "not an object", id="not-an-object"),
        pytest.param("POST", PREDICT, {"instances": "x"}, 400, "not a list", id="instances-not-a-list"),
        pytest.param("POST", PREDICT, {"instances": []}, 400, "empty batch", id="empty-instances"),
        pytest.param("POST", PREDICT, {"instances": [[[300]]]}, 400, "outside 0–255", id="out-of-range"),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "classify_uint8", "instances": [[[1.5]]]},
            400,
            "non-integer",
            id="uint8-non-integer",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "classify_image_bytes", "instances": ["abc"]},
            400,
            "b64",
            id="bytes-not-b64-object",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "classify_image_bytes", "instances": [{"b64": "not base64!"}]},
            400,
            "not valid base64",
            id="bad-b64",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "classify_image_bytes", "instances": [b64(b"plain text, not an image")]},
            400,
            "could not be decoded",
            id="b64-not-an-image",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "classify_image_bytes", "inputs": [b64(huge_png(5000, 10))]},
            413,
            "over the limit",
            id="b64-image-too-wide",
        ),
        pytest.param(
            "POST",
            PREDICT,
            {"signature_name": "classify_image_bytes", "inputs": [b64(encode(Image.new("1", (8, 8)), "BMP"))]},
            400,
            "could not be decoded by the model",
            id="b64-bmp-tf-cannot-decode",
        ),
    ],
)
def test_tfserving_errors(server, ref, method, path, body, status, fragment):
    response = httpx.request(method, server + path, json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert fragment in error_of(response)
    assert_still_serving(server, ref)


def test_a_requests_images_are_budgeted_by_their_decoded_size_from_their_headers(server, ref):
    # Five 4096×4096 RGBA PNGs of 65 KB each: 64 MiB decoded apiece, 320 MiB in all, over the 256 MiB default.
    big = b64(huge_png(4096, 4096, rgba=True))
    body = {"signature_name": "classify_image_bytes", "instances": [big] * 5}
    response = httpx.post(server + PREDICT, json=body, timeout=TIMEOUT)
    assert response.status_code == 413, response.text[:500]
    error = response.json()
    assert error["error"] == "instance 4 would bring the request's decoded images to 320.0 MiB, over the limit"
    assert "256.0 MiB of decoded images in one request" in error["expected"]
    animated = {"signature_name": "classify_image_bytes", "instances": [b64(_digit_png()), b64(animated_gif(4))]}
    response = httpx.post(server + PREDICT, json=animated, timeout=TIMEOUT)
    assert response.status_code == 415 and "instance 1 is animated (4 frames)" in error_of(response)
    assert_still_serving(server, ref)


def test_tfserving_malformed_json(server, ref):
    response = post_raw(server, b'{"instances": [[[0', PREDICT)
    assert response.status_code == 400, response.text
    assert "malformed JSON" in error_of(response)
    assert_still_serving(server, ref)


# --- 4. health, metrics, docs, model list --------------------------------------------------------


def test_health_metrics_and_docs(server):
    for path in ("/livez", "/readyz"):
        assert httpx.get(server + path, timeout=TIMEOUT).status_code == 200
    metrics = httpx.get(server + "/metrics", timeout=TIMEOUT)
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "# TYPE" in metrics.text and "# HELP" in metrics.text
    docs = httpx.get(server + "/docs", timeout=TIMEOUT)
    assert docs.status_code == 200 and "html" in docs.headers["content-type"]
    openapi = httpx.get(server + "/openapi.json", timeout=TIMEOUT)
    assert openapi.status_code == 200
    paths = openapi.json()["paths"]
    assert "/classify" in paths and "post" in paths["/classify"]
    assert "/v1/models/{name}:predict" in paths


def test_openapi_documents_every_body_and_error(server):
    """Every POST takes a documented body, every route documents 500, and every route with a parameter or a body
    its 4xx answers, all with the one error body (GET /models and /v1/models take nothing that could be wrong).
    tests/serving/test_openapi.py checks the server against the document."""
    document = httpx.get(server + "/openapi.json", timeout=TIMEOUT).json()
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
    operations = [
        (method, path, operation) for path, item in document["paths"].items() for method, operation in item.items()
    ]
    assert len(operations) == 18
    for method, path, operation in operations:
        responses = operation["responses"]
        assert responses["500"]["content"]["application/json"]["schema"] == error, (method, path)
        client_errors = [status for status in responses if status.startswith("4")]
        if method == "post":
            assert operation["requestBody"]["content"], path
        if operation.get("parameters") or "requestBody" in operation:
            assert "400" in client_errors, (method, path)
        for status in client_errors:
            assert responses[status]["content"]["application/json"]["schema"] == error, (method, path, status)
    assert "422" not in str(document)  # FastAPI's validation errors: these routes read their bodies themselves
    predict = document["paths"]["/v1/models/{name}/versions/{version}:predict"]["post"]
    assert {"413", "415", "503", "504"} <= set(predict["responses"])
    assert "Retry-After" in predict["responses"]["503"]["headers"]
    (version,) = [parameter for parameter in predict["parameters"] if parameter["name"] == "version"]
    assert version == {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert {"instances", "inputs", "signature_name"} <= set(body["properties"])


def test_the_openapi_examples_work(server):
    """What /docs sends with "Try it out": each JSON example of the task routes and of :predict gets a 200."""
    document = httpx.get(server + "/openapi.json", timeout=TIMEOUT).json()
    examples = document["components"]["examples"]
    for path in ("/classify", "/detect", "/translate"):
        media = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        for reference in media["examples"].values():
            example = examples[reference["$ref"].rsplit("/", 1)[1]]["value"]
            response = httpx.post(server + path, json=example, timeout=TIMEOUT)
            assert response.status_code == 200, (path, response.text)
            assert len(response.json()["predictions"]) == len(example[next(iter(example))]), path
    predict = document["paths"]["/v1/models/{name}:predict"]["post"]["requestBody"]["content"]["application/json"]
    response = httpx.post(server + "/v1/models/classifier:predict", json=predict["example"], timeout=TIMEOUT)
    assert response.status_code == 200, response.text


def test_v1_models_lists_every_served_model_with_versions_and_signatures(server, ref):
    response = httpx.get(server + "/v1/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    listed = {model["name"]: model for model in response.json()["models"]}
    assert set(listed) == {"classifier", "seq2seq", "detector"}
    metadata = {model["name"]: model for model in httpx.get(server + "/models", timeout=TIMEOUT).json()["models"]}
    for name, model in listed.items():
        assert model["task"] == metadata[name]["task"]
        assert model["versions"] == [
            {
                "version": str(metadata[name]["version"]),
                "state": "AVAILABLE",
                "labels": [],
                "blessing": store.NO_BLESSING,  # the test models are exported without the gate
            }
        ]
        assert set(metadata[name]["signatures"].values()) <= set(model["signatures"]), name
    classifier = listed["classifier"]
    assert classifier["versions"][0]["version"] == ref.version
    uint8 = classifier["signatures"]["classify_uint8"]
    assert uint8["inputs"]["images"]["dtype"] == "uint8"
    assert len(uint8["inputs"]["images"]["shape"]) == 4 and uint8["inputs"]["images"]["shape"][0] is None
    assert set(uint8["outputs"]) == OUTPUT_KEYS
    assert classifier["signatures"]["classify_image_bytes"]["inputs"]["image_bytes"] == {
        "dtype": "string",
        "shape": [None],
    }
    # The texts role takes the strings and the options: the beam width.
    beam = listed["seq2seq"]["signatures"][metadata["seq2seq"]["signatures"]["texts"]]
    assert beam["inputs"]["beam_width"] == {"dtype": "int32", "shape": []}


def test_models_lists_the_classifier(server, ref):
    response = httpx.get(server + "/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    (model,) = [model for model in response.json()["models"] if model["name"] == "classifier"]
    assert str(model["version"]) == ref.version
    assert model["task"] == "classifier"
    assert model["labels"] == ref.class_names
    assert model["signatures"]["default"] == "serving_default"
    assert model["signatures"]["images"] == "serving_default"


# --- 5. bad input on /classify: one test per case ------------------------------------------------


def _pixels(value: Any, size: int = 8) -> list:
    return [[value] * size for _ in range(size)]


def _raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


def _json(body: Any) -> dict[str, Any]:
    return {"json": body}


def _file(
    data: bytes, field: str = "image", filename: str = "digit.png", content_type: str = "image/png"
) -> dict[str, Any]:
    return {"files": {field: (filename, data, content_type)}}


def _digit_png() -> bytes:
    from pipelines.data.image_data import load_digits

    return png_bytes(load_digits(seed=0).test.images[0])


def _big_body(chunked: bool) -> dict[str, Any]:
    body = b'{"instances": [' + b" " * MAX_PAYLOAD_BYTES + b"[[0]]]}"
    if not chunked:
        return _raw(body)
    step = 1 << 20
    return {
        "content": (body[start : start + step] for start in range(0, len(body), step)),
        "headers": {"content-type": "application/json"},
    }


def _nested(depth: int) -> bytes:
    return b'{"instances": ' + b"[" * depth + b"]" * depth + b"}"


@dataclass(frozen=True)
class Bad:
    request: Callable[[], dict[str, Any]]  # httpx.post keyword arguments, built when the test runs
    status: int
    fragment: str


BAD_CASES = {
    # JSON documents
    "malformed-json": Bad(lambda: _raw(b'{"instances": [[1, 2'), 400, "malformed JSON"),
    "invalid-utf8": Bad(lambda: _raw(b'{"instances": "\xff\xfe\xfa"}'), 400, "malformed JSON"),
    "empty-body": Bad(lambda: _raw(b""), 400, "malformed JSON"),
    "deeply-nested-json": Bad(lambda: _raw(_nested(100_000)), 400, "nested too deeply"),
    "json-not-an-object": Bad(lambda: _json([_pixels(0)]), 400, "not an object"),
    "missing-instances": Bad(lambda: _json({"images": [_pixels(0)]}), 400, "missing field 'instances'"),
    "instances-not-a-list": Bad(lambda: _json({"instances": {"a": 1}}), 400, "'instances' is a dict, not a list"),
    # shapes
    "rank-1-instance": Bad(lambda: _json({"instances": [[0, 1, 2, 3]]}), 400, "rank 1"),
    "rank-4-instance": Bad(lambda: _json({"instances": [[_pixels([0])]]}), 400, "rank 4"),
    "scalar-instance": Bad(lambda: _json({"instances": [7]}), 400, "rank 0"),
    "two-channels": Bad(lambda: _json({"instances": [_pixels([0, 0])]}), 400, "2 channels"),
    "ragged-rows": Bad(lambda: _json({"instances": [[[0, 1, 2], [3, 4]]]}), 400, "not a rectangular array"),
    "zero-width": Bad(lambda: _json({"instances": [[[], []]]}), 400, "is empty"),
    "too-wide-instance": Bad(lambda: _json({"instances": [[[0] * 5000]]}), 413, "over the limit"),
    "different-shapes": Bad(lambda: _json({"instances": [_pixels(0, 8), _pixels(0, 9)]}), 400, "different shapes"),
    # values
    "strings": Bad(lambda: _json({"instances": [_pixels("x")]}), 400, "non-numeric"),
    "numeric-strings": Bad(lambda: _json({"instances": [_pixels("7")]}), 400, "non-numeric"),
    "booleans": Bad(lambda: _json({"instances": [_pixels(True)]}), 400, "non-numeric"),
    "nulls": Bad(lambda: _json({"instances": [_pixels(None)]}), 400, "non-numeric"),
    "nan": Bad(lambda: _raw(b'{"instances": [[[NaN, 0], [0, 0]]]}'), 400, "non-finite value NaN"),
    "infinity": Bad(lambda: _raw(b'{"instances": [[[Infinity, 0], [0, 0]]]}'), 400, "non-finite value Infinity"),
    "minus-infinity": Bad(
        lambda: _raw(b'{"instances": [[[-Infinity, 0], [0, 0]]]}'), 400, "non-finite value -Infinity"
    ),
    "overflowing-float": Bad(lambda: _raw(b'{"instances": [[[1e400, 0], [0, 0]]]}'), 400, "NaN or infinite"),
    "huge-integer": Bad(lambda: _raw(b'{"instances": [[[1' + b"0" * 400 + b", 0], [0, 0]]]}"), 400, "outside 0–255"),
    "below-0": Bad(lambda: _json({"instances": [_pixels(-1)]}), 400, "outside 0–255"),
    "above-255": Bad(lambda: _json({"instances": [_pixels(256)]}), 400, "outside 0–255"),
    # sizes
    "empty-batch": Bad(lambda: _json({"instances": []}), 400, "empty batch"),
    "batch-over-64": Bad(
        lambda: _json({"instances": [_pixels(0)] * (MAX_BATCH + 1)}), 413, f"over the limit of {MAX_BATCH}"
    ),
    "payload-over-8MiB": Bad(lambda: _big_body(chunked=False), 413, "over the limit"),
    "payload-over-8MiB-chunked": Bad(lambda: _big_body(chunked=True), 413, "over the limit"),
    # multipart uploads
    "multipart-without-image-field": Bad(
        lambda: _file(_digit_png(), field="picture"), 400, "missing file field 'image'"
    ),
    "multipart-image-as-text-field": Bad(
        lambda: {"data": {"image": "not a file"}, "files": {"other": ("x", b"x")}}, 400, "missing file field 'image'"
    ),
    "multipart-without-boundary": Bad(lambda: _raw(b"--x\r\n", "multipart/form-data"), 400, "malformed multipart"),
    "multipart-empty-file": Bad(lambda: _file(b""), 400, "is empty"),
    "multipart-not-an-image": Bad(lambda: _file(b"hello, this is not an image" * 10), 400, "could not be decoded"),
    "truncated-png": Bad(
        lambda: _file(png_bytes(np.full((64, 64), 128, np.uint8))[:-100]), 400, "could not be decoded"
    ),
    "png-half": Bad(lambda: _file((lambda data: data[: len(data) // 2])(_digit_png())), 400, "could not be decoded"),
    "huge-dimension-png": Bad(lambda: _file(huge_png()), 413, "over the limit"),
    "animated-gif": Bad(lambda: _file(animated_gif(), filename="d.gif", content_type="image/gif"), 415, "3 frames"),
    "too-wide-png": Bad(lambda: _file(huge_png(5000, 10)), 413, "over the limit"),
    "bmp-1bit-tf-cannot-decode": Bad(
        lambda: _file(encode(Image.new("1", (8, 8)), "BMP"), filename="d.bmp", content_type="image/bmp"),
        400,
        "could not be decoded by the model",
    ),
    "tiff-upload": Bad(
        lambda: _file(encode(Image.new("L", (8, 8)), "TIFF"), filename="d.tiff", content_type="image/tiff"), 415, "TIFF"
    ),
    "webp-upload": Bad(
        lambda: _file(encode(Image.new("RGB", (8, 8)), "WEBP"), filename="d.webp", content_type="image/webp"),
        415,
        "WEBP",
    ),
    "text-plain": Bad(lambda: _raw(b"hello", "text/plain"), 415, "unsupported content type 'text/plain'"),
    "raw-png-body": Bad(lambda: _raw(_digit_png(), "image/png"), 415, "unsupported content type"),
}


@pytest.mark.parametrize("case", list(BAD_CASES.values()), ids=list(BAD_CASES))
def test_bad_input_is_rejected(server, ref, case):
    response = httpx.post(server + "/classify", timeout=TIMEOUT, **case.request())
    assert response.status_code == case.status, response.text[:500]
    assert case.fragment in error_of(response)
    assert_still_serving(server, ref)


def test_unknown_model_query_parameter(server, ref):
    response = httpx.post(
        server + "/classify", params={"model": "nope"}, json={"instances": [_pixels(0)]}, timeout=TIMEOUT
    )
    assert response.status_code == 404
    assert "no model named 'nope'" in error_of(response)
    assert_still_serving(server, ref)


# --- 6. concurrency ------------------------------------------------------------------------------


def test_64_concurrent_clients_mixing_good_and_bad_requests(server, ref):
    pngs = [png_bytes(image) for image in ref.images]
    bad_requests = [
        ({"content": b'{"instances": [[[NaN]]]}', "headers": {"content-type": "application/json"}}, 400),
        ({"json": {"instances": [_pixels(256)]}}, 400),
        ({"json": {"instances": []}}, 400),
        ({"json": {"instances": [_pixels(0)] * (MAX_BATCH + 1)}}, 413),
        ({"files": {"image": ("d.png", pngs[0][: len(pngs[0]) // 2], "image/png")}}, 400),
        ({"files": {"image": ("d.txt", b"not an image at all", "text/plain")}}, 400),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        # Passes Pillow's check, fails in the model's decoder, possibly inside a batch shared with good images.
        ({"files": {"image": ("d.bmp", encode(Image.new("1", (8, 8)), "BMP"), "image/bmp")}}, 400),
    ]

    def plan(client: int, step: int) -> tuple[str, dict[str, Any], int, list[str] | None]:
        """(path, request, status, labels): deterministic, about one bad request in three."""
        n = client * 5 + step
        index = n % len(ref.images)
        if n % 3 == 2:
            request, status = bad_requests[n % len(bad_requests)]
            return "/classify", request, status, None
        kind = n % 4
        if kind == 0:
            rows = [(index + k) % len(ref.images) for k in range(1 + n % 3)]
            return (
                "/classify",
                {"json": {"instances": ref.images[rows].tolist()}},
                200,
                [ref.labels[row] for row in rows],
            )
        if kind == 1:
            return "/classify", {"files": {"image": ("d.png", pngs[index], "image/png")}}, 200, [ref.labels[index]]
        if kind == 2:
            return PREDICT, {"json": {"instances": ref.images[index : index + 1].tolist()}}, 200, [ref.labels[index]]
        body = {"signature_name": "classify_image_bytes", "instances": [b64(pngs[index])]}
        return PREDICT, {"json": body}, 200, [ref.labels[index]]

    async def client(number: int) -> list[tuple[int, int, str, int, int, list[str] | None, list[str] | None]]:
        results = []
        async with httpx.AsyncClient(base_url=server, timeout=60) as http:
            for step in range(5):
                path, request, status, labels = plan(number, step)
                response = await http.post(path, **request)
                got = None
                if response.status_code == 200:
                    body = response.json()
                    got = [p["label"] if "label" in p else p["labels"] for p in body["predictions"]]
                else:
                    error_of(response)
                results.append((number, step, path, status, response.status_code, labels, got))
        return results

    async def everyone() -> list:
        return [
            result for results in await asyncio.gather(*(client(number) for number in range(64))) for result in results
        ]

    results = asyncio.run(everyone())
    assert len(results) == 64 * 5
    failures = [result for result in results if result[3] != result[4] or result[5] != result[6]]
    assert not failures, failures[:5]
    assert sum(1 for result in results if result[3] == 200) > 150
    assert_still_serving(server, ref)
