"""Starting the server: settings from the environment, models from a folder or the store, and refusing
to start, with a reason and exit status 2, when there is nothing sound to serve."""

import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serving import memory, start, store
from serving.contract import METADATA_FILE, Role
from serving.model_config import ModelSpec, VersionPolicy, parse_models_setting
from serving.model_manager import ModelManager
from serving.process import PROJECT_ROOT, free_port, running_process, server_worker
from serving.settings import Settings, SettingsError
from tests.clients import closed_loop, no_collector_pauses

# --- settings ------------------------------------------------------------------------------------


def test_settings_default_without_environment():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert (settings.model_dir, settings.host, settings.port, settings.workers) == (None, "127.0.0.1", 3000, 1)
    assert (settings.batching, settings.max_batch, settings.max_request_bytes, settings.max_instances) == (
        True,
        256,
        8 * 2**20,
        64,
    )


def test_settings_read_every_variable_and_round_trip():
    environ = {
        "MODELSERVICE_MODEL_DIR": "/models",
        "MODELSERVICE_MODELS": "classifier,seq2seq:2",
        "MODELSERVICE_MODEL_CONFIG_FILE": "/etc/models.config",
        "MODELSERVICE_REQUIRE_MODELS": "0",
        "MODELSERVICE_POLL_SECONDS": "0.5",
        "MODELSERVICE_MAX_LOAD_RETRIES": "0",
        "MODELSERVICE_SERVE_UNBLESSED": "1",
        "MODELSERVICE_HOST": "0.0.0.0",
        "MODELSERVICE_PORT": "8080",
        "MODELSERVICE_WORKERS": "2",
        "MODELSERVICE_BATCHING": "off",
        "MODELSERVICE_MAX_BATCH": "32",
        "MODELSERVICE_MAX_REQUEST_BYTES": "1024",
        "MODELSERVICE_MAX_INSTANCES": "4",
        "MODELSERVICE_MAX_DECODED_IMAGE_MB": "8",
        "MODELSERVICE_MAX_DECODED_REQUEST_MB": "16",
        "MODELSERVICE_TIMEOUT": "5",
        "MODELSERVICE_MAX_CONCURRENCY": "10",
        "MODELSERVICE_MIN_CONCURRENCY": "4",
        "MODELSERVICE_LATENCY_TARGET_MS": "25.5",
        "MODELSERVICE_DRAIN_SECONDS": "2.5",
        "MODELSERVICE_ADMIN_TOKEN": "s3cret",
        "MODELSERVICE_ALLOCATOR": "system",
        "MODELSERVICE_LOG_LEVEL": "debug",
        "MODELSERVICE_ACCESS_LOG": "yes",
        "MODELSERVICE_GRPC_PORT": "0",
        "MODELSERVICE_GRPC_MAX_MESSAGE_MB": "128",
        "MODELSERVICE_GRPC_SERVER": "ZTTP",
    }
    settings = Settings.from_env(environ)
    assert settings == Settings(
        model_dir=Path("/models"),
        models="classifier,seq2seq:2",
        model_config_file=Path("/etc/models.config"),
        require_models=False,
        poll_seconds=0.5,
        max_load_retries=0,
        serve_unblessed=True,
        host="0.0.0.0",
        port=8080,
        grpc_port=0,
        grpc_max_message_mb=128,
        grpc_server="zttp",
        workers=2,
        batching=False,
        max_batch=32,
        max_request_bytes=1024,
        max_instances=4,
        max_decoded_image_mb=8,
        max_decoded_request_mb=16,
        timeout=5,
        max_concurrency=10,
        min_concurrency=4,
        latency_target_ms=25.5,
        drain_seconds=2.5,
        admin_token="s3cret",
        allocator="system",
        log_level="DEBUG",
        access_log=True,
    )
    assert Settings.from_env(settings.env()) == settings
    assert set(settings.env()) == set(environ)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("MODELSERVICE_PORT", "http", "must be a whole number"),
        ("MODELSERVICE_PORT", "70000", "must be from 1 to 65535"),
        ("MODELSERVICE_GRPC_PORT", "-1", "must be from 1 to 65535, or 0 for off"),
        ("MODELSERVICE_GRPC_MAX_MESSAGE_MB", "0", "must be at least 1"),
        ("MODELSERVICE_GRPC_SERVER", "grpclib", "must be one of grpcio, zttp"),
        ("MODELSERVICE_WORKERS", "0", "must be at least 1"),
        ("MODELSERVICE_MAX_INSTANCES", "-3", "must be at least 1"),
        ("MODELSERVICE_MAX_DECODED_REQUEST_MB", "0", "must be at least 1"),
        ("MODELSERVICE_BATCHING", "maybe", "must be 1/true/yes/on or 0/false/no/off"),
        ("MODELSERVICE_LOG_LEVEL", "loud", "must be one of DEBUG, INFO, WARNING, ERROR"),
        ("MODELSERVICE_POLL_SECONDS", "soon", "must be a number of seconds"),
        ("MODELSERVICE_POLL_SECONDS", "-1", "must be a number of seconds, 0 or more"),
        ("MODELSERVICE_MAX_LOAD_RETRIES", "-1", "must be 0 or more"),
        ("MODELSERVICE_LATENCY_TARGET_MS", "fast", "must be a number of milliseconds"),
        ("MODELSERVICE_LATENCY_TARGET_MS", "-5", "must be a number of milliseconds, 0 or more"),
    ],
)
def test_a_bad_setting_names_the_variable_and_what_it_must_be(name, value, reason):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({name: value})
    assert str(caught.value) == f"{name}={value!r}: {reason}"


def test_help_lists_every_variable_with_its_default():
    described = Settings.describe()
    for name, default in Settings().env().items():
        line = next(line for line in described.splitlines() if line.split()[0] == name)
        assert (default or "(unset)") in line.split()[1]


@pytest.mark.parametrize(
    ("allocator", "installed", "environ", "added"),
    [
        ("jemalloc", True, {}, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "LD_PRELOAD", "MALLOC_CONF"}),
        ("jemalloc", False, {}, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}),  # not installed: the C library's malloc
        ("system", True, {}, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}),
        # What the environment already says stays: another preloaded library, TensorFlow's pool chosen.
        ("jemalloc", True, {"LD_PRELOAD": "/opt/libother.so"}, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}),
        ("jemalloc", True, {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"}, {"LD_PRELOAD", "MALLOC_CONF"}),
    ],
)
def test_the_server_starts_on_jemalloc_when_installed(monkeypatch, tmp_path, allocator, installed, environ, added):
    if installed:
        (tmp_path / memory.JEMALLOC).touch()
    monkeypatch.setattr(memory, "LIBRARY_DIRS", (str(tmp_path),))
    env = memory.allocator_env(allocator, environ)
    assert set(env) == added
    if "LD_PRELOAD" in env:
        assert env["LD_PRELOAD"] == str(tmp_path / memory.JEMALLOC)
        assert "background_thread:true" in env["MALLOC_CONF"]


def test_an_unknown_allocator_is_refused():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"MODELSERVICE_ALLOCATOR": "mimalloc"})
    assert str(caught.value) == "MODELSERVICE_ALLOCATOR='mimalloc': must be one of jemalloc, system"


# --- finding models in a folder ------------------------------------------------------------------


def make_layout(root: Path, folders: list[str]) -> Path:
    for folder in folders:
        (root / folder).mkdir(parents=True)
    return root


def test_a_folder_lists_each_models_complete_versions(tmp_path):
    root = make_layout(
        tmp_path, ["classifier/1", "classifier/2", "classifier/10", "classifier/.staging-x1", "seq2seq/1", "notes"]
    )
    source = store.FolderSource(root)
    assert source.names() == ["classifier", "seq2seq"]
    assert source.versions(ModelSpec("classifier")) == {number: root / f"classifier/{number}" for number in (1, 2, 10)}
    assert VersionPolicy().select(source.versions(ModelSpec("classifier"))) == [10]


@pytest.mark.parametrize(
    ("folders", "spec", "message"),
    [
        (None, "", "model folder {root} does not exist: mount one"),
        ([], "", "no model found in {root}: expected <name>/<version>/ folders"),
        (["classifier/.staging-x1", "empty"], "", "no model found in {root}"),
        (["classifier/1"], "detector", "no model named 'detector' in {root}: found ['classifier']"),
        (["classifier/1", "classifier/2"], "classifier:7", "{root}/classifier has no version 7: found versions 1, 2"),
    ],
)
def test_a_folder_without_the_models_asked_for_says_what_it_holds(tmp_path, folders, spec, message):
    root = tmp_path / "models"
    if folders is not None:
        root.mkdir()
        make_layout(root, folders)
    source = store.FolderSource(root)
    try:
        source.check()
        manager = ModelManager(parse_models_setting(spec), source)
        manager.poll()
        problem = manager.start_problem()
    except store.ModelLoadError as error:
        problem = str(error)
    assert message.format(root=root) in problem


# --- checking a model before serving it -----------------------------------------------------------


@pytest.fixture
def model_dir(tmp_path, trained_classifier) -> Path:
    """A copy of the trained classifier's artifact as models/classifier/<version>, free to damage."""
    _, _, artifact = trained_classifier
    root = tmp_path / "models"
    shutil.copytree(artifact, root / "classifier" / artifact.name)
    return root


def only_version(model_dir: Path) -> Path:
    (version,) = (model_dir / "classifier").iterdir()
    return version


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rewrite_metadata(path: Path, change) -> None:
    metadata = json.loads((path / METADATA_FILE).read_text())
    change(metadata)
    (path / METADATA_FILE).write_text(json.dumps(metadata))


DAMAGES = {
    "metadata-missing": (lambda version: (version / METADATA_FILE).unlink(), f"{METADATA_FILE} is missing"),
    "metadata-not-json": (
        lambda version: (version / METADATA_FILE).write_text("{'name': "),
        f"{METADATA_FILE} is not valid JSON",
    ),
    "metadata-incomplete": (
        lambda version: rewrite_metadata(version, lambda metadata: metadata.pop("task")),
        f"{METADATA_FILE} lacks task",
    ),
    "saved-model-truncated": (lambda version: truncate(version / "saved_model.pb"), "the SavedModel does not load"),
    "variables-truncated": (
        lambda version: truncate(version / "variables" / "variables.data-00000-of-00001"),
        "the SavedModel does not load",
    ),
    "signature-renamed": (
        lambda version: rewrite_metadata(
            version, lambda metadata: metadata["signatures"].update(images="no_such_signature")
        ),
        "names signatures ['no_such_signature'] that the SavedModel lacks",
    ),
}


def served_from(model_dir: Path) -> ModelManager:
    manager = ModelManager([], store.FolderSource(model_dir))
    manager.poll()
    return manager


def test_a_sound_model_loads_from_a_folder(model_dir):
    manager = served_from(model_dir)
    assert manager.start_problem() is None
    model = manager.served.runtime("classifier").model
    assert (model.name, model.task, model.path) == ("classifier", "classifier", only_version(model_dir))
    assert {"serving_default", "classify_uint8", "classify_image_bytes"} <= set(model.signatures)
    outputs = model.signature(Role.IMAGES)(images=np.zeros((1, 8, 8, 1), np.float32))
    assert outputs["probabilities"].shape == (1, 10)


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_model_is_named_with_what_is_wrong(model_dir, damage):
    apply, reason = DAMAGES[damage]
    version = only_version(model_dir)
    apply(version)
    problem = served_from(model_dir).start_problem()
    assert f"corrupt model at {version}: " in problem
    assert reason in problem


# --- python -m serving ---------------------------------------------------------------------------


def serving_command(*options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving", *options],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("empty-folder", "no model found in"),
        ("corrupt-model", "the SavedModel does not load"),
        ("bad-setting", "MODELSERVICE_MAX_BATCH='lots': must be a whole number"),
        ("port-taken", "the port 127.0.0.1:{port} is in use (Address already in use): set MODELSERVICE_PORT"),
        ("grpc-port-taken", "the gRPC port 127.0.0.1:{port} is in use (Address already in use): set MODELSERVICE_GRPC"),
    ],
)
def test_the_server_refuses_to_start_with_exit_status_2_and_says_why(model_dir, case, reason):
    env = {"MODELSERVICE_MODEL_DIR": str(model_dir), "MODELSERVICE_GRPC_PORT": "0"}
    port = free_port()
    with socket.socket() as other_server:
        if case == "empty-folder":
            shutil.rmtree(model_dir / "classifier")
        elif case == "corrupt-model":
            truncate(only_version(model_dir) / "saved_model.pb")
        elif case == "bad-setting":
            env["MODELSERVICE_MAX_BATCH"] = "lots"
        else:
            other_server.bind(("127.0.0.1", 0))
            other_server.listen()
            taken = other_server.getsockname()[1]
            port = taken if case == "port-taken" else port
            env["MODELSERVICE_GRPC_PORT"] = str(taken) if case == "grpc-port-taken" else "0"
            reason = reason.format(port=taken)
        finished = serving_command("--port", str(port), env=env)
    assert finished.returncode == start.EXIT_CANNOT_START, finished.stdout + finished.stderr
    last_line = finished.stderr.strip().splitlines()[-1]  # TensorFlow may log before it
    assert last_line.startswith("modelservice: cannot start: ")
    assert reason in last_line
    assert "serving" not in finished.stdout


@pytest.mark.e2e
@pytest.mark.slow
def test_the_server_serves_a_folder_with_limits_from_the_environment(model_dir, tmp_path, digits):
    port = free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "serving", "--model-dir", str(model_dir), "--port", str(port)]
    env = {"MODELSERVICE_MAX_INSTANCES": "2", "MODELSERVICE_MAX_DECODED_IMAGE_MB": "1"}
    with running_process(command, port=port, env=env, log_path=log) as url:
        listed = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
        assert [(model["name"], model["versions"][0]["version"]) for model in listed] == [
            ("classifier", only_version(model_dir).name)
        ]
        images = digits.test.images[:3].tolist()
        assert httpx.post(f"{url}/classify", json={"instances": images[:2]}, timeout=30).status_code == 200
        too_many = httpx.post(f"{url}/classify", json={"instances": images}, timeout=30)
        assert too_many.status_code == 413
        assert "over the limit of 2" in too_many.json()["error"]
        # 1024×1024 RGB is 3 MiB decoded: over a 1 MiB limit, however small the file.
        buffer = io.BytesIO()
        Image.new("RGB", (1024, 1024)).save(buffer, "PNG")
        upload = {"image": ("big.png", buffer.getvalue(), "image/png")}
        too_big = httpx.post(f"{url}/classify", files=upload, timeout=30)
        assert too_big.status_code == 413
        assert too_big.json()["error"] == "the uploaded image decodes to 3.0 MiB (1024×1024×3), over the limit"
        worker_env = server_worker(port).environ()
    # The memory set-up (serving/memory.py) reached the process that holds the models.
    assert worker_env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] == "1"
    jemalloc = memory.find_library(memory.JEMALLOC)
    assert worker_env.get("LD_PRELOAD") == (str(jemalloc) if jemalloc else None)
    started = log.read_text()
    assert f"modelservice: serving 1 model(s) from {model_dir} on http://127.0.0.1:{port}" in started
    assert f"classifier:{only_version(model_dir).name}" in started


# --- stopping -------------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("grpc_server", ["grpcio", "zttp"])
def test_sigterm_drains_then_stops_the_server_within_seconds(model_dir, digits, tmp_path, grpc_server):
    """SIGTERM under load: the server keeps answering while a load balancer would notice (/readyz 503, every
    answer with Connection: close; gRPC health NOT_SERVING), stops once its clients have gone, and no request it
    answered fails, over HTTP or gRPC (with either gRPC server)."""
    import signal
    import time
    from concurrent.futures import ThreadPoolExecutor

    port, grpc_port = free_port(), free_port()
    command = [
        *(sys.executable, "-m", "serving", "--model-dir", str(model_dir)),
        *("--port", str(port), "--grpc-port", str(grpc_port), "--grpc-server", grpc_server),
    ]
    log = tmp_path / "server.log"
    env = {**os.environ, "MODELSERVICE_DRAIN_SECONDS": "8"}
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    body = {"instances": digits.test.images[:1].tolist()}
    try:
        deadline = time.monotonic() + 120
        while not _ready(url):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)

        grpc_client = GrpcClient(grpc_port, digits.test.images[:1])  # connected before: the drain waits for no one
        before = closed_loop(url + "/classify", body, clients=16, seconds=1)
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        # The balancer has not noticed yet: traffic goes on.
        with no_collector_pauses(), ThreadPoolExecutor(1) as pool:
            grpc_during = pool.submit(grpc_client.closed_loop, seconds=1.5)
            during = closed_loop(url + "/classify", body, clients=16, seconds=1.5)
            grpc_codes, grpc_health = grpc_during.result()
        grpc_client.channel.close()
        readiness = httpx.get(url + "/readyz", timeout=10).status_code
        process.wait(timeout=10)
        stopped_in = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert before and {status for status, _ in before} == {200}
    assert len(during) > 16 and {status for status, _ in during} == {200}  # nothing refused or cut while draining
    assert {connection for _, connection in during} == {"close"}
    assert readiness == 503
    assert len(grpc_codes) > 4 and set(grpc_codes) == {"OK"}  # gRPC calls answered while draining too
    assert grpc_health == "NOT_SERVING"
    # Its clients gone, the server stops after a second of quiet, not after the 8 s allowed.
    assert stopped_in < 1.5 + 1 + 4, f"stopped {stopped_in:.1f} s after SIGTERM"


class GrpcClient:
    """Predict calls on one channel, one after another."""

    def __init__(self, port: int, images: np.ndarray):
        import grpc
        import tensorflow as tf
        from grpc_health.v1 import health_pb2, health_pb2_grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.grpc, self.health_pb2 = grpc, health_pb2
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.request = predict_pb2.PredictRequest()
        self.request.model_spec.name = "classifier"
        self.request.inputs["images"].CopyFrom(tf.make_tensor_proto(images.astype(np.float32)))
        self.predictions.Predict(self.request, timeout=30)

    def closed_loop(self, *, seconds: float) -> tuple[list[str], str]:
        """Each call's status for `seconds`, then what the health service says."""
        import time

        codes = []
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                self.predictions.Predict(self.request, timeout=10)
                codes.append("OK")
            except self.grpc.RpcError as error:
                codes.append(error.code().name)
        health = self.health.Check(self.health_pb2.HealthCheckRequest(), timeout=10)
        return codes, self.health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_a_server_beside_another_gets_a_home_of_its_own_that_shares_the_model_store(tmp_path, monkeypatch):
    # BentoML empties its home's Prometheus folder when a server starts: a shared home hides the other's metrics.
    from serving.process import home_beside

    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "first"))
    (tmp_path / "first" / "models" / "classifier").mkdir(parents=True)
    env = home_beside(tmp_path / "second")
    assert env == {"BENTOML_HOME": str(tmp_path / "second")}
    assert (tmp_path / "second" / "models" / "classifier").is_dir()
    assert (tmp_path / "second" / "models").resolve() == (tmp_path / "first" / "models").resolve()
    assert home_beside(tmp_path / "second") == env  # again: the link is kept
