"""The artifact contract: versioned atomic folders, metadata.json, signatures that run with bare TensorFlow."""

import io
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipelines.export import artifact as export
from serving.contract import ArtifactMetadata, ImageInput, Role, Task, latest_version, read_metadata, versions

BARE_LOAD = """
import json, sys
import numpy as np, tensorflow as tf
graph = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = graph.signatures["serving_default"](images=tf.constant(images, tf.float32))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("models", "pipelines", "serving"))
print(json.dumps({"probabilities": out["probabilities"].numpy().tolist(),
                  "labels": [l.decode() for l in out["labels"].numpy()], "leaked": leaked}))
"""


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.e2e
def test_bare_tensorflow_load_gives_the_keras_predictions(trained_classifier, digits, tmp_path):
    model, _, artifact = trained_classifier
    images = digits.test.images[:20]
    np.save(tmp_path / "images.npy", images)
    result = subprocess.run(
        [sys.executable, "-c", BARE_LOAD, str(artifact), str(tmp_path / "images.npy")],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    expected = model.predict(images.astype("float32"), verbose=0)
    assert answer["leaked"] == []
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-5)
    assert answer["labels"] == [digits.class_names[i] for i in expected.argmax(axis=1)]


@pytest.fixture(scope="module")
def graph(trained_classifier):
    return tf.saved_model.load(str(trained_classifier[2]))


def test_every_signature_agrees(graph, digits):
    images = digits.test.images[:8]
    floats = graph.signatures["serving_default"](images=tf.constant(images, tf.float32))
    uint8 = graph.signatures["classify_uint8"](images=tf.constant(images))
    encoded = graph.signatures["classify_image_bytes"](image_bytes=tf.constant([png_bytes(image) for image in images]))
    for other in (uint8, encoded):
        np.testing.assert_allclose(other["probabilities"].numpy(), floats["probabilities"].numpy(), atol=1e-5)
        assert other["labels"].numpy().tolist() == floats["labels"].numpy().tolist()


def test_outputs_have_the_documented_shapes(graph, digits):
    out = graph.signatures["serving_default"](images=tf.constant(digits.test.images[:3], tf.float32))
    assert out["probabilities"].shape == (3, 10)
    np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    assert out["top_k_labels"].shape == (3, 5) and out["top_k_scores"].shape == (3, 5)
    assert np.all(np.diff(out["top_k_scores"].numpy(), axis=1) <= 0)
    np.testing.assert_array_equal(out["class_ids"].numpy(), out["probabilities"].numpy().argmax(axis=1))


def test_images_of_other_sizes_and_channels_are_fitted_in_graph(graph, digits):
    image = digits.test.images[:1].astype("float32")
    big = tf.image.resize(image, (32, 32), method="nearest")
    rgb = tf.repeat(tf.constant(image), 3, axis=-1)
    reference = graph.signatures["serving_default"](images=tf.constant(image))["labels"].numpy()
    assert graph.signatures["serving_default"](images=rgb)["labels"].numpy().tolist() == reference.tolist()
    assert graph.signatures["serving_default"](images=big)["probabilities"].shape == (1, 10)


def test_metadata_records_the_contract(trained_classifier, digits):
    _, report, artifact = trained_classifier
    metadata = read_metadata(artifact)
    assert metadata.task == "classifier" and metadata.name == "classifier" and metadata.family == "classifier"
    assert metadata.version == int(artifact.name)
    assert list(metadata.labels) == [str(i) for i in range(10)]
    assert metadata.image_input.image_shape == (8, 8, 1)
    assert metadata.signatures == {
        "default": "serving_default",
        "images": "serving_default",
        "images_uint8": "classify_uint8",
        "image_bytes": "classify_image_bytes",
    }
    assert metadata.metrics["test_accuracy"] == pytest.approx(report["test_accuracy"])
    assert metadata.dataset["fingerprint"] == digits.fingerprint()
    assert metadata.training["training"]["epochs"] == 15
    assert metadata.created_at.endswith("+00:00") and metadata.schema_version == 2
    document = json.loads((artifact / "metadata.json").read_text())
    assert document["signatures"]["image_bytes"] == "classify_image_bytes" and document["task"] == "classifier"


class Saveable(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.float32)])
    def double(self, images):
        return {"y": 2 * images}

    def signatures(self):
        return {"serving_default": self.double}


METADATA = ArtifactMetadata(
    task=Task.CLASSIFIER,
    name="m",
    labels=("a", "b"),
    input=ImageInput(image_shape=(2, 2, 1)),
    signatures={Role.DEFAULT: "serving_default", Role.IMAGES: "serving_default", Role.IMAGE_BYTES: "serving_default"},
    outputs=("y",),
)


def test_versions_increase_and_the_latest_is_found(tmp_path):
    module = Saveable()
    first = export.export_artifact(module, root=tmp_path, metadata=METADATA)
    second = export.export_artifact(module, root=tmp_path, metadata=METADATA)
    assert (first.name, second.name) == ("1", "2")
    assert versions(tmp_path / "m") == [1, 2]
    assert latest_version(tmp_path / "m") == second
    assert read_metadata(second).version == 2


def test_a_published_version_is_readable_by_every_user(tmp_path):
    """The container serves artifacts as a non-root user: no private folder may hide a file from it."""
    module = Saveable()
    version = export.export_artifact(module, root=tmp_path, metadata=METADATA)
    for path in [version, *version.rglob("*")]:
        needed = 0o555 if path.is_dir() else 0o444
        assert stat.S_IMODE(path.stat().st_mode) & needed == needed, path


def test_a_crash_during_export_leaves_no_version_behind(tmp_path, monkeypatch):
    module = Saveable()
    export.export_artifact(module, root=tmp_path, metadata=METADATA)

    def crash(obj, path, signatures=None):
        (tf.io.gfile.GFile(f"{path}/saved_model.pb", "w")).write("half")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        export.export_artifact(module, root=tmp_path, metadata=METADATA)
    assert sorted(entry.name for entry in (tmp_path / "m").iterdir()) == ["1"]


KILLED_MID_EXPORT = """
import sys, time
import tensorflow as tf
from pipelines.export import artifact
from tests.export.test_artifact import METADATA, Saveable

def stalled(obj, path, signatures=None):
    tf.io.gfile.GFile(f"{path}/saved_model.pb", "w").write("half")
    print("writing", flush=True)
    time.sleep(600)

tf.saved_model.save = stalled
artifact.export_artifact(Saveable(), root=sys.argv[1], metadata=METADATA)
"""


@pytest.mark.e2e
def test_an_export_killed_outright_leaves_no_version_and_the_next_one_clears_its_staging(tmp_path):
    project = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_EXPORT, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=project
    )
    try:
        assert process.stdout.readline().strip() == "writing"
    finally:
        process.kill()  # SIGKILL: no finally block, no clean-up in the exporting process
        process.wait(timeout=30)
    (abandoned,) = (tmp_path / "m").glob(".staging-*")
    assert (abandoned / "saved_model.pb").read_text() == "half"
    assert versions(tmp_path / "m") == [] and latest_version(tmp_path / "m") is None  # nothing a server would load
    # A running export's folder (this process's) and another host's stay.
    running = tmp_path / "m" / f".staging-{socket.gethostname()}-{os.getpid()}-abc"
    elsewhere = tmp_path / "m" / ".staging-another-host-1-abc"
    for folder in (running, elsewhere):
        folder.mkdir()
    version = export.export_artifact(Saveable(), root=tmp_path, metadata=METADATA)
    assert version.name == "1" and read_metadata(version).version == 1
    assert sorted(entry.name for entry in (tmp_path / "m").iterdir()) == sorted(["1", running.name, elsewhere.name])


def mount_namespaces_work() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.skipif(
    not mount_namespaces_work(),
    reason="a size-limited folder needs a tmpfs mounted in a private mount namespace (`unshare --mount`, as root)",
)
@pytest.mark.parametrize("size", ["64k", "32m"])
def test_an_export_onto_a_full_disk_says_so_and_leaves_nothing_behind(trained_classifier, tmp_path, size):
    """`modelservice export` into a tmpfs of `size`: too small for the classifier's artifact (about 200 KB), it
    fails with a message that says what happened and how to finish, and the folder holds nothing; large enough,
    the same command exports version 1."""
    run_dir = trained_classifier[2].parents[2] / "run"
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    export_command = (
        f"{sys.executable} -m pipelines.cli export --run-dir {run_dir} --artifacts {artifacts} --no-validate "
        "--no-register"
    )
    # The tmpfs exists only in the command's mount namespace: list what the export left from inside it.
    script = (
        f"mount -t tmpfs -o size={size} modelservice-test {artifacts} && {export_command}; status=$?; "
        f"echo LEFT: $(ls -A {artifacts}/classifier 2>/dev/null); exit $status"
    )
    project = Path(__file__).resolve().parents[2]
    finished = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, cwd=project, timeout=300
    )
    left = finished.stdout.strip().splitlines()[-1].removeprefix("LEFT:").split()
    if size == "32m":
        assert finished.returncode == 0, finished.stderr[-2000:]
        assert left == ["1"]
        return
    from pipelines.family import EXPORT_FAILED_EXIT

    assert finished.returncode == EXPORT_FAILED_EXIT, finished.stderr[-2000:]
    message = finished.stderr.strip().splitlines()[-1]
    assert message.startswith(f"export failed: no space left on the disk of {artifacts}/classifier while exporting")
    assert "nothing was published and the partial files were removed" in message
    assert message.endswith(
        f"The trained model is kept in {run_dir}: free some space, then `modelservice export --run-dir {run_dir}`"
    )
    assert left == []  # no version, no staging folder


def test_registration_in_the_bentoml_store_is_idempotent(trained_classifier):
    import bentoml

    artifact = trained_classifier[2]
    tag = export.register_in_bentoml(artifact)
    assert tag == f"classifier:{artifact.name}"
    assert export.register_in_bentoml(artifact) == tag
    stored = bentoml.models.get(tag)
    assert stored.info.labels["task"] == "classifier"
    assert Path(stored.path_of("saved_model.pb")).is_file()
    assert json.loads(Path(stored.path_of("metadata.json")).read_text())["version"] == int(artifact.name)


# --- warm-up requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["trained_classifier", "trained_seq2seq", "trained_detector"])
def test_every_signature_gets_real_warm_up_requests_that_run_with_bare_tensorflow(request, fixture):
    from serving.warmup import WARMUP_FILE, read_warmup

    artifact = request.getfixturevalue(fixture)[-1]
    assert (artifact / WARMUP_FILE).is_file()
    warmups = read_warmup(artifact)
    graph = tf.saved_model.load(str(artifact))
    assert sorted({warmup.signature_name for warmup in warmups}) == sorted(graph.signatures)
    sizes = {}
    for warmup in warmups:
        batched = {name: value for name, value in warmup.inputs.items() if value.ndim}
        (size,) = {len(value) for value in batched.values()}
        sizes.setdefault(warmup.signature_name, []).append(size)
        outputs = graph.signatures[warmup.signature_name](
            **{name: tf.constant(value) for name, value in warmup.inputs.items()}
        )
        assert all(len(value) == size for value in outputs.values() if value.shape.rank)
    assert all(found == [1, 4] for found in sizes.values()), sizes  # one alone, then a batch


def test_scalar_inputs_of_warm_up_requests_take_the_served_defaults(trained_seq2seq, trained_detector):
    from serving.warmup import read_warmup

    beam = {w.signature_name: w.inputs.get("beam_width") for w in read_warmup(trained_seq2seq[-1])}
    default_beam = read_metadata(trained_seq2seq[-1]).decoding.default_beam_width
    assert beam["translate"] == default_beam
    detect = next(w for w in read_warmup(trained_detector[-1]) if w.signature_name == "detect_images")
    postprocessing = read_metadata(trained_detector[-1]).postprocessing
    assert float(detect.inputs["score_threshold"]) == pytest.approx(postprocessing.score_threshold)
    assert float(detect.inputs["iou_threshold"]) == pytest.approx(postprocessing.iou_threshold)
