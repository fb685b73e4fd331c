"""End-to-end tests of POST /translate and the TF Serving routes for the date normaliser.

The same real BentoML server as tests/test_serving.py (conftest.py) serves the classifier and the
Seq2Seq model together. Answers are checked against the exported graph loaded in this process; every
bad request must get its 4xx with a JSON error, after which the service still answers.
"""

import asyncio
import datetime
import json
import unicodedata
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
import tensorflow as tf

from serving.contract import read_metadata
from serving.inputs import MAX_BATCH, MAX_PAYLOAD_BYTES

pytestmark = pytest.mark.slow

TIMEOUT = 30.0
TEXTS = ["March 4, 1999", "2023년 1월 20일 금요일", "20.01.2023", "Saturday, March 4th 1999", "1999/03/04"]
PREDICT = "/v1/models/seq2seq:predict"


@dataclass(frozen=True)
class Graph:
    """The exported SavedModel, loaded here, as the reference for what the server must answer."""

    loaded: Any
    version: str
    max_length: int
    max_beam: int

    def translate(self, texts: list[str], beam_width: int, signature: str = "translate") -> dict[str, Any]:
        outputs = self.loaded.signatures[signature](texts=tf.constant(texts), beam_width=tf.constant(beam_width))
        return {key: value.numpy() for key, value in outputs.items()}


@pytest.fixture(scope="module")
def graph(trained_seq2seq) -> Graph:
    artifact = trained_seq2seq[3]
    metadata = read_metadata(artifact)
    return Graph(
        tf.saved_model.load(str(artifact)),
        str(metadata.version),
        metadata.input.max_length,
        metadata.decoding.max_beam_width,
    )


def translate(url: str, body: Any) -> httpx.Response:
    # json.dumps escapes non-ASCII, so even a lone surrogate travels as valid JSON.
    return httpx.post(
        url + "/translate", content=json.dumps(body), headers={"content-type": "application/json"}, timeout=TIMEOUT
    )


def error_of(response: httpx.Response) -> dict[str, str]:
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"] and isinstance(body.get("expected"), str), body
    return body


@pytest.fixture(scope="module")
def assert_still_serving(date_answers):
    """`assert_still_serving(url)`: the server answers a good request as the exported graph does."""

    def check(url: str) -> None:
        response = translate(url, {"texts": ["20.01.2023"]})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"][0]["text"] == date_answers("20.01.2023")[0]

    return check


def check_predictions(predictions: list[dict[str, Any]], expected: dict[str, Any], beam_width: int) -> None:
    assert len(predictions) == len(expected["texts"])
    for row, prediction in enumerate(predictions):
        best = expected["texts"][row].decode()
        if expected["is_date"][row]:
            assert set(prediction) == {"text", "score", "beams", "date_probability"}
            assert prediction["text"] == best
        else:
            assert set(prediction) == {"text", "reason", "guess", "score", "beams", "date_probability"}
            assert (prediction["text"], prediction["reason"], prediction["guess"]) == (None, "not a date", best)
        assert prediction["score"] == pytest.approx(float(expected["scores"][row]), abs=1e-4)
        assert prediction["date_probability"] == pytest.approx(float(expected["date_probability"][row]), abs=1e-4)
        assert len(prediction["beams"]) == beam_width
        assert prediction["beams"][0] == {"text": best, "score": prediction["score"]}
        scores = [beam["score"] for beam in prediction["beams"]]
        assert scores == sorted(scores, reverse=True)


# --- POST /translate -----------------------------------------------------------------------------


@pytest.mark.parametrize("beam_width", [1, 3, 8])
def test_translate_answers_what_the_exported_graph_answers(server, graph, beam_width):
    response = translate(server, {"texts": TEXTS, "beam_width": beam_width})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "seq2seq", "version": graph.version}
    check_predictions(body["predictions"], graph.translate(TEXTS, beam_width), beam_width)


NOT_DATES = ["hello", "", "yesterday", "February 30, 2001", "13/13/2013", "29.02.1900", "Jun 2001", "42"]


def test_translate_says_not_a_date_plainly_as_the_exported_graph_decides(server, graph):
    texts = [*NOT_DATES, *TEXTS]
    response = translate(server, {"texts": texts})
    assert response.status_code == 200, response.text
    check_predictions(response.json()["predictions"], graph.translate(texts, 3), 3)


def test_translate_answers_the_issue_examples_with_the_default_beam(server, date_answers):
    response = translate(server, {"texts": TEXTS[:3]})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [prediction["text"] for prediction in predictions] == date_answers(*TEXTS[:3])
    assert all(len(prediction["beams"]) == 3 and prediction["score"] < 0 for prediction in predictions)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "hello, not a date", "😀🎉", "\u0000\ud800 odd", "x" * 64],
    ids=["empty", "spaces", "words", "emoji", "control-and-lone-surrogate", "at-the-limit"],
)
def test_any_string_gets_a_best_guess_not_an_error(server, assert_still_serving, graph, text):
    response = translate(server, {"texts": [text]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    guess = prediction["text"] if prediction["text"] is not None else prediction["guess"]
    assert isinstance(guess, str) and len(guess) <= 16
    assert prediction["score"] <= 0
    assert_still_serving(server)


def test_only_real_dates_come_out_over_http_whatever_goes_in(server):
    texts = [*NOT_DATES, "31-dic-2015", "2029-17-08"]
    response = translate(server, {"texts": texts, "beam_width": 4})
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        for answer in [prediction["text"] or prediction["guess"], *(beam["text"] for beam in prediction["beams"])]:
            year, month, day = (int(part) for part in answer.split("-"))
            assert 1900 <= year <= 2099 and datetime.date(year, month, day).isoformat() == answer


def test_the_seq2seq_model_can_be_chosen_by_name(server, date_answers):
    response = httpx.post(server + "/translate?model=seq2seq", json={"texts": ["20.01.2023"]}, timeout=TIMEOUT)
    assert response.status_code == 200 and response.json()["predictions"][0]["text"] == date_answers("20.01.2023")[0]


def test_models_lists_both_families(server):
    response = httpx.get(server + "/models", timeout=TIMEOUT)
    assert response.status_code == 200
    assert {model["task"] for model in response.json()["models"]} == {"classifier", "seq2seq", "detector"}


# --- the attention behind the answer ("attention": true) -----------------------------------------


def normalised(text: str) -> str:
    """What the graph reads of a text (models/text_graph.py), computed apart from it."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def test_translate_with_attention_adds_the_best_answers_attention_to_the_same_answer(server, graph):
    texts = [*TEXTS, "hello"]
    response = translate(server, {"texts": texts, "beam_width": 2, "attention": True})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    attentions = [prediction.pop("attention") for prediction in predictions]
    check_predictions(predictions, graph.translate(texts, 2), 2)
    expected = graph.translate(texts, 2, signature="translate_attention")["attention"]
    for row, (text, prediction, attention) in enumerate(zip(texts, predictions, attentions)):
        assert set(attention) == {"source", "output", "weights"}
        assert attention["source"] == list(normalised(text))
        assert attention["output"] == list(prediction["text"] or prediction["guess"])  # "hello": the guess's
        weights = np.array(attention["weights"])
        assert weights.shape == (len(attention["output"]), len(attention["source"]))
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-4)
        np.testing.assert_allclose(weights, expected[row, : weights.shape[0], : weights.shape[1]], atol=1e-4)


@pytest.mark.parametrize("body", [{}, {"attention": False}], ids=["absent", "false"])
def test_translate_without_attention_answers_none(server, body):
    response = translate(server, {"texts": ["20.01.2023"], **body})
    assert response.status_code == 200, response.text
    assert "attention" not in response.json()["predictions"][0]


# --- TF Serving REST API -------------------------------------------------------------------------


def test_tfserving_row_format_uses_the_default_signature(server, graph):
    response = httpx.post(server + PREDICT, json={"instances": TEXTS[:2]}, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = graph.translate(TEXTS[:2], 3)
    assert [row["texts"] for row in predictions] == [text.decode() for text in expected["texts"]]
    assert set(predictions[0]) == {
        "texts",
        "scores",
        "log_probabilities",
        "beam_texts",
        "beam_scores",
        "is_date",
        "date_probability",
    }
    assert [row["is_date"] for row in predictions] == expected["is_date"].tolist()
    assert len(predictions[0]["beam_texts"]) == 3


def test_tfserving_columnar_format_with_a_beam_width(server, graph):
    body = {"signature_name": "translate", "inputs": {"texts": TEXTS, "beam_width": 2}}
    response = httpx.post(server + PREDICT, json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    expected = graph.translate(TEXTS, 2)
    assert outputs["texts"] == [text.decode() for text in expected["texts"]]
    assert [len(row) for row in outputs["beam_texts"]] == [2] * len(TEXTS)


def test_tfserving_rows_may_carry_the_beam_width(server, graph):
    body = {"signature_name": "translate", "instances": [{"texts": text, "beam_width": 1} for text in TEXTS[:2]]}
    response = httpx.post(server + PREDICT, json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    expected = graph.translate(TEXTS[:2], 1)
    assert [row["texts"] for row in response.json()["predictions"]] == [text.decode() for text in expected["texts"]]


def test_tfserving_base64_strings(server, graph):
    body = {"instances": [{"b64": "MjAuMDEuMjAyMw=="}]}  # "20.01.2023"
    response = httpx.post(server + PREDICT, json=body, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["texts"] == graph.translate(["20.01.2023"], 3)["texts"][0].decode()


def test_tfserving_metadata_lists_every_signature(server):
    response = httpx.get(server + "/v1/models/seq2seq/metadata", timeout=TIMEOUT)
    assert response.status_code == 200
    signatures = response.json()["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "translate", "translate_attention"}
    assert set(signatures["translate"]["inputs"]) == set(signatures["translate_attention"]["inputs"])
    assert set(signatures["translate"]["inputs"]) == {"texts", "beam_width"}
    assert set(signatures["translate_attention"]["outputs"]) == {
        *signatures["translate"]["outputs"],
        "attention",
        "source_characters",
    }
    assert signatures["translate"]["inputs"]["beam_width"]["dtype"] == "DT_INT32"
    assert signatures["serving_default"]["inputs"]["texts"]["dtype"] == "DT_STRING"


# --- bad input ------------------------------------------------------------------------------------

LONG = "1" * 65


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        pytest.param(
            "/translate", {"texts": "March 4, 1999"}, 400, "'texts' is a str, not a list", id="texts-not-a-list"
        ),
        pytest.param("/translate", {"texts": []}, 400, "empty batch", id="empty-list"),
        pytest.param(
            "/translate",
            {"texts": ["1.1.2000"] * (MAX_BATCH + 1)},
            413,
            f"over the limit of {MAX_BATCH}",
            id="batch-over-limit",
        ),
        pytest.param(
            "/translate", {"texts": [LONG]}, 413, "65 characters, over the limit of 64", id="string-over-max-length"
        ),
        pytest.param(
            "/translate", {"texts": ["ok", 1999]}, 400, "texts[1] is a number, not a string", id="number-in-list"
        ),
        pytest.param("/translate", {"texts": [None]}, 400, "texts[0] is a null, not a string", id="null-in-list"),
        pytest.param("/translate", {"texts": [["nested"]]}, 400, "texts[0] is a list, not a string", id="nested-list"),
        pytest.param("/translate", {"texts": [{"b64": "!!"}]}, 400, "not valid base64", id="bad-base64"),
        pytest.param("/translate", {"text": ["typo in field"]}, 400, "missing field 'texts'", id="missing-field"),
        pytest.param("/translate", ["a list body"], 400, "not an object", id="body-is-a-list"),
        pytest.param(
            "/translate",
            {"texts": ["1.1.2000"], "beam_width": 0},
            400,
            "'beam_width' is 0, out of range",
            id="beam-zero",
        ),
        pytest.param(
            "/translate",
            {"texts": ["1.1.2000"], "beam_width": 9},
            400,
            "'beam_width' is 9, out of range",
            id="beam-too-wide",
        ),
        pytest.param("/translate", {"texts": ["1.1.2000"], "beam_width": -3}, 400, "out of range", id="beam-negative"),
        pytest.param("/translate", {"texts": ["1.1.2000"], "beam_width": "3"}, 400, "not an integer", id="beam-string"),
        pytest.param("/translate", {"texts": ["1.1.2000"], "beam_width": 2.5}, 400, "not an integer", id="beam-float"),
        pytest.param("/translate", {"texts": ["1.1.2000"], "beam_width": True}, 400, "not an integer", id="beam-bool"),
        pytest.param("/translate", {"texts": ["1.1.2000"], "beam_width": None}, 400, "not an integer", id="beam-null"),
        pytest.param("/translate", {"texts": ["1.1.2000"], "beam_width": 10**30}, 400, "out of range", id="beam-huge"),
        pytest.param(
            "/translate",
            {"texts": ["1.1.2000"], "attention": "yes"},
            400,
            "'attention' is \"yes\", not a boolean",
            id="attention-string",
        ),
        pytest.param(
            "/translate", {"texts": ["1.1.2000"], "attention": 1}, 400, "not a boolean", id="attention-number"
        ),
        pytest.param(PREDICT, {"instances": [1999]}, 400, "not a string", id="tfs-number"),
        pytest.param(PREDICT, {"instances": []}, 400, "empty batch", id="tfs-empty"),
        pytest.param(PREDICT, {"instances": [LONG]}, 413, "over the limit of 64", id="tfs-too-long"),
        pytest.param(
            PREDICT,
            {"signature_name": "translate", "inputs": {"texts": ["1.1.2000"]}},
            400,
            "missing input 'beam_width'",
            id="tfs-missing-beam",
        ),
        pytest.param(
            PREDICT,
            {"signature_name": "translate", "inputs": {"texts": ["1.1.2000"], "beam_width": 99}},
            400,
            "beam_width must be an integer from 1 to 8",
            id="tfs-beam-checked-in-graph",
        ),
        pytest.param(
            PREDICT,
            {"signature_name": "translate", "inputs": {"texts": ["1.1.2000"], "beam_width": "two"}},
            400,
            "not an integer",
            id="tfs-beam-string",
        ),
        pytest.param(
            PREDICT,
            {"signature_name": "translate", "inputs": {"texts": ["1.1.2000"], "beam_width": 10**30}},
            400,
            "out of range",
            id="tfs-beam-beyond-int32",
        ),
        pytest.param(
            PREDICT,
            {
                "signature_name": "translate",
                "instances": [{"texts": "1.1.2000", "beam_width": 1}, {"texts": "2.2.2000", "beam_width": 2}],
            },
            400,
            "instances disagree on 'beam_width'",
            id="tfs-rows-disagree",
        ),
        pytest.param(
            PREDICT,
            {"signature_name": "classify_uint8", "instances": ["x"]},
            400,
            "unknown signature_name",
            id="tfs-wrong-signature",
        ),
    ],
)
def test_bad_input_gets_a_4xx_json_error_and_the_service_keeps_serving(
    server, assert_still_serving, path, body, status, message
):
    response = httpx.post(server + path, json=body, timeout=TIMEOUT)
    assert response.status_code == status, response.text
    assert message in error_of(response)["error"]
    assert_still_serving(server)


@pytest.mark.parametrize(
    "content, status, message",
    [
        pytest.param(b'{"texts": ["1.1.2000"', 400, "malformed JSON", id="truncated-json"),
        pytest.param(b"\xff\xfe not utf-8", 400, "malformed JSON", id="not-utf8"),
        pytest.param(b'{"texts": ["a"], "beam_width": NaN}', 400, "non-finite value NaN", id="nan"),
        pytest.param(
            b'{"texts": ["' + b"1" * (MAX_PAYLOAD_BYTES + 10) + b'"]}', 413, "over the limit", id="payload-too-large"
        ),
    ],
)
def test_malformed_bodies(server, assert_still_serving, content, status, message):
    response = httpx.post(
        server + "/translate", content=content, headers={"content-type": "application/json"}, timeout=TIMEOUT
    )
    assert response.status_code == status, response.text
    assert message in error_of(response)["error"]
    assert_still_serving(server)


def test_32_concurrent_clients_mixing_dates_images_and_bad_requests(server, graph, digits):
    """Translations batch together across clients (per beam width) while the classifier serves too."""
    expected = {width: graph.translate(TEXTS, width) for width in (1, 3)}
    image = digits.test.images[0].tolist()

    async def client(number: int, http: httpx.AsyncClient) -> list[tuple[int, int, Any]]:
        results = []
        for step in range(6):
            kind = (number + step) % 3
            if kind == 0:
                width = 1 + 2 * (step % 2)
                response = await http.post("/translate", json={"texts": TEXTS, "beam_width": width})
                texts = (
                    [prediction["text"] for prediction in response.json()["predictions"]]
                    if response.status_code == 200
                    else None
                )
                results.append(
                    (response.status_code, 200, texts == [text.decode() for text in expected[width]["texts"]])
                )
            elif kind == 1:
                response = await http.post("/classify", json={"instances": [image]})
                results.append((response.status_code, 200, response.status_code == 200))
            else:
                response = await http.post("/translate", json={"texts": [LONG]})
                results.append((response.status_code, 413, "error" in response.json()))
        return results

    async def main() -> list[tuple[int, int, Any]]:
        async with httpx.AsyncClient(base_url=server, timeout=60.0, limits=httpx.Limits(max_connections=64)) as http:
            return [
                result for results in await asyncio.gather(*(client(n, http) for n in range(32))) for result in results
            ]

    results = asyncio.run(main())
    assert len(results) == 32 * 6
    assert all(status == wanted for status, wanted, _ in results), [r for r in results if r[0] != r[1]][:5]
    assert all(ok for _, _, ok in results)
