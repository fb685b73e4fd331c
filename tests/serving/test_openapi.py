"""The OpenAPI document against the real server: schemathesis sends what it describes and checks the answers.

Every operation of /openapi.json, the admin API's included (the session's server runs with it off, so they are
answered 403, which their document says), with every check schemathesis has (`st run --checks all`): no 5xx,
only documented statuses, content types and headers, answers that match their schemas, schema-valid requests
accepted and schema-invalid ones refused, 405 with the right `Allow` for other methods; in its examples,
coverage and fuzzing phases, at most MAX_EXAMPLES generated requests per operation and phase, the same ones on
every run. schemathesis.toml holds this service's settings (and what it turns off for /classify and /detect, and
why) and loads tests/serving/schemathesis_hooks.py; `st run` reads the same file. /metrics, /livez and /readyz
are BentoML's, outside the FastAPI app and its document.
"""

from pathlib import Path

import httpx
import pytest
import schemathesis

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 25
TIMEOUT = 30.0


@pytest.fixture(scope="session")
def api_schema(server: str) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_path(PROJECT_ROOT / "schemathesis.toml")
    config.projects.default.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    return schemathesis.openapi.from_url(f"{server}/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_the_server_does_what_its_openapi_document_says(case: schemathesis.Case) -> None:
    case.call_and_validate()


# --- what schemathesis found, each with the request it sent ---------------------------------------


def test_a_version_in_other_digits_is_a_400_not_a_500(server):
    # "¹".isdigit() is True and int("¹") raises: this was a 500.
    path = "/v1/models/%F0%BA%9E%BE%1A%25%0C3/versions/%C2%B9/metadata"
    response = httpx.get(server + path, timeout=TIMEOUT)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "version '¹' is not a version number",
        "expected": "a whole number, as in /versions/3",
    }
    assert httpx.get(f"{server}/v1/models/classifier/versions/%C2%B9", timeout=TIMEOUT).status_code == 400


def test_a_whole_float_is_an_integer(server):
    # JSON Schema's "integer" takes 8.0, and the document says beam_width is one: it was refused with a 400.
    texts = ["March 4, 1999"]
    as_float = httpx.post(f"{server}/translate", json={"texts": texts, "beam_width": 8.0}, timeout=TIMEOUT)
    as_integer = httpx.post(f"{server}/translate", json={"texts": texts, "beam_width": 8}, timeout=TIMEOUT)
    assert as_float.status_code == 200, as_float.text
    assert as_float.json() == as_integer.json()
    half = httpx.post(f"{server}/translate", json={"texts": texts, "beam_width": 2.5}, timeout=TIMEOUT)
    assert half.status_code == 400 and "not an integer" in half.json()["error"]
