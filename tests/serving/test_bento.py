"""The Bento: `bentoml build` packs the serving code with the registered models, and the Bento serves them."""

import os
import subprocess
import sys
import tomllib

import httpx
import pytest
import yaml

from serving.process import PROJECT_ROOT, free_port, running_process

BENTOFILE = PROJECT_ROOT / "bentofile.yaml"


def test_the_bento_installs_what_the_image_installs():
    """bentofile.yaml cannot read pyproject.toml: this keeps its package list from drifting."""
    packages = yaml.safe_load(BENTOFILE.read_text())["python"]["packages"]
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert packages == project["dependencies"] + project["optional-dependencies"]["cpu"]


@pytest.mark.e2e
@pytest.mark.slow
def test_bentoml_build_packs_the_service_and_the_models_and_the_bento_serves_them(
    trained_classifier, trained_seq2seq, trained_detector, trained_transfer, date_answers, tmp_path
):
    # The session's models are registered in the tests' private BentoML store (BENTOML_HOME, tests/conftest.py).
    built = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "-o", "tag", str(PROJECT_ROOT)],
        cwd=PROJECT_ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("modelservice:")
    bento = yaml.safe_load(
        subprocess.run(
            [sys.executable, "-m", "bentoml", "get", tag, "-o", "yaml"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert sorted(model["tag"].split(":")[0] for model in bento["models"]) == [
        "classifier",
        "detector",
        "seq2seq",
        "transfer",
    ]
    port = free_port()
    with running_process(
        [sys.executable, "-m", "bentoml", "serve", tag, "--port", str(port)], port=port, log_path=tmp_path / "bento.log"
    ) as url:
        listed = httpx.get(url + "/v1/models", timeout=30).json()["models"]
        assert {"classifier", "detector", "seq2seq", "transfer"} <= {model["name"] for model in listed}
        answer = httpx.post(url + "/translate", json={"texts": ["20.01.2023"]}, timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["text"] == date_answers("20.01.2023")[0]
