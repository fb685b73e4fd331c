"""deploy/kubernetes.yaml agrees with the Dockerfile: the ports, the user, the probes and the writable paths; and
deploy/training-job.yaml gives each worker pod its place in one TF_CONFIG cluster."""

import itertools
import json
import os
import re
import subprocess

import pytest
import yaml

from serving.process import PROJECT_ROOT
from serving.settings import Settings

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict]:
    return {
        document["kind"]: document
        for document in yaml.safe_load_all((PROJECT_ROOT / "deploy" / "kubernetes.yaml").read_text())
    }


def dockerfile_value(pattern: str) -> str:
    match = re.search(pattern, DOCKERFILE)
    assert match, pattern
    return match.group(1)


def test_the_deployment_runs_the_images_ports_and_user(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    exposed = [int(port) for port in dockerfile_value(r"EXPOSE ([\d ]+)").split()]
    assert [ports["http"], ports["grpc"]] == exposed
    assert ports["http"] == int(dockerfile_value(r"MODELSERVICE_PORT=(\d+)"))
    assert ports["grpc"] == int(dockerfile_value(r"MODELSERVICE_GRPC_PORT=(\d+)")) == Settings().grpc_port
    env = {variable["name"]: variable["value"] for variable in container["env"]}
    assert env["MODELSERVICE_PORT"] == str(ports["http"]) and env["MODELSERVICE_GRPC_PORT"] == str(ports["grpc"])
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_value(r"useradd .*--uid (\d+)"))
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_probes_use_the_servers_health_routes_and_shutdown_fits_the_grace_period(manifests):
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    paths = {probe: container[probe]["httpGet"]["path"] for probe in ("startupProbe", "livenessProbe")}
    assert paths == {"startupProbe": "/readyz", "livenessProbe": "/livez"}
    assert all(container[probe]["httpGet"]["port"] == "http" for probe in paths)
    # Readiness through grpc.health.v1.Health (tests/serving/test_grpc.py): SERVING as /readyz answers 200.
    grpc_port = next(port["containerPort"] for port in container["ports"] if port["name"] == "grpc")
    assert container["readinessProbe"]["grpc"] == {"port": grpc_port}
    assert pod["terminationGracePeriodSeconds"] > 10  # the server stops within 10 s (tests/test_container.py)
    assert pod["terminationGracePeriodSeconds"] > Settings().drain_seconds + 5  # its drain, then uvicorn's stop
    assert "/readyz" in dockerfile_value(r"HEALTHCHECK[^\n]*\n\s*CMD (.*)")


def test_a_read_only_root_keeps_the_places_the_server_writes_writable(manifests):
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounted == {"/tmp", dockerfile_value(r"BENTOML_HOME=(\S+)")}  # as tests/test_container.py runs it


def test_the_service_routes_to_the_named_port(manifests):
    service = manifests["Service"]["spec"]
    deployment = manifests["Deployment"]["spec"]
    assert service["selector"] == deployment["selector"]["matchLabels"] == deployment["template"]["metadata"]["labels"]
    container_ports = {port["name"] for port in deployment["template"]["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["ports"]} == container_ports == {"http", "grpc"}


# --- deploy/training-job.yaml: training across workers ---------------------------------------------------------


@pytest.fixture(scope="module")
def training_job() -> dict[str, dict]:
    return {
        document["kind"]: document
        for document in yaml.safe_load_all((PROJECT_ROOT / "deploy" / "training-job.yaml").read_text())
    }


def worker_tf_config(script: str, index: int) -> str:
    """TF_CONFIG as the pod's shell sets it for JOB_COMPLETION_INDEX=`index`."""
    export = next(line for line in script.splitlines() if line.startswith("export TF_CONFIG="))
    finished = subprocess.run(
        ["sh", "-c", f'{export}\nprintf %s "$TF_CONFIG"'],
        env={"JOB_COMPLETION_INDEX": str(index), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    )
    return finished.stdout


def test_each_job_pod_gets_its_own_place_in_one_cluster_of_the_jobs_pods(training_job, monkeypatch):
    from pipelines.training.distributed import cluster_task

    job, service = training_job["Job"], training_job["Service"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (port,) = [port["containerPort"] for port in container["ports"]]
    assert [entry["port"] for entry in service["spec"]["ports"]] == [port]
    assert service["spec"]["clusterIP"] == "None" and pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == {"job-name": job["metadata"]["name"]}
    assert job["spec"]["completionMode"] == "Indexed"
    workers = job["spec"]["completions"]
    assert job["spec"]["parallelism"] == workers  # the collective steps wait for every worker
    name = job["metadata"]["name"]
    expected_hosts = [f"{name}-{index}.{service['metadata']['name']}:{port}" for index in range(workers)]
    for index in range(workers):
        tf_config = worker_tf_config(container["args"][0], index)
        assert json.loads(tf_config)["cluster"]["worker"] == expected_hosts
        monkeypatch.setenv("TF_CONFIG", tf_config)
        task = cluster_task()
        assert (task.index, task.workers, task.is_chief) == (index, workers, index == 0)


def test_the_job_trains_across_workers_into_the_shared_volume_with_the_training_image(training_job):
    pod = training_job["Job"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["args"][0].splitlines()[-1].split()
    assert command[:3] == ["exec", "python", "-m"] and command[3].startswith("pipelines.")
    flags = dict(itertools.pairwise(command[4:]))
    assert flags["--strategy"] == "multi-worker"
    (mount,) = container["volumeMounts"]
    assert flags["--run-dir"].startswith(mount["mountPath"] + "/")  # every worker resumes from the chief's backup
    (volume,) = pod["volumes"]
    claim = training_job["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pod["restartPolicy"] == "OnFailure"  # a lost worker's pod starts again and resumes
    assert pod["securityContext"]["runAsUser"] == int(dockerfile_value(r"useradd .*--uid (\d+)"))
    # The training image: `docker build --build-arg EXTRAS=train`, the extra that holds the training code's needs.
    assert "--build-arg EXTRAS=train" in DOCKERFILE and "${EXTRAS:+,$EXTRAS}" in DOCKERFILE
