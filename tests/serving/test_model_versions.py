"""Several versions of a model at once: version policies, labels, the model config file, and versions that
appear, fail or disappear while the server runs (TF Serving's semantics, serving/model_manager.py)."""

import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from benchmarks.model_swaps import copy_as_version
from serving import store
from serving.inputs import InputError
from serving.model_config import (
    ConfigError,
    ModelSpec,
    VersionPolicy,
    configured_specs,
    parse_models_setting,
    read_config_file,
)
from serving.model_manager import ModelManager, State
from serving.process import free_port, running_server

# --- MODELSERVICE_MODELS -------------------------------------------------------------------------


def test_the_models_setting_names_models_and_their_version_policies():
    assert parse_models_setting("classifier, seq2seq:3,4,,detector:latest=2, transfer:all,glyphs:latest") == [
        ModelSpec("classifier"),
        ModelSpec("seq2seq", VersionPolicy("specific", versions=(3, 4))),
        ModelSpec("detector", VersionPolicy("latest", count=2)),
        ModelSpec("transfer", VersionPolicy("all")),
        ModelSpec("glyphs"),
    ]
    assert parse_models_setting("") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3,classifier", "version 3 follows no model:version entry"),
        ("classifier,4", "version 4 follows no model:version entry"),
        ("classifier:newest", "unknown version choice 'newest'"),
        ("classifier:latest=0", "unknown version choice 'latest=0'"),
        ("classifier,classifier:2", "model 'classifier' is configured twice"),
        ("class/ifier", "model name 'class/ifier' is not valid"),
    ],
)
def test_a_bad_models_setting_says_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_models_setting(text)


@pytest.mark.parametrize(
    ("policy", "selected"),
    [
        (VersionPolicy(), [10]),
        (VersionPolicy("latest", count=2), [3, 10]),
        (VersionPolicy("latest", count=9), [1, 3, 10]),
        (VersionPolicy("all"), [1, 3, 10]),
        (VersionPolicy("specific", versions=(3, 7)), [3]),
    ],
)
def test_a_policy_selects_versions_as_tf_serving_does(policy, selected):
    assert policy.select([10, 1, 3]) == selected


# --- the model config file -----------------------------------------------------------------------

TFSERVING_CONFIG = """
model_config_list {
  config {
    name: "classifier"
    base_path: "/models/classifier"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 2 }
  }
  config {
    name: "dates"
    base_path: "seq2seq"
    model_version_policy { specific { versions: 4 versions: 3 } }
  }
  config { name: "detector" model_version_policy { all {} } }
}
"""

EXPECTED_SPECS = [
    ModelSpec("classifier", VersionPolicy("latest", count=2), Path("/models/classifier"), {"stable": 1, "canary": 2}),
    ModelSpec("dates", VersionPolicy("specific", versions=(3, 4)), Path("{folder}/seq2seq")),
    ModelSpec("detector", VersionPolicy("all")),
]


def expected_specs(folder: Path) -> list[ModelSpec]:
    return [
        ModelSpec(spec.name, spec.policy, Path(str(spec.base_path).format(folder=folder)), spec.labels)
        if spec.base_path
        else spec
        for spec in EXPECTED_SPECS
    ]


def test_tf_servings_own_config_file_is_read_unchanged(tmp_path):
    path = tmp_path / "models.config"
    path.write_text(TFSERVING_CONFIG)
    assert read_config_file(path) == expected_specs(tmp_path)


def test_the_same_config_reads_as_json_and_yaml(tmp_path):
    document = {
        "model_config_list": {
            "config": [
                {
                    "name": "classifier",
                    "base_path": "/models/classifier",
                    "model_platform": "tensorflow",
                    "model_version_policy": {"latest": {"num_versions": 2}},
                    "version_labels": {"stable": 1, "canary": 2},
                },
                {"name": "dates", "basePath": "seq2seq", "modelVersionPolicy": {"specific": {"versions": [4, 3]}}},
                {"name": "detector", "model_version_policy": {"all": {}}},
            ]
        }
    }
    as_json = tmp_path / "models.json"
    as_json.write_text(json.dumps(document))
    assert read_config_file(as_json) == expected_specs(tmp_path)
    import yaml

    as_yaml = tmp_path / "models.yaml"
    as_yaml.write_text(yaml.safe_dump(document))
    assert read_config_file(as_yaml) == expected_specs(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model_config_list { config { name: 'a' colour: 'red' } }", 'has no field named "colour"'),
        ("model_config_list { config { name: 'a' model_platform: 'pytorch' } }", "model_platform 'pytorch'"),
        ("model_config_list { config { name: 'a' version_labels { key: 'be-ta' value: 1 } } }", "label 'be-ta'"),
        ("model_config_list { config { name: 'a' model_version_policy { specific {} } } }", "lists no version"),
        ("model_config_list { config { name: 'a' } config { name: 'a' } }", "model 'a' is configured twice"),
        ("model_config_list { }", "names no model"),
        ("", "no model_config_list"),
    ],
)
def test_a_bad_config_file_says_where_and_what(tmp_path, text, message):
    path = tmp_path / "models.config"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as caught:
        read_config_file(path)
    assert str(path) in str(caught.value)


def test_the_setting_and_the_file_are_not_both_taken(tmp_path):
    with pytest.raises(ConfigError, match="set one"):
        configured_specs("classifier", tmp_path / "models.config")
    with pytest.raises(ConfigError, match="cannot be read"):
        configured_specs("", tmp_path / "missing.config")


# --- the manager, on real exports ----------------------------------------------------------------


def corrupt(version_dir: Path) -> None:
    saved_model = version_dir / "saved_model.pb"
    saved_model.write_bytes(saved_model.read_bytes()[:100])


@pytest.fixture
def artifact(trained_classifier) -> Path:
    return trained_classifier[2]


def manager_for(root: Path, models: str = "", **options) -> ModelManager:
    manager = ModelManager(parse_models_setting(models), store.FolderSource(root), **options)
    manager.poll()
    return manager


def states(manager: ModelManager, name: str = "classifier") -> dict[int, str]:
    return {status.version: str(status.state) for status in manager.statuses(name)}


def test_latest_two_serves_both_and_answers_the_highest_by_default(tmp_path, artifact):
    for version in (1, 2, 3):
        copy_as_version(artifact, tmp_path, version)
    manager = manager_for(tmp_path, "classifier:latest=2")
    assert states(manager) == {3: "AVAILABLE", 2: "AVAILABLE"}
    assert manager.served.runtime("classifier").model.version == "3"
    assert manager.served.runtime("classifier", version=2).model.version == "2"
    with pytest.raises(InputError, match=r"version 1 of 'classifier' is not available") as caught:
        manager.served.runtime("classifier", version=1)
    assert caught.value.status == 404


def test_a_new_version_is_served_and_the_old_one_unloaded_without_a_restart(tmp_path, artifact):
    copy_as_version(artifact, tmp_path, 1)
    manager = manager_for(tmp_path)
    old = manager.served.runtime("classifier")
    copy_as_version(artifact, tmp_path, 2)
    manager.poll()
    assert states(manager) == {2: "AVAILABLE", 1: "END"}
    assert sorted(manager.served.runtimes["classifier"]) == [2]
    assert old._batchers == {}  # closed
    assert [status.error for status in manager.statuses("classifier")] == ["", ""]


def test_a_corrupt_new_version_never_serves_and_the_old_one_keeps_serving(tmp_path, artifact):
    copy_as_version(artifact, tmp_path, 1)
    manager = manager_for(tmp_path, max_load_retries=2)
    corrupt(copy_as_version(artifact, tmp_path, 2))
    for _ in range(5):
        manager.poll()
    (broken, working) = manager.statuses("classifier")
    assert (broken.version, broken.state, working.version, working.state) == (2, State.END, 1, State.AVAILABLE)
    assert "corrupt model at" in broken.error and "the SavedModel does not load" in broken.error
    assert broken.attempts == 3  # the first try and max_load_retries more, then no more until the folder changes
    assert manager.served.runtime("classifier").model.version == "1"
    assert broken.to_tfserving()["status"]["error_code"] == "UNKNOWN"
    shutil.rmtree(tmp_path / "classifier" / "2")
    copy_as_version(artifact, tmp_path, 2)  # fixed: exported again into the same version
    manager.poll()
    assert states(manager) == {2: "AVAILABLE", 1: "END"}


def test_a_serving_version_damaged_on_disk_keeps_answering_from_memory_and_says_so(tmp_path, artifact, digits):
    version_dir = copy_as_version(artifact, tmp_path, 1)
    manager = manager_for(tmp_path)
    runtime = manager.served.runtime("classifier")
    images = digits.test.images[:4].astype("float32")
    before = runtime.call("serving_default", images, {})["labels"]
    corrupt(version_dir)
    shutil.rmtree(version_dir / "variables")
    manager.poll()
    (status,) = manager.statuses("classifier")
    assert status.state == State.AVAILABLE and not status.error
    assert status.warning.startswith("its files changed on disk after it loaded (saved_model.pb, variables/")
    assert "still serving the copy in memory" in status.warning
    assert manager.served.runtime("classifier") is runtime
    np.testing.assert_array_equal(runtime.call("serving_default", images, {})["labels"], before)


def test_a_removed_version_is_unloaded_even_when_it_was_the_last(tmp_path, artifact):
    copy_as_version(artifact, tmp_path, 1)
    copy_as_version(artifact, tmp_path, 2)
    manager = manager_for(tmp_path, "classifier:all")
    shutil.rmtree(tmp_path / "classifier" / "2")
    manager.poll()
    assert states(manager) == {2: "END", 1: "AVAILABLE"}
    shutil.rmtree(tmp_path / "classifier")
    manager.poll()
    assert manager.served.runtimes == {}
    assert states(manager) == {2: "END", 1: "END"}


def test_labels_route_to_their_version_and_only_to_an_available_one(tmp_path, artifact):
    for version in (1, 2):
        copy_as_version(artifact, tmp_path, version)
    specs = [ModelSpec("classifier", VersionPolicy("all"), labels={"stable": 1, "canary": 2, "next": 3})]
    manager = ModelManager(specs, store.FolderSource(tmp_path))
    manager.poll()
    assert manager.served.runtime("classifier", label="stable").model.version == "1"
    assert manager.served.runtime("classifier", label="canary").model.version == "2"
    assert manager.served.labels_of("classifier", 2) == ["canary"]
    with pytest.raises(InputError, match="label 'next' of 'classifier' points to version 3, which is not available"):
        manager.served.runtime("classifier", label="next")
    with pytest.raises(InputError, match="model 'classifier' has no label 'beta'"):
        manager.served.runtime("classifier", label="beta")


def test_an_unloading_version_finishes_its_requests_first(tmp_path, artifact):
    copy_as_version(artifact, tmp_path, 1)
    manager = manager_for(tmp_path)
    old = manager.served.runtime("classifier")
    old.in_flight = 1  # a request inside the model call
    copy_as_version(artifact, tmp_path, 2)
    released = []

    def finish() -> None:
        wait_for(lambda: states(manager)[1] == "UNLOADING", timeout=60, what="version 1 to start unloading")
        time.sleep(0.2)
        released.append(states(manager)[1])  # still UNLOADING: it waits for the request
        old.in_flight = 0

    import threading

    threading.Thread(target=finish).start()
    manager.poll()
    assert released == ["UNLOADING"]  # it waited, out of the routing, until the request was done
    assert states(manager) == {2: "AVAILABLE", 1: "END"}


# --- the real server -----------------------------------------------------------------------------


def wait_for(condition, *, timeout: float = 60.0, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def version_states(url: str, name: str = "classifier") -> dict[str, dict]:
    answer = httpx.get(f"{url}/v1/models/{name}", timeout=30)
    assert answer.status_code == 200, answer.text
    return {status["version"]: status for status in answer.json()["model_version_status"]}


@pytest.mark.e2e
@pytest.mark.slow
def test_the_server_starts_empty_and_picks_up_versions_labels_and_failures_while_it_runs(tmp_path, artifact, digits):
    models = tmp_path / "models"
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "classifier" base_path: "models/classifier" '
        'model_version_policy { latest { num_versions: 2 } } version_labels { key: "stable" value: 1 } } }'
    )
    images = {"instances": digits.test.images[:2].tolist()}
    env = {
        "MODELSERVICE_MODEL_CONFIG_FILE": str(config),
        "MODELSERVICE_POLL_SECONDS": "0.5",
        "MODELSERVICE_REQUIRE_MODELS": "0",
    }
    with running_server(env=env, log_path=tmp_path / "server.log", probe="/livez") as url:
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 503  # nothing to serve yet
        assert version_states(url) == {}
        copy_as_version(artifact, models, 1)
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=30).status_code == 200, what="/readyz")
        assert version_states(url) == {
            "1": {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        }
        copy_as_version(artifact, models, 2)
        wait_for(lambda: version_states(url).get("2", {}).get("state") == "AVAILABLE", what="version 2")
        assert httpx.post(f"{url}/classify", json=images, timeout=30).json()["model"]["version"] == "2"
        assert httpx.post(f"{url}/classify?version=1", json=images, timeout=30).json()["model"]["version"] == "1"
        assert httpx.post(f"{url}/classify?label=stable", json=images, timeout=30).json()["model"]["version"] == "1"
        by_version = httpx.post(f"{url}/v1/models/classifier/versions/1:predict", json=images, timeout=30)
        by_label = httpx.post(f"{url}/v1/models/classifier/labels/stable:predict", json=images, timeout=30)
        latest = httpx.post(f"{url}/v1/models/classifier:predict", json=images, timeout=30)
        assert by_version.status_code == by_label.status_code == latest.status_code == 200
        np.testing.assert_allclose(
            [row["probabilities"] for row in by_version.json()["predictions"]],
            [row["probabilities"] for row in by_label.json()["predictions"]],
        )
        assert httpx.get(f"{url}/v1/models/classifier/labels/stable", timeout=30).json() == {
            "model_version_status": [version_states(url)["1"]]
        }
        assert (
            httpx.get(f"{url}/v1/models/classifier/labels/stable/metadata", timeout=30).json()["model_spec"]["version"]
            == "1"
        )
        missing = httpx.post(f"{url}/classify?version=7", json=images, timeout=30)
        assert missing.status_code == 404 and "version 7 of 'classifier' is not available" in missing.json()["error"]
        both = httpx.post(f"{url}/classify?version=1&label=stable", json=images, timeout=30)
        assert both.status_code == 400

        corrupt(copy_as_version(artifact, models, 3))
        wait_for(lambda: version_states(url).get("3", {}).get("state") == "END", what="version 3 to fail")
        failed = version_states(url)["3"]["status"]
        assert failed["error_code"] == "UNKNOWN" and "the SavedModel does not load" in failed["error_message"]
        assert {version: status["state"] for version, status in version_states(url).items()} == {
            "3": "END",
            "2": "AVAILABLE",
            "1": "AVAILABLE",
        }
        assert httpx.post(f"{url}/classify", json=images, timeout=30).json()["model"]["version"] == "2"

        shutil.rmtree(models / "classifier" / "3")
        copy_as_version(artifact, models, 3)
        wait_for(lambda: version_states(url)["3"]["state"] == "AVAILABLE", what="version 3 fixed")
        wait_for(lambda: version_states(url)["1"]["state"] == "END", what="version 1 to unload")
        listed = httpx.get(f"{url}/v1/models", timeout=30).json()["models"]
        assert [(entry["version"], entry["state"]) for entry in listed[0]["versions"]] == [
            ("3", "AVAILABLE"),
            ("2", "AVAILABLE"),
            ("1", "END"),
        ]
        gone = httpx.post(f"{url}/classify?label=stable", json=images, timeout=30)
        assert gone.status_code == 404 and "points to version 1, which is not available" in gone.json()["error"]

        exported = metric_samples(httpx.get(f"{url}/metrics", timeout=30).text)
        requests = ":tensorflow:serving:request_count_total"
        assert (
            exported[
                (
                    requests,
                    (("model_name", "classifier"), ("model_version", "1"), ("route", "/classify"), ("status", "200")),
                )
            ]
            == 2
        )
        assert (
            exported[(requests, (("model_name", ""), ("model_version", ""), ("route", "/classify"), ("status", "404")))]
            == 2
        )
        predict = (
            ("model_name", "classifier"),
            ("model_version", "1"),
            ("route", "/v1/models/{name}/versions/{version}:predict"),
            ("status", "200"),
        )
        assert exported[(requests, predict)] == 1
        latency = exported[(":tensorflow:serving:request_latency_count", predict[:3])]
        assert latency == 1
        state = "modelservice_model_version_state"
        assert exported[(state, (("model_name", "classifier"), ("model_version", "1"), ("state", "END")))] == 1
        assert exported[(state, (("model_name", "classifier"), ("model_version", "1"), ("state", "AVAILABLE")))] == 0
        assert exported[(state, (("model_name", "classifier"), ("model_version", "3"), ("state", "AVAILABLE")))] == 1
        loads = ":tensorflow:cc:saved_model:load_attempt_count_total"
        version_3 = str(models / "classifier" / "3")
        assert exported[(loads, (("model_path", version_3), ("status", "fail")))] >= 1
        assert exported[(loads, (("model_path", version_3), ("status", "success")))] == 1
        assert (
            exported[("modelservice_model_unloads_total", (("model_name", "classifier"), ("model_version", "1")))] == 1
        )


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus text → {(sample name, sorted label pairs): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.e2e
@pytest.mark.slow
def test_the_admin_api_moves_labels_and_reloads_the_config_only_with_the_token(tmp_path, artifact, digits):
    models = tmp_path / "models"
    for version in (1, 2):
        copy_as_version(artifact, models, version)
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "classifier" base_path: "models/classifier" '
        'model_version_policy { all {} } version_labels { key: "stable" value: 2 } } }'
    )
    images = {"instances": digits.test.images[:1].tolist()}
    token = {"Authorization": "Bearer s3cret"}
    grpc_port = free_port()
    env = {
        "MODELSERVICE_MODEL_CONFIG_FILE": str(config),
        "MODELSERVICE_ADMIN_TOKEN": "s3cret",
        "MODELSERVICE_GRPC_PORT": str(grpc_port),
    }
    with running_server(env=env, log_path=tmp_path / "server.log") as url:
        stable = f"{url}/admin/models/classifier/labels/stable"

        def stable_version() -> str:
            return httpx.post(f"{url}/classify?label=stable", json=images, timeout=30).json()["model"]["version"]

        refused = [
            httpx.put(stable, json={"version": 1}, timeout=30),
            httpx.put(stable, json={"version": 1}, headers={"Authorization": "Bearer guess"}, timeout=30),
            httpx.put(stable, json={"version": 1}, headers={"Authorization": "s3cret"}, timeout=30),
            httpx.post(f"{url}/admin/reload", timeout=30),
        ]
        assert [answer.status_code for answer in refused] == [401, 403, 401, 401]
        assert refused[0].json()["error"] == "missing admin token"
        assert refused[1].json()["error"] == "wrong admin token"
        assert stable_version() == "2"  # nothing changed

        rollback = httpx.put(stable, json={"version": 1}, headers=token, timeout=30)
        assert rollback.status_code == 200 and rollback.json() == {
            "name": "classifier",
            "label": "stable",
            "version": "1",
        }
        assert stable_version() == "1"
        not_loaded = httpx.put(stable, json={"version": 9}, headers=token, timeout=30)
        assert (
            not_loaded.status_code == 409 and "version 9 of 'classifier' is not available" in not_loaded.json()["error"]
        )
        bad_label = httpx.put(f"{url}/admin/models/classifier/labels/be-ta", json={"version": 1}, headers=token)
        assert bad_label.status_code == 400 and "label 'be-ta' is not a valid label" in bad_label.json()["error"]
        canary = f"{url}/admin/models/classifier/labels/canary"
        assert httpx.post(canary, json={"version": 2}, headers=token, timeout=30).status_code == 200  # POST works too
        assert httpx.post(f"{url}/classify?label=canary", json=images, timeout=30).json()["model"]["version"] == "2"
        assert httpx.delete(canary, headers=token, timeout=30).status_code == 200
        assert httpx.post(f"{url}/classify?label=canary", json=images, timeout=30).status_code == 404

        only_one = {
            "model_config_list": {
                "config": [
                    {
                        "name": "classifier",
                        "base_path": "models/classifier",
                        "model_version_policy": {"specific": {"versions": [1]}},
                    }
                ]
            }
        }
        reloaded = httpx.post(f"{url}/admin/reload", json=only_one, headers=token, timeout=60)
        assert reloaded.status_code == 200, reloaded.text
        assert {version: status["state"] for version, status in version_states(url).items()} == {
            "2": "END",
            "1": "AVAILABLE",
        }
        assert httpx.post(f"{url}/classify?label=stable", json=images, timeout=30).status_code == 404  # labels reset
        assert httpx.post(f"{url}/admin/reload", headers=token, timeout=60).status_code == 200  # the file again
        assert {version: status["state"] for version, status in version_states(url).items()} == {
            "2": "AVAILABLE",
            "1": "AVAILABLE",
        }
        assert stable_version() == "2"
        bad = httpx.post(f"{url}/admin/reload", json={"model_config_list": {"colour": 1}}, headers=token, timeout=30)
        assert bad.status_code == 400 and "colour" in bad.json()["error"]
        grpc_versions_labels_and_reload(grpc_port, digits.test.images[:1])


def grpc_versions_labels_and_reload(port: int, images: np.ndarray) -> None:
    """The same server over TF Serving's gRPC API: version and label routing, status by label, and the config
    reload behind the admin token, sent as call metadata."""
    import grpc
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    def answered_version(**choice) -> int:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "classifier"
        if "version" in choice:
            request.model_spec.version.value = choice["version"]
        if "label" in choice:
            request.model_spec.version_label = choice["label"]
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(images.astype(np.float32)))
        return predict.Predict(request, timeout=30).model_spec.version.value

    def states() -> dict[int, int]:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "classifier"
        return {
            status.version: status.state for status in models.GetModelStatus(request, timeout=30).model_version_status
        }

    def reload(config: dict, metadata: tuple = ()) -> model_management_pb2.ReloadConfigResponse:
        request = model_management_pb2.ReloadConfigRequest()
        json_format.ParseDict(config, request.config)
        return models.HandleReloadConfigRequest(request, metadata=metadata, timeout=60)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        assert (answered_version(), answered_version(version=1), answered_version(label="stable")) == (2, 1, 2)
        by_label = get_model_status_pb2.GetModelStatusRequest()
        by_label.model_spec.name, by_label.model_spec.version_label = "classifier", "stable"
        assert [status.version for status in models.GetModelStatus(by_label, timeout=30).model_version_status] == [2]

        only_one = {"model_config_list": {"config": [{"name": "classifier", "base_path": "models/classifier"}]}}
        for metadata, code, message in [
            ((), grpc.StatusCode.UNAUTHENTICATED, "missing admin token"),
            ((("authorization", "Bearer guess"),), grpc.StatusCode.PERMISSION_DENIED, "wrong admin token"),
        ]:
            with pytest.raises(grpc.RpcError) as refused:
                reload(only_one, metadata)
            assert refused.value.code() == code and refused.value.details().startswith(message)
        assert set(states()) == {1, 2}  # nothing changed

        answer = reload(only_one, (("authorization", "Bearer s3cret"),))
        assert answer.status.error_code == 0, answer.status.error_message
        assert states() == {
            2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
            1: get_model_status_pb2.ModelVersionStatus.END,
        }
        with pytest.raises(grpc.RpcError) as gone:
            answered_version(version=1)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND and "version 1 of 'classifier' is not available" in (
            gone.value.details()
        )


@pytest.mark.slow
def test_the_admin_api_is_off_without_a_token(server):
    answer = httpx.post(f"{server}/admin/reload", headers={"Authorization": "Bearer anything"}, timeout=30)
    assert answer.status_code == 403
    assert answer.json()["error"] == "the admin API is off"


def test_a_version_whose_warm_up_fails_never_serves(tmp_path, artifact):
    from serving.warmup import WarmupRequest, read_warmup, write_warmup

    copy_as_version(artifact, tmp_path, 1)
    assert len(read_warmup(tmp_path / "classifier" / "1")) == 6  # 3 signatures × (1 image, a batch of 4)
    broken = copy_as_version(artifact, tmp_path, 2)
    write_warmup(broken, "classifier", [WarmupRequest("no_such_signature", {"images": np.zeros((1, 8, 8, 1))})])
    wrong_dtype = copy_as_version(artifact, tmp_path, 3)
    write_warmup(wrong_dtype, "classifier", [WarmupRequest("serving_default", {"images": np.array([b"x"])})])
    manager = manager_for(tmp_path, "classifier:all", max_load_retries=0)
    failed = {status.version: status.error for status in manager.statuses("classifier")}
    assert failed[1] == ""
    assert "warm-up request 0 names signature 'no_such_signature', which the SavedModel lacks" in failed[2]
    assert "warm-up request 0 (serving_default) failed" in failed[3]
    assert sorted(manager.served.runtimes["classifier"]) == [1]
