"""End-to-end tests of POST /detect, the TF Serving routes and `modelservice predict` for the object detector.

The same real BentoML server as tests/test_serving.py serves the detector next to the classifier and the
date normaliser (conftest.py). Every answer is checked against the exported graph loaded in this process on
the same input; every bad request must get its exact 4xx with a JSON error that says what is expected, after
which the service still answers a good request.
"""

import asyncio
import base64
import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from serving.contract import read_metadata
from serving.inputs import MAX_BATCH

pytestmark = pytest.mark.slow

TIMEOUT = 60.0
PROJECT = Path(__file__).resolve().parents[2]
PREDICT = "/v1/models/detector:predict"
SIGNATURES = {"serving_default", "detect_images", "detect_image_bytes"}


# --- helpers -------------------------------------------------------------------------------------


def encode(image: np.ndarray | Image.Image, image_format: str = "PNG") -> bytes:
    """A uint8 (H, W, C) array or a Pillow image, encoded."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def gray(scene_image: np.ndarray) -> Image.Image:
    return Image.fromarray(scene_image[..., 0])


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG declaring width×height: all-zero rows deflate to almost nothing."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


def upload(url: str, data: bytes, fields: dict[str, str] | None = None, path: str = "/detect") -> httpx.Response:
    return httpx.post(url + path, files={"image": ("scene.png", data, "image/png")}, data=fields or {}, timeout=TIMEOUT)


def post_json(url: str, body: Any, path: str = "/detect") -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=TIMEOUT)


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert (
        isinstance(body.get("error"), str)
        and body["error"]
        and isinstance(body.get("expected"), str)
        and body["expected"]
    ), body
    return body["error"]


@dataclass(frozen=True)
class Graph:
    """The exported SavedModel, loaded here, as the reference for what the server must answer."""

    loaded: Any
    version: str
    score_threshold: float
    iou_threshold: float

    def pixels(
        self, images: np.ndarray, score_threshold: float | None = None, iou_threshold: float | None = None
    ) -> dict[str, np.ndarray]:
        return self._call(
            "detect_images",
            images=tf.constant(images, tf.float32),
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
        )

    def encoded(
        self, files: list[bytes], score_threshold: float | None = None, iou_threshold: float | None = None
    ) -> dict[str, np.ndarray]:
        return self._call(
            "detect_image_bytes",
            image_bytes=tf.constant(files),
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
        )

    def _call(
        self, signature: str, *, score_threshold: float | None, iou_threshold: float | None, **images: tf.Tensor
    ) -> dict[str, np.ndarray]:
        score = self.score_threshold if score_threshold is None else score_threshold
        iou = self.iou_threshold if iou_threshold is None else iou_threshold
        outputs = self.loaded.signatures[signature](
            **images, score_threshold=tf.constant(score, tf.float32), iou_threshold=tf.constant(iou, tf.float32)
        )
        return {key: value.numpy() for key, value in outputs.items()}


@pytest.fixture(scope="module")
def graph(trained_detector) -> Graph:
    artifact = trained_detector[3]
    metadata = read_metadata(artifact)
    postprocessing = metadata.postprocessing
    return Graph(
        tf.saved_model.load(str(artifact)),
        str(metadata.version),
        postprocessing.score_threshold,
        postprocessing.iou_threshold,
    )


@pytest.fixture(scope="module")
def scene_images(scenes) -> np.ndarray:
    """uint8 (8, 128, 128, 1): the first test scenes."""
    return np.stack([scene.image for scene in scenes.test[:8]])


def check_detections(detections: list[dict[str, Any]], expected: dict[str, np.ndarray], row: int = 0) -> None:
    """One image's detections as served == the graph's first `count` rows for that image."""
    count = int(expected["count"][row])
    assert len(detections) == count
    for index, detection in enumerate(detections):
        assert set(detection) == {"box", "label", "class_id", "score"}
        assert all(isinstance(value, float) for value in detection["box"]) and isinstance(detection["score"], float)
        np.testing.assert_allclose(detection["box"], expected["boxes"][row, index], atol=1e-3)
        assert detection["score"] == pytest.approx(float(expected["scores"][row, index]), abs=1e-4)
        assert detection["label"] == expected["labels"][row, index].decode()
        assert detection["class_id"] == int(expected["classes"][row, index])
    scores = [detection["score"] for detection in detections]
    assert scores == sorted(scores, reverse=True)


def check_answer(response: httpx.Response, expected: dict[str, np.ndarray], version: str) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"predictions", "model"}
    assert body["model"] == {"name": "detector", "version": version}
    assert len(body["predictions"]) == len(expected["count"])
    for row, prediction in enumerate(body["predictions"]):
        assert set(prediction) == {"detections"}
        check_detections(prediction["detections"], expected, row)
    return body["predictions"]


def assert_still_serving(url: str, graph: Graph, image: np.ndarray) -> None:
    """A good request right after a bad one still gets the graph's answer."""
    check_answer(
        post_json(url, {"instances": [image.tolist()], "score_threshold": 0.3}),
        graph.pixels(image[np.newaxis], 0.3),
        graph.version,
    )


# --- POST /detect --------------------------------------------------------------------------------


def test_png_upload_of_a_test_scene(server, graph, scene_images):
    for image in scene_images[:3]:
        data = encode(image)
        predictions = check_answer(upload(server, data), graph.encoded([data]), graph.version)
        assert all(0.0 <= box <= 128.0 for detection in predictions[0]["detections"] for box in detection["box"])


def test_json_instances_batch_of_two_scenes(server, graph, scene_images):
    images = scene_images[:2]
    check_answer(post_json(server, {"instances": images.tolist()}), graph.pixels(images), graph.version)
    # H×W without the channel axis, as /classify accepts.
    check_answer(post_json(server, {"instances": images[..., 0].tolist()}), graph.pixels(images), graph.version)


@pytest.mark.parametrize("transport", ["json", "form"])
def test_per_request_thresholds_change_the_answer_as_the_graph_does(server, graph, scene_images, transport):
    image = scene_images[3]
    data = encode(image)
    counts = {}
    for score, iou in ((0.0, 0.5), (0.9, 0.5), (0.2, 0.1), (0.2, 1.0), (1, 0)):
        if transport == "json":
            response = post_json(
                server, {"instances": [image.tolist()], "score_threshold": score, "iou_threshold": iou}
            )
            expected = graph.pixels(image[np.newaxis], score, iou)
        else:
            response = upload(server, data, {"score_threshold": str(score), "iou_threshold": str(iou)})
            expected = graph.encoded([data], score, iou)
        counts[score, iou] = len(check_answer(response, expected, graph.version)[0]["detections"])
    assert counts[0.0, 0.5] > counts[0.9, 0.5]
    assert counts[0.2, 1.0] >= counts[0.2, 0.1]  # a looser overlap limit suppresses fewer boxes


def test_images_of_other_sizes_get_boxes_in_their_own_pixels(server, graph, scene_images):
    image = gray(scene_images[4])
    stretched = np.asarray(image.resize((256, 192), Image.Resampling.BILINEAR))[..., np.newaxis]
    padded = np.full((160, 200, 1), int(np.median(scene_images[4])), np.uint8)
    padded[20:148, 30:158] = scene_images[4]
    served = {}
    for name, picture in (("stretched", stretched), ("padded", padded)):
        height, width = picture.shape[:2]
        data = encode(picture)
        # Threshold 0 keeps boxes all over the picture, however well the session's small model is trained.
        by_upload = check_answer(
            upload(server, data, {"score_threshold": "0"}), graph.encoded([data], 0.0), graph.version
        )
        by_json = check_answer(
            post_json(server, {"instances": [picture.tolist()], "score_threshold": 0}),
            graph.pixels(picture[np.newaxis], 0.0),
            graph.version,
        )
        for predictions in (by_upload, by_json):
            boxes = np.array([detection["box"] for detection in predictions[0]["detections"]])
            assert len(boxes) > 0
            assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= width and boxes[:, [1, 3]].max() <= height
        served[name] = np.array([detection["box"] for detection in by_upload[0]["detections"]])
    # Not the model's 128×128 canvas: the stretched scene's digits reach past x = 128, the padded one's start at its
    # offset.
    assert served["stretched"][:, 2].max() > 128
    assert served["padded"][:, 0].max() > 30 and served["padded"][:, 1].max() > 20


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_rgb_and_rgba_images(server, graph, scene_images, mode):
    colour = gray(scene_images[5]).convert(mode)
    data = encode(colour)
    check_answer(upload(server, data, {"score_threshold": "0.3"}), graph.encoded([data], 0.3), graph.version)
    pixels = np.asarray(colour)
    check_answer(
        post_json(server, {"instances": [pixels.tolist()], "score_threshold": 0.3}),
        graph.pixels(pixels[np.newaxis], 0.3),
        graph.version,
    )


def test_jpeg_gif_and_bmp_uploads(server, graph, scene_images):
    image = gray(scene_images[6])
    for image_format, picture in (("JPEG", image), ("GIF", image), ("BMP", image.convert("RGB"))):
        data = encode(picture, image_format)
        check_answer(upload(server, data, {"score_threshold": "0.3"}), graph.encoded([data], 0.3), graph.version)


@pytest.mark.parametrize("where", ["query", "form", "json"])
def test_format_png_draws_the_boxes_on_the_original_image(server, graph, scene_images, where):
    picture = np.asarray(gray(scene_images[0]).resize((200, 150), Image.Resampling.BILINEAR))[..., np.newaxis]
    data = encode(picture)
    if where == "query":
        response = httpx.post(
            server + "/detect",
            params={"format": "png"},
            files={"image": ("s.png", data, "image/png")},
            data={"score_threshold": "0"},
            timeout=TIMEOUT,
        )
    elif where == "form":
        response = upload(server, data, {"format": "png", "score_threshold": "0"})
    else:
        response = post_json(server, {"instances": [picture.tolist()], "format": "png", "score_threshold": 0})
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"] == "image/png"
    drawn = Image.open(io.BytesIO(response.content))
    assert drawn.format == "PNG" and drawn.size == (200, 150) and drawn.mode == "RGB"
    original = np.asarray(Image.fromarray(picture[..., 0]).convert("RGB"))
    changed = np.any(np.asarray(drawn) != original, axis=-1)
    expected = graph.encoded([data], 0.0)
    assert int(expected["count"][0]) > 0
    # The best box is drawn last, so its whole left edge shows where the graph put it (±1 pixel of rounding).
    x1, y1, _, y2 = (round(value) for value in expected["boxes"][0, 0])
    left_edge = changed[y1:y2, max(x1 - 1, 0) : x1 + 2].any(axis=1)
    assert left_edge.mean() > 0.9


def test_format_png_with_no_detections_is_the_original_image(server, graph):
    picture = np.full((80, 100, 1), 60, np.uint8)  # a blank picture: nothing scores above 1
    assert int(graph.pixels(picture[np.newaxis], 1.0)["count"][0]) == 0
    response = post_json(server, {"instances": [picture.tolist()], "format": "png", "score_threshold": 1.0})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(response.content))), np.repeat(picture, 3, axis=-1))
    explicit_json = post_json(server, {"instances": [picture.tolist()], "format": "json", "score_threshold": 1.0})
    assert explicit_json.status_code == 200 and explicit_json.json()["predictions"] == [{"detections": []}]


def test_the_detector_can_be_chosen_by_name(server, graph, scene_images):
    response = httpx.post(
        server + "/detect", params={"model": "detector"}, json={"instances": scene_images[:1].tolist()}, timeout=TIMEOUT
    )
    check_answer(response, graph.pixels(scene_images[:1]), graph.version)


def test_models_lists_the_detector(server, graph):
    response = httpx.get(server + "/models", timeout=TIMEOUT)
    assert response.status_code == 200
    (model,) = [model for model in response.json()["models"] if model["task"] == "detector"]
    assert model["signatures"] == {
        "default": "serving_default",
        "images": "detect_images",
        "image_bytes": "detect_image_bytes",
    }
    assert str(model["version"]) == graph.version


# --- TF Serving REST API -------------------------------------------------------------------------


def check_rows(rows: list[dict[str, Any]], expected: dict[str, np.ndarray]) -> None:
    """TF Serving rows carry every output unchanged, padding included."""
    assert len(rows) == len(expected["count"])
    for row, answer in enumerate(rows):
        assert set(answer) == {"boxes", "scores", "classes", "labels", "count"}
        assert answer["count"] == int(expected["count"][row])
        np.testing.assert_allclose(answer["boxes"], expected["boxes"][row], atol=1e-3)
        np.testing.assert_allclose(answer["scores"], expected["scores"][row], atol=1e-4)
        assert answer["labels"] == [label.decode() for label in expected["labels"][row]]
        assert answer["classes"][: answer["count"]] == expected["classes"][row, : answer["count"]].tolist()


def test_tfserving_pixel_instances_with_thresholds_per_row(server, graph, scene_images):
    images = scene_images[:2]
    body = {
        "signature_name": "detect_images",
        "instances": [{"images": image.tolist(), "score_threshold": 0.3, "iou_threshold": 0.4} for image in images],
    }
    response = post_json(server, body, PREDICT)
    assert response.status_code == 200, response.text[:500]
    check_rows(response.json()["predictions"], graph.pixels(images, 0.3, 0.4))


def test_tfserving_default_signature_and_columns(server, graph, scene_images):
    images = scene_images[2:4]
    response = post_json(server, {"instances": images.tolist()}, PREDICT)
    assert response.status_code == 200, response.text[:500]
    check_rows(response.json()["predictions"], graph.pixels(images))
    body = {
        "signature_name": "detect_images",
        "inputs": {"images": images.tolist(), "score_threshold": 0.25, "iou_threshold": 0.5},
    }
    response = post_json(server, body, PREDICT)
    assert response.status_code == 200, response.text[:500]
    outputs = response.json()["outputs"]
    expected = graph.pixels(images, 0.25, 0.5)
    assert outputs["count"] == expected["count"].tolist()
    np.testing.assert_allclose(outputs["boxes"], expected["boxes"], atol=1e-3)


def test_tfserving_base64_images_of_different_sizes(server, graph, scene_images):
    files = [
        encode(scene_images[0]),
        encode(gray(scene_images[1]).resize((256, 192)).convert("RGB")),
        encode(gray(scene_images[2]), "JPEG"),
    ]
    instances = [{"image_bytes": b64(data), "score_threshold": 0.3, "iou_threshold": 0.5} for data in files]
    response = post_json(server, {"signature_name": "detect_image_bytes", "instances": instances}, PREDICT)
    assert response.status_code == 200, response.text[:500]
    check_rows(response.json()["predictions"], graph.encoded(files, 0.3, 0.5))


def test_tfserving_status_and_metadata(server, graph):
    response = httpx.get(server + "/v1/models/detector", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["model_version_status"][0]["version"] == graph.version
    response = httpx.get(server + "/v1/models/detector/metadata", timeout=TIMEOUT)
    assert response.status_code == 200
    signatures = response.json()["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == SIGNATURES
    assert set(signatures["detect_images"]["inputs"]) == {"images", "score_threshold", "iou_threshold"}
    assert signatures["detect_images"]["inputs"]["score_threshold"]["dtype"] == "DT_FLOAT"
    assert signatures["detect_images"]["inputs"]["score_threshold"]["tensor_shape"]["dim"] == []
    assert signatures["detect_image_bytes"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(signatures["serving_default"]["outputs"]) == {"boxes", "scores", "classes", "labels", "count"}
    assert signatures["serving_default"]["outputs"]["labels"]["dtype"] == "DT_STRING"


# --- bad input -----------------------------------------------------------------------------------


def _scene() -> list:
    return np.full((32, 32), 40, np.uint8).tolist()


def _png() -> bytes:
    return encode(np.tile(np.arange(64, dtype=np.uint8)[:, np.newaxis, np.newaxis] * 3, (1, 64, 1)))


def _damaged(png: bytes) -> bytes:
    """The PNG with a byte of its image data changed, as a bad transfer would: its length still right."""
    at = png.index(b"IDAT") + 20
    return png[:at] + bytes([png[at] ^ 0xFF]) + png[at + 1 :]


def _jpeg() -> bytes:
    return encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")


def _file(
    data: bytes, fields: dict[str, str] | None = None, filename: str = "s.png", content_type: str = "image/png"
) -> dict[str, Any]:
    return {"files": {"image": (filename, data, content_type)}, "data": fields or {}}


def _json(body: Any) -> dict[str, Any]:
    return {"json": body}


def _raw(body: bytes, content_type: str) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


@dataclass(frozen=True)
class Bad:
    request: Callable[[], dict[str, Any]]  # httpx.post keyword arguments, built when the test runs
    status: int
    fragment: str
    path: str = "/detect"


BAD_CASES = {
    # images
    "not-an-image": Bad(lambda: _file(b"hello, this is not an image" * 10), 400, "could not be decoded"),
    "empty-file": Bad(lambda: _file(b""), 400, "is empty"),
    "truncated-png": Bad(lambda: _file(_png()[:-60]), 400, "could not be decoded"),
    # Caught by the upload's check, before they could fail a batch in the graph's decoder:
    "truncated-jpeg": Bad(
        lambda: _file(_jpeg()[:-200], filename="s.jpg", content_type="image/jpeg"),
        400,
        "the uploaded image could not be decoded",
    ),
    "damaged-png": Bad(lambda: _file(_damaged(_png())), 400, "the uploaded image could not be decoded"),
    "huge-dimension-png": Bad(lambda: _file(huge_png(20000, 20000)), 413, "over the limit"),
    "too-wide-png": Bad(lambda: _file(huge_png(5000, 10)), 413, "over the limit"),
    "too-wide-instance": Bad(lambda: _json({"instances": [[[0] * 5000]]}), 413, "over the limit"),
    "tiff-upload": Bad(
        lambda: _file(encode(Image.new("L", (8, 8)), "TIFF"), filename="s.tiff", content_type="image/tiff"), 415, "TIFF"
    ),
    "bmp-1bit-tf-cannot-decode": Bad(
        lambda: _file(encode(Image.new("1", (8, 8)), "BMP"), filename="s.bmp", content_type="image/bmp"),
        400,
        "could not be decoded by the model",
    ),
    "missing-image-field": Bad(
        lambda: {"files": {"picture": ("s.png", _png(), "image/png")}}, 400, "missing file field 'image'"
    ),
    "rank-1-instance": Bad(lambda: _json({"instances": [[0, 1, 2]]}), 400, "rank 1"),
    "rank-4-instance": Bad(lambda: _json({"instances": [[[_scene()]]]}), 400, "rank 4"),
    "two-channels": Bad(lambda: _json({"instances": [[[[0, 0]] * 4] * 4]}), 400, "2 channels"),
    "values-above-255": Bad(lambda: _json({"instances": [[[256] * 4] * 4]}), 400, "outside 0–255"),
    "different-shapes": Bad(lambda: _json({"instances": [_scene(), [[0] * 8] * 8]}), 400, "different shapes"),
    "empty-batch": Bad(lambda: _json({"instances": []}), 400, "empty batch"),
    "batch-over-limit": Bad(
        lambda: _json({"instances": [[[0]]] * (MAX_BATCH + 1)}), 413, f"over the limit of {MAX_BATCH}"
    ),
    "missing-instances": Bad(lambda: _json({"images": [_scene()]}), 400, "missing field 'instances'"),
    "body-not-an-object": Bad(lambda: _json([_scene()]), 400, "not an object"),
    "malformed-json": Bad(lambda: _raw(b'{"instances": [[[0', "application/json"), 400, "malformed JSON"),
    "huge-integer-literal": Bad(
        lambda: _raw(b'{"instances": [[[1' + b"0" * 5000 + b"]]]}", "application/json"), 400, "too many digits"
    ),
    # thresholds in JSON
    "score-above-1": Bad(
        lambda: _json({"instances": [_scene()], "score_threshold": 1.5}), 400, "'score_threshold' is 1.5, out of range"
    ),
    "score-negative": Bad(lambda: _json({"instances": [_scene()], "score_threshold": -0.1}), 400, "out of range"),
    "iou-above-1": Bad(
        lambda: _json({"instances": [_scene()], "iou_threshold": 2}), 400, "'iou_threshold' is 2, out of range"
    ),
    "score-string": Bad(lambda: _json({"instances": [_scene()], "score_threshold": "0.5"}), 400, "not a finite number"),
    "score-bool": Bad(lambda: _json({"instances": [_scene()], "score_threshold": True}), 400, "not a finite number"),
    "iou-null": Bad(lambda: _json({"instances": [_scene()], "iou_threshold": None}), 400, "not a finite number"),
    "score-list": Bad(lambda: _json({"instances": [_scene()], "score_threshold": [0.5]}), 400, "not a finite number"),
    "score-overflowing": Bad(
        lambda: _raw(b'{"instances": [[[0]]], "score_threshold": 1e400}', "application/json"),
        400,
        "is Infinity, not a finite number",
    ),
    "score-nan": Bad(
        lambda: _raw(b'{"instances": [[[0]]], "score_threshold": NaN}', "application/json"), 400, "non-finite value NaN"
    ),
    # thresholds in a form
    "form-score-not-a-number": Bad(
        lambda: _file(_png(), {"score_threshold": "high"}),
        400,
        "form field 'score_threshold' is \"high\", not a number",
    ),
    "form-score-above-1": Bad(lambda: _file(_png(), {"score_threshold": "1.01"}), 400, "out of range"),
    "form-iou-negative": Bad(lambda: _file(_png(), {"iou_threshold": "-1"}), 400, "out of range"),
    "form-score-nan": Bad(lambda: _file(_png(), {"score_threshold": "nan"}), 400, "not a finite number"),
    "form-score-empty": Bad(lambda: _file(_png(), {"score_threshold": ""}), 400, "not a number"),
    # format
    "format-unknown-json": Bad(
        lambda: _json({"instances": [_scene()], "format": "gif"}), 400, "'format' is \"gif\", not a known value"
    ),
    "format-not-a-string": Bad(lambda: _json({"instances": [_scene()], "format": 1}), 400, "'format' is 1"),
    "format-unknown-form": Bad(lambda: _file(_png(), {"format": "jpeg"}), 400, "'format' is \"jpeg\""),
    "format-unknown-query": Bad(
        lambda: _json({"instances": [_scene()]}), 400, "'format' is \"xml\"", path="/detect?format=xml"
    ),
    "png-for-two-images": Bad(
        lambda: _json({"instances": [_scene(), _scene()], "format": "png"}),
        400,
        "format=png answers one image; the request has 2",
    ),
    # content types and models
    "text-plain": Bad(lambda: _raw(b"hello", "text/plain"), 415, "unsupported content type 'text/plain'"),
    "raw-png-body": Bad(lambda: _raw(_png(), "image/png"), 415, "unsupported content type"),
    "unknown-model": Bad(
        lambda: _json({"instances": [_scene()]}), 404, "no model named 'nope'", path="/detect?model=nope"
    ),
    "model-of-another-task": Bad(
        lambda: _json({"instances": [_scene()]}),
        400,
        "model 'classifier' is a classifier, not a detector",
        path="/detect?model=classifier",
    ),
    # TF Serving
    "tfs-score-checked-in-graph": Bad(
        lambda: _json(
            {
                "signature_name": "detect_images",
                "inputs": {"images": [_scene()], "score_threshold": 1.5, "iou_threshold": 0.5},
            }
        ),
        400,
        "score_threshold must be a number from 0 to 1",
        path=PREDICT,
    ),
    "tfs-iou-checked-in-graph-on-bytes": Bad(
        lambda: _json(
            {
                "signature_name": "detect_image_bytes",
                "instances": [{"image_bytes": b64(_png()), "score_threshold": 0.5, "iou_threshold": -0.5}],
            }
        ),
        400,
        "the model rejected the input: iou_threshold must be a number from 0 to 1",
        path=PREDICT,
    ),
    "tfs-score-bool": Bad(
        lambda: _json(
            {
                "signature_name": "detect_images",
                "inputs": {"images": [_scene()], "score_threshold": True, "iou_threshold": 0.5},
            }
        ),
        400,
        "'score_threshold' is true, not a finite number",
        path=PREDICT,
    ),
    "tfs-score-string": Bad(
        lambda: _json(
            {
                "signature_name": "detect_images",
                "inputs": {"images": [_scene()], "score_threshold": "0.5", "iou_threshold": 0.5},
            }
        ),
        400,
        "not a finite number",
        path=PREDICT,
    ),
    "tfs-score-beyond-float32": Bad(
        lambda: _json(
            {
                "signature_name": "detect_images",
                "inputs": {"images": [_scene()], "score_threshold": 1e39, "iou_threshold": 0.5},
            }
        ),
        400,
        "out of range",
        path=PREDICT,
    ),
    "tfs-missing-iou": Bad(
        lambda: _json({"signature_name": "detect_images", "inputs": {"images": [_scene()], "score_threshold": 0.5}}),
        400,
        "missing input 'iou_threshold'",
        path=PREDICT,
    ),
    "tfs-rows-disagree": Bad(
        lambda: _json(
            {
                "signature_name": "detect_images",
                "instances": [
                    {"images": _scene(), "score_threshold": 0.5, "iou_threshold": 0.5},
                    {"images": _scene(), "score_threshold": 0.4, "iou_threshold": 0.5},
                ],
            }
        ),
        400,
        "instances disagree on 'score_threshold'",
        path=PREDICT,
    ),
    "tfs-b64-not-an-image": Bad(
        lambda: _json(
            {
                "signature_name": "detect_image_bytes",
                "instances": [{"image_bytes": b64(b"not an image"), "score_threshold": 0.5, "iou_threshold": 0.5}],
            }
        ),
        400,
        "could not be decoded",
        path=PREDICT,
    ),
    "tfs-wrong-signature": Bad(
        lambda: _json({"signature_name": "translate", "instances": [_scene()]}),
        400,
        "unknown signature_name",
        path=PREDICT,
    ),
}


@pytest.mark.parametrize("case", list(BAD_CASES.values()), ids=list(BAD_CASES))
def test_bad_input_gets_a_4xx_json_error_and_the_service_keeps_serving(server, graph, scene_images, case):
    response = httpx.post(server + case.path, timeout=TIMEOUT, **case.request())
    assert response.status_code == case.status, response.text[:500]
    assert case.fragment in error_of(response)
    assert_still_serving(server, graph, scene_images[0])


def test_odd_but_valid_images_get_an_answer(server, graph):
    """Tiny and extremely thin images are letterboxed like any other: a 200 with the graph's answer, never a 5xx."""
    for picture in (
        np.full((1, 1, 1), 200, np.uint8),
        np.full((1, 300, 1), 90, np.uint8),
        np.full((300, 2, 3), 250, np.uint8),
    ):
        check_answer(
            post_json(server, {"instances": [picture.tolist()], "score_threshold": 0.0}),
            graph.pixels(picture[np.newaxis], 0.0),
            graph.version,
        )
        data = encode(picture)
        check_answer(upload(server, data, {"score_threshold": "0"}), graph.encoded([data], 0.0), graph.version)


# --- concurrency ---------------------------------------------------------------------------------


def test_16_concurrent_clients_mixing_sizes_thresholds_and_bad_requests(server, graph, scene_images):
    """Uploads of different sizes share batches; requests with different thresholds do not mix answers."""
    files = [
        encode(scene_images[0]),
        encode(gray(scene_images[1]).resize((256, 192))),
        encode(gray(scene_images[2]).convert("RGB")),
    ]
    thresholds = (0.3, 0.6)
    expected = {
        (index, score): graph.encoded([data], score) for index, data in enumerate(files) for score in thresholds
    }

    async def client(number: int, http: httpx.AsyncClient) -> list[tuple[int, int, bool]]:
        results = []
        for step in range(6):
            index, score = (number + step) % len(files), thresholds[(number + step) % 2]
            if (number + step) % 4 == 3:
                response = await http.post("/detect", json={"instances": [[[0]]], "score_threshold": 7})
                results.append((response.status_code, 400, "error" in response.json()))
                continue
            response = await http.post(
                "/detect", files={"image": ("s.png", files[index], "image/png")}, data={"score_threshold": str(score)}
            )
            ok = response.status_code == 200
            if ok:
                served = response.json()["predictions"][0]["detections"]
                want = expected[index, score]
                ok = [d["label"] for d in served] == [label.decode() for label in want["labels"][0, : want["count"][0]]]
            results.append((response.status_code, 200, ok))
        return results

    async def main() -> list[tuple[int, int, bool]]:
        async with httpx.AsyncClient(base_url=server, timeout=120.0) as http:
            return [
                result for results in await asyncio.gather(*(client(n, http) for n in range(16))) for result in results
            ]

    results = asyncio.run(main())
    assert len(results) == 16 * 6
    assert all(status == wanted for status, wanted, _ in results), [r for r in results if r[0] != r[1]][:5]
    assert all(ok for _, _, ok in results)
    assert_still_serving(server, graph, scene_images[0])


# --- modelservice predict ------------------------------------------------------------------------


@pytest.mark.e2e
def test_cli_predicts_detections_in_image_files(trained_detector, graph, scene_images, tmp_path, capsys):
    from pipelines import cli

    artifact = trained_detector[3]
    files = [tmp_path / "scene.png", tmp_path / "wide.jpg"]
    files[0].write_bytes(encode(scene_images[0]))
    files[1].write_bytes(encode(gray(scene_images[1]).resize((256, 192)).convert("RGB"), "JPEG"))
    thresholds = ["--score-threshold", "0.3", "--iou-threshold", "0.4"]
    assert cli.main(["predict", str(artifact.parent), *map(str, files), *thresholds]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["file"] for line in lines] == [str(path) for path in files]
    expected = graph.encoded([path.read_bytes() for path in files], 0.3, 0.4)
    for row, line in enumerate(lines):
        check_detections(line["detections"], expected, row)
    assert cli.main(["predict", str(artifact), str(files[0])]) == 0
    check_detections(
        json.loads(capsys.readouterr().out.strip().splitlines()[-1])["detections"],
        graph.encoded([files[0].read_bytes()]),
    )
    with pytest.raises(SystemExit) as refused:
        cli.main(["predict", str(artifact), str(files[0]), "--score-threshold", "1.5"])
    assert refused.value.code == 2 and "not a number from 0 to 1" in capsys.readouterr().err
