"""The artifact contract (`serving.contract`): metadata documents in and out, schema-1 migration, errors that
say what is wrong, and serving's independence from the training code."""

import copy
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from serving.contract import (
    METADATA_FILE,
    ArtifactError,
    ArtifactMetadata,
    Decoding,
    ImageInput,
    Postprocessing,
    Role,
    Task,
    TextSpec,
    latest_version,
    read_metadata,
    versions,
    write_metadata,
)
from serving.process import PROJECT_ROOT


def classifier() -> ArtifactMetadata:
    return ArtifactMetadata(
        task=Task.CLASSIFIER,
        input=ImageInput(image_shape=(8, 8, 1)),
        signatures={
            Role.DEFAULT: "serving_default",
            Role.IMAGES: "serving_default",
            Role.IMAGES_UINT8: "classify_uint8",
            Role.IMAGE_BYTES: "classify_image_bytes",
        },
        outputs=("probabilities", "class_ids", "labels", "scores", "top_k_labels", "top_k_scores"),
        metrics={"test_accuracy": 0.9},
        training={"epochs": 1, "training": {"learning_rate": 0.002}},
        dataset={"sizes": {"train": 10}},
        family="classifier",
        labels=tuple("0123456789"),
        name="classifier",
        version=3,
        created_at="2026-01-02T03:04:05+00:00",
        framework={"tensorflow": "2.21.0"},
    )


def seq2seq() -> ArtifactMetadata:
    return ArtifactMetadata(
        task=Task.SEQ2SEQ,
        input=TextSpec(max_length=64, description="dates"),
        signatures={Role.DEFAULT: "serving_default", Role.TEXTS: "translate"},
        outputs=("texts", "scores", "log_probabilities", "beam_texts", "beam_scores"),
        family="seq2seq",
        output=TextSpec(max_length=16, description="ISO 8601 dates"),
        decoding=Decoding(default_beam_width=3, max_beam_width=8, length_alpha=0.7),
        name="seq2seq",
        version=1,
    )


def detector() -> ArtifactMetadata:
    return ArtifactMetadata(
        task=Task.DETECTOR,
        input=ImageInput(image_shape=(128, 128, 1), dtypes=("float32",), any_size=True, resize="letterbox"),
        signatures={Role.DEFAULT: "serving_default", Role.IMAGES: "detect_images", Role.IMAGE_BYTES: "detect_bytes"},
        outputs=("boxes", "scores", "classes", "labels", "count"),
        family="detector",
        labels=tuple("0123456789"),
        postprocessing=Postprocessing(
            score_threshold=0.6, iou_threshold=0.5, max_detections=100, anchors=((10.5, 17.8), (18.7, 32.5))
        ),
        name="detector",
        version=2,
    )


def transfer() -> ArtifactMetadata:
    """A transfer-learned classifier: the classifier's contract, its own family and extra fields."""
    extra = {"backbone": {"name": "glyphs", "version": 2}, "comparison": {"scratch": 0.5, "transfer": 0.8}}
    return replace(classifier(), name="transfer", family="transfer", extra=extra)


EXAMPLES = {"classifier": classifier, "seq2seq": seq2seq, "detector": detector, "transfer": transfer}


# --- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES)
def test_to_dict_and_from_dict_round_trip(example):
    metadata = EXAMPLES[example]()
    metadata.validate()
    document = metadata.to_dict()
    assert json.loads(json.dumps(document)) == document  # plain JSON: no enums, tuples or dataclasses left
    assert type(document["task"]) is str and all(type(role) is str for role in document["signatures"])
    assert ArtifactMetadata.from_dict(json.loads(json.dumps(document))) == metadata
    assert document["schema_version"] == 2


@pytest.mark.parametrize("example", EXAMPLES)
def test_write_and_read_metadata_round_trip(example, tmp_path):
    metadata = EXAMPLES[example]()
    path = write_metadata(tmp_path, metadata)
    assert path == tmp_path / METADATA_FILE
    assert read_metadata(tmp_path) == metadata


def test_a_familys_extra_fields_stay_at_the_top_level_and_survive_the_round_trip():
    document = transfer().to_dict()
    assert document["backbone"] == {"name": "glyphs", "version": 2}
    assert document["comparison"] == {"scratch": 0.5, "transfer": 0.8}
    assert document["family"] == "transfer"
    assert "extra" not in document
    read = ArtifactMetadata.from_dict(document)
    assert read.extra == {"backbone": {"name": "glyphs", "version": 2}, "comparison": {"scratch": 0.5, "transfer": 0.8}}
    assert read.family == "transfer"
    assert read.to_dict() == document


def test_unknown_top_level_fields_are_kept_as_extra():
    document = {**classifier().to_dict(), "notes": ["hand-edited"]}
    read = ArtifactMetadata.from_dict(document)
    assert read.extra == {"notes": ["hand-edited"]}
    assert read.to_dict() == document


def test_typed_sections_and_signature_lookup():
    metadata = detector()
    read = ArtifactMetadata.from_dict(metadata.to_dict())
    assert read.postprocessing.anchors == ((10.5, 17.8), (18.7, 32.5))
    assert read.image_input.image_shape == (128, 128, 1)
    assert read.signature(Role.IMAGES) == "detect_images"
    assert read.role_of("detect_bytes") is Role.IMAGE_BYTES
    assert read.role_of("nope") is None
    with pytest.raises(TypeError, match="a seq2seq artifact has no image input"):
        _ = seq2seq().image_input


# --- schema 1 ------------------------------------------------------------------------------------

# Abridged from what commit 10a7937's export_model functions wrote (the full ones: tests/serving/fixtures).
SCHEMA_1 = {
    "classifier": {
        "task": "classifier",
        "name": "classifier",
        "version": 4,
        "labels": list("0123456789"),
        "input": {"image_shape": [8, 8, 1], "value_range": [0, 255], "dtypes": ["uint8", "float32"]},
        "signatures": {
            "images": "serving_default",
            "images_uint8": "classify_uint8",
            "image_bytes": "classify_image_bytes",
        },
        "outputs": ["probabilities", "labels"],
        "training": {"name": "classifier"},
    },
    "seq2seq": {
        "task": "seq2seq",
        "name": "seq2seq",
        "version": 1,
        "input": {"max_length": 64, "description": "dates"},
        "output": {"max_length": 16, "description": "ISO 8601 dates (YYYY-MM-DD)"},
        "decoding": {"default_beam_width": 3, "max_beam_width": 8, "length_alpha": 0.7},
        "signatures": {"texts": "serving_default", "texts_beam_width": "translate"},
        "outputs": ["texts", "scores"],
    },
    "detector": {
        "task": "detector",
        "name": "detector",
        "version": 2,
        "labels": list("0123456789"),
        "input": {"image_shape": [128, 128, 1], "any_size": True, "resize": "letterbox", "dtypes": ["float32"]},
        "signatures": {
            "images_default": "serving_default",
            "images": "detect_images",
            "image_bytes": "detect_image_bytes",
        },
        "postprocessing": {
            "score_threshold": 0.6,
            "iou_threshold": 0.5,
            "max_detections": 100,
            "box_format": "[x1, y1, x2, y2] pixels of the original image",
            "anchors": [[10.475, 17.775], [18.718, 32.462]],
        },
        "outputs": ["boxes", "count"],
    },
}
MIGRATED_ROLES = {
    "classifier": {
        Role.DEFAULT: "serving_default",
        Role.IMAGES: "serving_default",
        Role.IMAGES_UINT8: "classify_uint8",
        Role.IMAGE_BYTES: "classify_image_bytes",
    },
    # "texts" was the default signature, without a beam width; "texts_beam_width" took one.
    "seq2seq": {Role.DEFAULT: "serving_default", Role.TEXTS: "translate"},
    "detector": {Role.DEFAULT: "serving_default", Role.IMAGES: "detect_images", Role.IMAGE_BYTES: "detect_image_bytes"},
}


@pytest.mark.parametrize("task", SCHEMA_1)
def test_a_schema_1_document_is_read_with_todays_role_names(task):
    document = copy.deepcopy(SCHEMA_1[task])
    metadata = ArtifactMetadata.from_dict(document)
    assert document == SCHEMA_1[task]  # the caller's document is left as it was
    assert metadata.task == Task(task)
    assert metadata.signatures == MIGRATED_ROLES[task]
    assert metadata.schema_version == 1  # where it came from
    assert metadata.family == task


@pytest.mark.parametrize("task", SCHEMA_1)
def test_a_migrated_document_reads_the_same_when_written_out_again(task):
    metadata = ArtifactMetadata.from_dict(SCHEMA_1[task])
    assert ArtifactMetadata.from_dict(json.loads(json.dumps(metadata.to_dict()))) == metadata


def test_schema_1_sections_become_typed():
    seq = ArtifactMetadata.from_dict(SCHEMA_1["seq2seq"])
    assert seq.input == TextSpec(max_length=64, description="dates")
    assert seq.decoding == Decoding(default_beam_width=3, max_beam_width=8, length_alpha=0.7)
    found = ArtifactMetadata.from_dict(SCHEMA_1["detector"])
    assert found.postprocessing.score_threshold == 0.6
    assert found.postprocessing.anchors == ((10.475, 17.775), (18.718, 32.462))
    assert found.image_input.any_size and found.image_input.dtypes == ("float32",)


def test_a_schema_2_document_keeps_its_roles_as_they_are():
    document = {**detector().to_dict(), "signatures": {"default": "a", "images": "b", "image_bytes": "c"}}
    assert ArtifactMetadata.from_dict(document).signatures == {
        Role.DEFAULT: "a",
        Role.IMAGES: "b",
        Role.IMAGE_BYTES: "c",
    }


# --- errors --------------------------------------------------------------------------------------


def without(document: dict, *keys: str) -> dict:
    return {key: value for key, value in document.items() if key not in keys}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param([1, 2], "metadata.json is a list, not a JSON object", id="not-an-object"),
        pytest.param("classifier", "metadata.json is a str, not a JSON object", id="a-string"),
        pytest.param(without(SCHEMA_1["classifier"], "task"), "metadata.json lacks task", id="no-task"),
        pytest.param(
            without(SCHEMA_1["classifier"], "name", "signatures"), "metadata.json lacks name, signatures", id="two-keys"
        ),
        pytest.param(
            {**SCHEMA_1["classifier"], "task": "regressor"},
            "metadata.json: names an unknown task 'regressor' (known: classifier, seq2seq, detector)",
            id="unknown-task",
        ),
        pytest.param(
            {**detector().to_dict(), "signatures": {"default": "a", "images": "b", "image_bytes": "c", "video": "d"}},
            "metadata.json: names an unknown signature role 'video' (known: default, images, images_uint8, "
            "image_bytes, texts, attention)",
            id="unknown-role",
        ),
        pytest.param(
            {**seq2seq().to_dict(), "signatures": {"default": "serving_default", "texts_beam_width": "translate"}},
            "metadata.json: names an unknown signature role 'texts_beam_width'",
            id="schema-1-role-in-a-schema-2-document",
        ),
        pytest.param(
            without(SCHEMA_1["detector"], "postprocessing"),
            "metadata.json: a detector artifact lacks postprocessing",
            id="detector-without-postprocessing",
        ),
        pytest.param(
            without(SCHEMA_1["seq2seq"], "decoding", "output"),
            "metadata.json: a seq2seq artifact lacks output, decoding",
            id="seq2seq-without-decoding",
        ),
        pytest.param(
            without(SCHEMA_1["classifier"], "labels"),
            "metadata.json: a classifier artifact lacks labels",
            id="classifier-without-labels",
        ),
        pytest.param(
            {**detector().to_dict(), "signatures": {"default": "a", "images": "b"}},
            "metadata.json: a detector artifact lacks signature role image_bytes",
            id="missing-role",
        ),
        pytest.param(
            {**SCHEMA_1["detector"], "postprocessing": {"iou_threshold": 0.5}},
            "metadata.json: postprocessing lacks score_threshold, max_detections, anchors",
            id="incomplete-section",
        ),
        pytest.param(
            {**SCHEMA_1["seq2seq"], "input": [64]},
            "metadata.json: input is a list, not an object",
            id="section-not-an-object",
        ),
        pytest.param(
            {**SCHEMA_1["classifier"], "signatures": ["serving_default"]},
            "metadata.json: signatures is a list, not an object",
            id="signatures-not-an-object",
        ),
        pytest.param(
            {**SCHEMA_1["classifier"], "version": "latest"},
            "metadata.json is invalid: ValueError",
            id="version-not-a-number",
        ),
    ],
)
def test_a_malformed_document_is_an_artifact_error_that_says_what_is_wrong(document, message):
    with pytest.raises(ArtifactError) as caught:
        ArtifactMetadata.from_dict(document, where=METADATA_FILE)
    assert str(caught.value).startswith(message), str(caught.value)


def test_write_metadata_refuses_an_incomplete_artifact(tmp_path):
    incomplete = replace(detector(), postprocessing=None)
    with pytest.raises(ArtifactError, match="a detector artifact lacks postprocessing"):
        write_metadata(tmp_path, incomplete)
    assert not (tmp_path / METADATA_FILE).exists()


def test_signatures_the_savedmodel_lacks_are_named():
    metadata = classifier()
    metadata.check_signatures({"serving_default", "classify_uint8", "classify_image_bytes", "other"})
    with pytest.raises(ArtifactError) as caught:
        metadata.check_signatures({"serving_default"})
    assert str(caught.value) == (
        f"{METADATA_FILE} names signatures ['classify_image_bytes', 'classify_uint8'] that the SavedModel lacks "
        "(it has ['serving_default'])"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, f"{METADATA_FILE} is missing"),
        ("{'name': ", f"{METADATA_FILE} is not valid JSON"),
        (b"\xff\xfe{", f"{METADATA_FILE} is not valid JSON"),
        ("[]", f"{METADATA_FILE} is a list, not a JSON object"),
    ],
)
def test_read_metadata_says_what_is_wrong_with_the_file(tmp_path, content, message):
    if isinstance(content, bytes):
        (tmp_path / METADATA_FILE).write_bytes(content)
    elif content is not None:
        (tmp_path / METADATA_FILE).write_text(content)
    with pytest.raises(ArtifactError) as caught:
        read_metadata(tmp_path)
    assert str(caught.value).startswith(message)


def test_versions_are_the_complete_numbered_folders(tmp_path):
    for folder in ("1", "2", "10", ".staging-abc", "notes"):
        (tmp_path / "model" / folder).mkdir(parents=True)
    assert versions(tmp_path / "model") == [1, 2, 10]
    assert latest_version(tmp_path / "model") == tmp_path / "model" / "10"
    assert versions(tmp_path / "none") == [] and latest_version(tmp_path / "none") is None


# --- serving stands alone ------------------------------------------------------------------------

# sitecustomize.py, which Python imports at start-up: from then on any import of the training code fails.
BLOCK_TRAINING_CODE = """
import sys
from importlib.abc import MetaPathFinder


class BlockTrainingCode(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipelines", "models"):
            raise ImportError(f"serving imported the training code: {name}")
        return None


sys.meta_path.insert(0, BlockTrainingCode())
"""


def run_blocked(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python *arguments` in the project root, with the training code made unimportable."""
    blocker = tmp_path / "blocker"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(BLOCK_TRAINING_CODE)
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=PROJECT_ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(blocker), str(PROJECT_ROOT)]),
            # BentoML reads its home when first imported (serving.service): a private, empty one.
            "BENTOML_HOME": str(tmp_path / "bentoml"),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_block_works(tmp_path):
    finished = run_blocked(tmp_path, "-c", "import pipelines.export.artifact")
    assert finished.returncode != 0
    assert "ImportError: serving imported the training code: pipelines" in finished.stderr
    assert run_blocked(tmp_path, "-c", "import models").returncode != 0


@pytest.mark.slow  # imports TensorFlow and BentoML: seconds
@pytest.mark.e2e  # a process of its own
def test_serving_imports_nothing_from_the_training_code(tmp_path):
    code = textwrap.dedent(
        """
        import sys

        import serving.contract, serving.store, serving.runtime, serving.service, serving.start

        loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("pipelines", "models"))
        assert not loaded, loaded
        print("imported", serving.service.ModelService)
        """
    )
    finished = run_blocked(tmp_path, "-c", code)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert "imported" in finished.stdout


def test_python_m_serving_help_needs_no_training_code(tmp_path):
    finished = run_blocked(tmp_path, "-m", "serving", "--help")
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert "usage: python -m serving" in finished.stdout
    assert "MODELSERVICE_MODEL_DIR" in finished.stdout


def test_the_service_definition_loads_without_tensorflow(tmp_path):
    """BentoML's parent process imports serving.service only to read its configuration; the workers load TensorFlow."""
    code = textwrap.dedent(
        """
        import sys

        import serving.service

        assert "tensorflow" not in sys.modules, "serving.service imported TensorFlow"
        print("configured", serving.service.ModelService.name)
        """
    )
    finished = run_blocked(tmp_path, "-c", code)
    assert finished.returncode == 0, finished.stderr[-4000:]
    assert "configured modelservice" in finished.stdout
