"""The container image, built from the top-level Dockerfile and run for real (`make test-container`).

The session's small trained models (a classifier, a date normaliser, a detector: seconds of training)
are baked into the image through a build context holding the project's sources and an artifacts/
folder, as `make train && docker build .` would. Then: the started container says what it serves,
answers /readyz, classifies a digit, normalises a date and detects digits in a scene exactly as the
same SavedModels do when loaded here, runs as a non-root user, passes its HEALTHCHECK, serves mounted
models selected by environment, refuses to start (exit status 2, with the reason) without a sound
model, and stops within 10 s of `stop`. The image size is printed.

Needs a container engine: podman (`. ../shared/container/env.sh` sets it up here), or docker with a
running daemon; CONTAINER_ENGINE picks one. BASE_IMAGE, when set, replaces python:3.11-slim (no registry
is reachable here: ../shared/container/build-base-image.sh prints a local stand-in). Without an engine
every test here is skipped, and says why.
"""

import io
import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from serving.answers import classifier_predictions, detector_predictions
from serving.contract import Role, read_metadata
from serving.process import PROJECT_ROOT, free_port
from tests.clients import closed_loop

pytestmark = [pytest.mark.container, pytest.mark.slow]

SOURCES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "models", "pipelines", "serving")
STOP_SECONDS = 10
READY_SECONDS = 180
TIMEOUT = 30.0


def find_engine() -> str | None:
    """podman, or docker with a reachable daemon (the docker client alone cannot build); CONTAINER_ENGINE first."""
    for engine in filter(None, (os.environ.get("CONTAINER_ENGINE"), "podman", "docker")):
        if shutil.which(engine) and subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode == 0:
            return engine
    return None


ENGINE = find_engine()
if ENGINE is None:
    pytestmark.append(
        pytest.mark.skip(
            reason=(
                "no container engine: neither podman nor a running Docker daemon was found, "
                "so the image was not built or run"
            )
        )
    )


def engine(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    finished = subprocess.run([ENGINE, *args], capture_output=True, text=True, timeout=timeout)
    if check and finished.returncode != 0:
        raise AssertionError(
            f"{ENGINE} {' '.join(args)} failed ({finished.returncode}):\n{finished.stdout}\n{finished.stderr}"
        )
    return finished


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, trained_classifier, trained_seq2seq, trained_detector) -> Path:
    """artifacts/<name>/<version>/ for the three session models, readable by the image's non-root user."""
    root = tmp_path_factory.mktemp("container") / "artifacts"
    for artifact in (trained_classifier[2], trained_seq2seq[3], trained_detector[3]):
        shutil.copytree(artifact, root / artifact.parent.name / artifact.name)
    make_readable(root)
    return root


def make_readable(root: Path) -> None:
    """tmp_path folders are private (0700); the container's user is not their owner."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


@pytest.fixture(scope="module")
def image(artifacts, tmp_path_factory, request) -> Iterator[str]:
    context = tmp_path_factory.mktemp("context")
    for name in SOURCES:
        source = PROJECT_ROOT / name
        (
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__"))
            if source.is_dir()
            else shutil.copy(source, context / name)
        )
    shutil.copytree(artifacts, context / "artifacts")
    (
        context / "artifacts" / "classifier" / ".staging-interrupted"
    ).mkdir()  # an export cut short: .dockerignore leaves it out
    tag = f"localhost/modelservice-test:{uuid.uuid4().hex[:8]}"
    build = [ENGINE, "build", "--network", "host", "-t", tag]
    if ENGINE == "podman":
        build += ["--format", "docker"]  # keeps HEALTHCHECK and STOPSIGNAL, which the OCI format drops
    if os.environ.get("BASE_IMAGE"):
        build += ["--build-arg", f"BASE_IMAGE={os.environ['BASE_IMAGE']}"]
    started = time.monotonic()
    finished = subprocess.run([*build, str(context)], capture_output=True, text=True, timeout=1800)
    assert finished.returncode == 0, f"image build failed:\n{finished.stdout[-4000:]}\n{finished.stderr[-4000:]}"
    size = int(engine("image", "inspect", tag, "--format", "{{.Size}}").stdout.strip())
    with request.config.pluginmanager.getplugin(
        "capturemanager"
    ).global_and_fixture_disabled():  # past the capture: CI logs show it
        print(
            f"\n[container] built {tag} with {ENGINE} in {time.monotonic() - started:.0f} s; "
            f"image size {size / 1e6:.0f} MB",
            flush=True,
        )
    yield tag
    engine("rmi", "-f", tag, check=False)


@dataclass
class Container:
    name: str
    url: str
    grpc_target: str  # host:port of TF Serving's gRPC API

    def logs(self) -> str:
        finished = engine("logs", self.name, check=False)
        return finished.stdout + finished.stderr


def start_container(image: str, *options: str) -> Container:
    """`run -d --init` on free host ports (HTTP, gRPC); returns once /readyz answers 200."""
    port, grpc_port = free_port(), free_port()
    name = f"modelservice-test-{uuid.uuid4().hex[:8]}"
    ports = ["-e", f"MODELSERVICE_PORT={port}", "-e", f"MODELSERVICE_GRPC_PORT={grpc_port}"]
    engine("run", "-d", "--init", "--network", "host", "--name", name, *ports, *options, image)
    container = Container(name, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        if engine("inspect", name, "--format", "{{.State.Running}}").stdout.strip() != "true":
            raise AssertionError(f"the container exited before it was ready:\n{container.logs()[-4000:]}")
        try:
            if httpx.get(container.url + "/readyz", timeout=2).status_code == 200:
                return container
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready within {READY_SECONDS} s:\n{container.logs()[-4000:]}")


@pytest.fixture(scope="module")
def served(image) -> Iterator[Container]:
    """The image with its baked-in models, as `docker run --init -p 3000:3000 modelservice` starts it."""
    container = start_container(image)
    yield container
    engine("rm", "-f", container.name, check=False)


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8).squeeze(-1)).save(buffer, format="PNG")
    return buffer.getvalue()


def local_outputs(artifact: Path, **inputs) -> dict[str, np.ndarray]:
    """What the artifact's image_bytes signature answers in this process, with plain TensorFlow."""
    graph = tf.saved_model.load(str(artifact))
    signature = graph.signatures[read_metadata(artifact).signature(Role.IMAGE_BYTES)]
    return {key: value.numpy() for key, value in signature(**inputs).items()}


# --- the image with baked-in models --------------------------------------------------------------


def test_the_container_says_which_models_it_serves(served, trained_classifier, trained_seq2seq, trained_detector):
    logs = served.logs()
    assert "modelservice: serving 3 model(s) from /models" in logs
    for artifact in (trained_classifier[2], trained_seq2seq[3], trained_detector[3]):
        assert (
            f"{artifact.parent.name}:{artifact.name}" in logs
            and f"/models/{artifact.parent.name}/{artifact.name}" in logs
        )
    listed = httpx.get(served.url + "/v1/models", timeout=TIMEOUT).json()["models"]
    assert sorted(model["name"] for model in listed) == ["classifier", "detector", "seq2seq"]


def test_only_what_serving_reads_is_baked_in(served, trained_classifier):
    version = trained_classifier[2]
    assert (version / "model.keras").is_file()  # the artifact has it, for transfer learning; serving never reads it
    files = engine("exec", served.name, "find", "/models/classifier", "-mindepth", "1").stdout.split()
    assert f"/models/classifier/{version.name}/saved_model.pb" in files
    assert f"/models/classifier/{version.name}/metadata.json" in files
    assert not [path for path in files if path.endswith("model.keras") or ".staging-" in path], files


def test_classifies_a_digit_as_the_savedmodel_does(served, trained_classifier, digits):
    artifact = trained_classifier[2]
    image = png(digits.test.images[0])
    response = httpx.post(served.url + "/classify", files={"image": ("digit.png", image, "image/png")}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    (expected,) = classifier_predictions(local_outputs(artifact, image_bytes=tf.constant([image])))
    (prediction,) = response.json()["predictions"]
    assert prediction["label"] == expected["label"]
    assert prediction["score"] == pytest.approx(expected["score"], abs=1e-5)
    assert response.json()["model"] == {"name": "classifier", "version": artifact.name}


def test_normalises_a_date(served, date_answers):
    response = httpx.post(served.url + "/translate", json={"texts": ["20.01.2023", "March 4, 1999"]}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    expected = date_answers("20.01.2023", "March 4, 1999")
    assert [prediction["text"] for prediction in response.json()["predictions"]] == expected


def assert_grpc_translates(container: Container, date_answers) -> None:
    """Health says SERVING and Predict normalises two dates, through TF Serving's gRPC API."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "seq2seq", "translate"
    request.inputs["texts"].CopyFrom(tf.make_tensor_proto(["20.01.2023", "March 4, 1999"]))
    request.inputs["beam_width"].CopyFrom(tf.make_tensor_proto(3))
    with grpc.insecure_channel(container.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=TIMEOUT)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    texts = [text.decode() for text in tf.make_ndarray(answer.outputs["texts"])]
    is_date = tf.make_ndarray(answer.outputs["is_date"])
    assert [text if date else None for text, date in zip(texts, is_date)] == date_answers("20.01.2023", "March 4, 1999")


def test_answers_tf_servings_grpc_api(served, date_answers):
    assert_grpc_translates(served, date_answers)


def test_detects_digits_in_a_scene_as_the_savedmodel_does(served, trained_detector, scenes):
    artifact = trained_detector[3]
    image = png(scenes.test[0].image)
    thresholds = {
        "score_threshold": 0.01,
        "iou_threshold": 0.5,
    }  # low enough that a briefly trained detector finds boxes
    response = httpx.post(
        served.url + "/detect",
        files={"image": ("scene.png", image, "image/png")},
        data={k: str(v) for k, v in thresholds.items()},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    (detections,) = [prediction["detections"] for prediction in response.json()["predictions"]]
    local = local_outputs(
        artifact, image_bytes=tf.constant([image]), **{k: tf.constant(v, tf.float32) for k, v in thresholds.items()}
    )
    (expected,) = [prediction["detections"] for prediction in detector_predictions(local)]
    assert len(detections) == len(expected) > 0
    for served_box, local_box in zip(detections, expected):
        assert served_box["label"] == local_box["label"]
        assert served_box["box"] == pytest.approx(local_box["box"], abs=1e-3)
        assert served_box["score"] == pytest.approx(local_box["score"], abs=1e-5)


def test_bad_input_gets_a_4xx_and_the_container_keeps_serving(served):
    response = httpx.post(
        served.url + "/classify", content=b"not json", headers={"content-type": "application/json"}, timeout=TIMEOUT
    )
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]
    assert httpx.post(served.url + "/translate", json={"texts": ["20.01.2023"]}, timeout=TIMEOUT).status_code == 200


def test_serves_the_page_and_swagger_ui_with_every_file_they_load(served):
    """The page's and Swagger UI's files are package data: the image has them, and nothing comes from outside."""
    for path in ("/", "/docs"):
        html = httpx.get(served.url + path, timeout=TIMEOUT)
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html"), path
        loaded = [url for url in re.findall(r'(?:src|href)="([^"#]+)"', html.text) if not url.startswith("data:")]
        assert any(url.endswith(".js") for url in loaded) and any(url.endswith(".css") for url in loaded), loaded
        assert not [url for url in loaded if "//" in url], f"{path} loads from outside: {loaded}"
        for url in loaded:
            response = httpx.get(f"{served.url}/{url.lstrip('/')}", timeout=TIMEOUT)
            assert response.status_code == 200 and response.content, f"{path} → {url}: {response.status_code}"
    assert "googletagmanager" not in httpx.get(served.url + "/", timeout=TIMEOUT).text  # not BentoML's page


def test_the_server_runs_on_jemalloc_with_tensorflows_tensors_from_malloc(served):
    """The image's memory set-up (serving/memory.py): memory taken by a spike of large images goes back."""
    check = (
        "import glob, os; from pathlib import Path; "
        "maps = [Path(p).read_text() for p in glob.glob('/proc/[0-9]*/maps') if os.access(p, os.R_OK)]; "
        "environs = [Path(p).read_bytes() for p in glob.glob('/proc/[0-9]*/environ') if os.access(p, os.R_OK)]; "
        "print(sum('libjemalloc' in text for text in maps), "
        "sum(b'TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1' in text for text in environs))"
    )
    jemalloc, system_allocator = engine("exec", served.name, "python", "-c", check).stdout.split()
    assert int(jemalloc) >= 2 and int(system_allocator) >= 2  # BentoML's parent and the worker at least


def test_every_process_runs_as_a_non_root_user(served):
    uids = engine("exec", served.name, "sh", "-c", "grep -h '^Uid:' /proc/[0-9]*/status").stdout.split("\n")
    real_uids = {line.split()[1] for line in uids if line.strip()}
    assert real_uids and "0" not in real_uids, uids
    assert engine("exec", served.name, "id", "-un").stdout.strip() == "modelservice"


def test_the_healthcheck_passes_once_ready(served):
    configured = engine(
        "image",
        "inspect",
        engine("inspect", served.name, "--format", "{{.Image}}").stdout.strip(),
        "--format",
        "{{json .Config.Healthcheck}}",
    ).stdout
    assert "/readyz" in configured
    if ENGINE == "podman":  # docker runs it on its own schedule
        assert engine("healthcheck", "run", served.name, check=False).returncode == 0


# --- mounted models, selection, refusals ---------------------------------------------------------


def read_only_root() -> list[str]:
    """A read-only root file system with writable /tmp and BentoML home only, as deploy/kubernetes.yaml runs it."""
    options = ["--read-only", "--tmpfs", "/tmp", "--tmpfs", "/home/modelservice/bentoml"]
    return options + (
        ["--read-only-tmpfs=false"] if ENGINE == "podman" else []
    )  # podman would add more writable places


def test_mounted_models_selected_by_environment_on_a_read_only_root(image, artifacts, date_answers):
    container = start_container(
        image, *read_only_root(), "-v", f"{artifacts}:/models:ro", "-e", "MODELSERVICE_MODELS=seq2seq"
    )
    try:
        listed = httpx.get(container.url + "/v1/models", timeout=TIMEOUT).json()["models"]
        assert [model["name"] for model in listed] == ["seq2seq"]
        assert httpx.post(container.url + "/classify", json={"instances": [[[0]]]}, timeout=TIMEOUT).status_code == 404
        answer = httpx.post(container.url + "/translate", json={"texts": ["20.01.2023"]}, timeout=TIMEOUT)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["text"] == date_answers("20.01.2023")[0]
    finally:
        engine("rm", "-f", container.name, check=False)


def test_answers_grpc_with_the_zttp_server_on_a_read_only_root(image, artifacts, date_answers):
    container = start_container(
        image, *read_only_root(), "-v", f"{artifacts}:/models:ro", "-e", "MODELSERVICE_GRPC_SERVER=zttp"
    )
    try:
        assert_grpc_translates(container, date_answers)
        assert "TF Serving's gRPC API on 0.0.0.0:" in container.logs() and "(zttp)" in container.logs()
    finally:
        engine("rm", "-f", container.name, check=False)


def run_to_exit(image: str, *options: str) -> subprocess.CompletedProcess:
    return engine("run", "--rm", "--init", "--network", "host", *options, image, check=False, timeout=180)


def test_refuses_to_start_without_a_model(image, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    make_readable(empty)
    finished = run_to_exit(image, "-v", f"{empty}:/models:ro")
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "modelservice: cannot start: no model found in /models" in finished.stderr


def test_refuses_to_start_with_a_corrupt_model(image, artifacts, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(artifacts, damaged)
    (saved_model,) = (damaged / "classifier").glob("*/saved_model.pb")
    saved_model.write_bytes(saved_model.read_bytes()[:100])
    make_readable(damaged)
    finished = run_to_exit(image, "-v", f"{damaged}:/models:ro")
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert (
        f"cannot start: corrupt model at /models/classifier/{saved_model.parent.name}: the SavedModel does not load"
        in finished.stderr
    )


def test_refuses_to_start_with_unreadable_models_and_says_how_to_fix_it(image, artifacts, tmp_path):
    private = tmp_path / "private"
    shutil.copytree(artifacts, private)
    make_readable(private)
    (private / "seq2seq").chmod(0o700)
    finished = run_to_exit(image, "-v", f"{private}:/models:ro")
    assert finished.returncode == 2, finished.stdout + finished.stderr
    assert "permission denied to user id 10001" in finished.stderr and "chmod -R a+rX" in finished.stderr


@pytest.mark.parametrize(
    "command, expected",
    [
        (("modelservice", "serve", "--help"), "MODELSERVICE_MODEL_DIR"),
        (("python", "-m", "serving", "--help"), "--model-dir"),
        (("modelservice", "train", "--help"), "transfer"),
    ],
    ids=" ".join,
)
def test_help_works_in_the_image_without_the_train_extra(image, command, expected):
    finished = engine("run", "--rm", "--entrypoint", command[0], image, *command[1:], check=False, timeout=180)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert expected in finished.stdout


def test_the_image_holds_no_training_dependencies(image):
    training_only = ("tensorflow_datasets", "matplotlib", "sklearn", "babel")
    probe = f"import importlib.util as u; print([m for m in {training_only!r} if u.find_spec(m)])"
    finished = engine("run", "--rm", "--entrypoint", "python", image, "-c", probe, check=False, timeout=180)
    assert finished.returncode == 0 and finished.stdout.strip() == "[]", finished.stdout + finished.stderr


def test_refuses_an_invalid_setting(image):
    finished = run_to_exit(image, "-e", "MODELSERVICE_WORKERS=many")
    assert finished.returncode == 2
    assert "cannot start: MODELSERVICE_WORKERS='many': must be a whole number" in finished.stderr


# --- shutdown (last: it stops the shared container) ----------------------------------------------


def test_stops_under_load_within_10_seconds_and_every_request_answered(served, digits):
    """`stop` with 64 clients sending: they go on for 1.5 s (a load balancer noticing /readyz), every one of
    their requests is answered 200, and the container exits well before the engine would kill it."""
    body = {"instances": digits.test.images[:1].tolist()}
    before = closed_loop(served.url + "/classify", body, clients=64, seconds=1)
    started = time.monotonic()
    stopping = threading.Thread(target=engine, args=("stop", "-t", str(STOP_SECONDS), served.name), daemon=True)
    stopping.start()
    time.sleep(0.2)  # the engine has sent SIGTERM
    try:
        during = closed_loop(served.url + "/classify", body, clients=64, seconds=1.5)
    except httpx.HTTPError as error:
        failed_after = time.monotonic() - started
        stopping.join(timeout=60)
        raise AssertionError(
            f"{type(error).__name__} {failed_after:.2f} s after `stop`:\n{served.logs()[-4000:]}"
        ) from error
    stopping.join(timeout=60)
    elapsed = time.monotonic() - started
    exit_code = int(engine("inspect", served.name, "--format", "{{.State.ExitCode}}").stdout.strip())
    assert {status for status, _ in before} == {200}
    assert len(during) > 64 and {status for status, _ in during} == {200}
    assert {connection for _, connection in during} == {"close"}  # draining
    assert elapsed < STOP_SECONDS, f"took {elapsed:.1f} s: SIGTERM was not enough and the engine had to kill it"
    assert exit_code in (0, 143), f"exit code {exit_code}\n{served.logs()[-3000:]}"
