"""deploy/kubernetes.yaml agrees with the Dockerfile: the ports, the user, the probes and the writable paths."""

import re

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
