"""Artifacts exported before the contract had one meaning per role (schema 1) are served unchanged.

tests/serving/fixtures/v1_artifacts holds a classifier, a date normaliser and a detector as commit 10a7937's
export wrote them (barely trained: the answers' shapes and tags are checked here, not their values).
"""

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serving import store
from serving.contract import METADATA_FILE, Role, Task, read_metadata
from serving.process import running_server

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("v1-artifacts")]  # one worker starts its server once

V1_ARTIFACTS = Path(__file__).resolve().parent / "fixtures" / "v1_artifacts"
NAMES = ("classifier", "detector", "seq2seq")
TIMEOUT = 60.0
MIGRATED_ROLES = {
    "classifier": {
        Role.DEFAULT: "serving_default",
        Role.IMAGES: "serving_default",
        Role.IMAGES_UINT8: "classify_uint8",
        Role.IMAGE_BYTES: "classify_image_bytes",
    },
    "seq2seq": {Role.DEFAULT: "serving_default", Role.TEXTS: "translate"},
    "detector": {Role.DEFAULT: "serving_default", Role.IMAGES: "detect_images", Role.IMAGE_BYTES: "detect_image_bytes"},
}
SEQ2SEQ_OUTPUTS = {"texts", "scores", "log_probabilities", "beam_texts", "beam_scores"}


def test_the_fixtures_are_schema_1_documents():
    """What the old export wrote, as it wrote it: no schema_version and the old role names."""
    documents = {name: json.loads((V1_ARTIFACTS / name / "1" / METADATA_FILE).read_text()) for name in NAMES}
    assert all("schema_version" not in document for document in documents.values())
    assert documents["seq2seq"]["signatures"] == {"texts": "serving_default", "texts_beam_width": "translate"}
    assert documents["detector"]["signatures"]["images_default"] == "serving_default"
    assert not list(V1_ARTIFACTS.glob("*/1/model.keras"))


def test_the_store_loads_every_v1_artifact_with_migrated_roles():
    models = {name: store.load(V1_ARTIFACTS / name / "1") for name in NAMES}
    for name, model in models.items():
        assert (model.name, model.version, model.task) == (name, "1", Task(name))
        assert model.path == V1_ARTIFACTS / name / "1"
        assert model.metadata.signatures == MIGRATED_ROLES[name]
        assert model.metadata.schema_version == 1
        assert model.metadata == read_metadata(model.path)
        for role in model.metadata.signatures:
            assert callable(model.signature(role))
    assert models["seq2seq"].text_input.max_length == models["seq2seq"].metadata.input.max_length
    assert models["detector"].metadata.postprocessing.score_threshold == 0.6
    assert len(models["classifier"].metadata.labels) == 10


@pytest.fixture(scope="module")
def metadata() -> dict:
    return {name: read_metadata(V1_ARTIFACTS / name / "1") for name in NAMES}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """The real server on the v1 artifacts folder, as MODELSERVICE_MODEL_DIR=... python -m serving serves it."""
    log = tmp_path_factory.mktemp("v1-server") / "server.log"
    env = {"MODELSERVICE_MODEL_DIR": str(V1_ARTIFACTS), "MODELSERVICE_MODELS": ""}
    try:
        with running_server(env=env, log_path=log, timeout=240) as url:
            yield url
    except (RuntimeError, TimeoutError) as error:
        raise AssertionError(f"{error}:\n{log.read_text()[-4000:]}") from None


def tag(name: str) -> dict[str, str]:
    return {"name": name, "version": "1"}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.e2e  # the schema-1 server: a server of its own
def test_models_lists_the_migrated_metadata(server, metadata):
    response = httpx.get(server + "/models", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    listed = {model["name"]: model for model in response.json()["models"]}
    assert sorted(listed) == list(NAMES)
    for name, model in listed.items():
        assert model == metadata[name].to_dict()
        assert model["signatures"] == {str(role): signature for role, signature in MIGRATED_ROLES[name].items()}
        assert (model["task"], model["version"], model["schema_version"]) == (name, 1, 1)


@pytest.mark.e2e
def test_classify_json_pixels(server, metadata):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 8, 8)).tolist()
    response = httpx.post(server + "/classify", json={"instances": images}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == tag("classifier")
    assert len(body["predictions"]) == 3
    labels = list(metadata["classifier"].labels)
    for prediction in body["predictions"]:
        assert set(prediction) == {"label", "score", "top_k"}
        assert prediction["label"] in labels and 0.0 <= prediction["score"] <= 1.0
        assert len(prediction["top_k"]) == 5 and prediction["top_k"][0]["label"] == prediction["label"]


@pytest.mark.e2e
def test_classify_an_uploaded_png(server):
    image = png(np.full((8, 8), 200))
    response = httpx.post(server + "/classify", files={"image": ("digit.png", image, "image/png")}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == tag("classifier")
    assert len(response.json()["predictions"]) == 1


@pytest.mark.e2e
def test_translate_with_a_beam_width(server):
    response = httpx.post(server + "/translate", json={"texts": ["20.01.2023"], "beam_width": 2}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == tag("seq2seq")
    (prediction,) = body["predictions"]
    assert set(prediction) == {"text", "score", "beams"}
    assert isinstance(prediction["text"], str) and isinstance(prediction["score"], float)
    assert len(prediction["beams"]) == 2
    assert prediction["beams"][0]["text"] == prediction["text"]


@pytest.mark.e2e
def test_translate_checks_the_beam_width_against_the_metadata(server, metadata):
    highest = metadata["seq2seq"].decoding.max_beam_width
    response = httpx.post(
        server + "/translate", json={"texts": ["20.01.2023"], "beam_width": highest + 1}, timeout=TIMEOUT
    )
    assert response.status_code == 400, response.text
    assert f"from 1 to {highest}" in response.json()["expected"]


@pytest.mark.e2e
def test_translate_asked_for_attention_says_this_version_has_none(server):
    body = {"texts": ["20.01.2023"], "attention": True}
    response = httpx.post(server + "/translate", json=body, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "version 1 of 'seq2seq' does not expose attention"
    assert "re-export" in error["expected"]


@pytest.mark.e2e
def test_detect_json_pixels(server, metadata):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 48, 80, 1)).tolist()  # not the model's own size: letterboxed
    response = httpx.post(server + "/detect", json={"instances": images, "score_threshold": 0.0}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == tag("detector")
    assert len(body["predictions"]) == 2
    labels = list(metadata["detector"].labels)
    for prediction in body["predictions"]:
        assert set(prediction) == {"detections"}
        assert len(prediction["detections"]) <= metadata["detector"].postprocessing.max_detections
        for detection in prediction["detections"]:
            assert set(detection) == {"box", "label", "class_id", "score"}
            assert len(detection["box"]) == 4 and detection["label"] in labels


@pytest.mark.e2e
def test_detect_an_uploaded_png(server):
    image = png(np.zeros((40, 40), np.uint8))
    response = httpx.post(server + "/detect", files={"image": ("scene.png", image, "image/png")}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == tag("detector")
    assert set(response.json()["predictions"][0]) == {"detections"}


@pytest.mark.e2e
def test_tfserving_predict_on_the_default_signature(server):
    response = httpx.post(server + "/v1/models/seq2seq:predict", json={"instances": ["20.01.2023"]}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert set(row) == SEQ2SEQ_OUTPUTS
    assert isinstance(row["texts"], str)
    status = httpx.get(server + "/v1/models/seq2seq", timeout=TIMEOUT).json()
    assert status["model_version_status"][0]["version"] == "1"


@pytest.mark.e2e
def test_tfserving_predict_with_image_bytes(server):
    body = {
        "signature_name": "classify_image_bytes",
        "instances": [{"b64": base64.b64encode(png(np.zeros((8, 8), np.uint8))).decode()}],
    }
    response = httpx.post(server + "/v1/models/classifier/versions/1:predict", json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    (row,) = response.json()["predictions"]
    assert len(row["probabilities"]) == 10
