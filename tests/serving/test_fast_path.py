"""The inference routes' direct path (serving/fast_path.py) and the request parsing it relies on."""

import asyncio
import json

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from serving import inputs
from serving.fast_path import FastPath
from serving.inputs import InputError


class Recorder:
    """The app behind the fast path (BentoML's mount in the server): records what reaches it."""

    def __init__(self):
        self.paths: list[tuple[str, str]] = []

    async def __call__(self, scope, receive, send):
        self.paths.append((scope["method"], scope["path"]))
        await Response("behind", status_code=299)(scope, receive, send)


def make_app() -> tuple[FastAPI, list]:
    api = FastAPI()

    @api.exception_handler(InputError)
    async def input_error(_: Request, error: InputError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status)

    @api.exception_handler(Exception)
    async def unexpected(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(error).__name__}"}, status_code=500)

    @api.post("/echo")
    async def echo(request: Request) -> dict:
        document = inputs.parse_json(await inputs.read_body(request))
        if document.get("fail") == "input":
            raise InputError("bad field", expected="a good one", status=422)
        if document.get("fail") == "bug":
            raise RuntimeError("a bug")
        return {"got": document, "app": request.app is api, "model": request.query_params.get("model")}

    @api.post("/v1/models/{name}:predict")
    @api.post("/v1/models/{name}/versions/{version}:predict")
    async def predict(request: Request, name: str, version: str | None = None) -> dict:
        return {"name": name, "version": version}

    @api.post("/picture")
    async def picture(request: Request) -> Response:
        return Response(b"\x89PNG", media_type="image/png")

    @api.post("/slow-route")
    async def slow_route(request: Request) -> dict:
        return {"via": "fastapi"}

    @api.post("/wait")
    async def wait(request: Request) -> dict:
        seconds = inputs.parse_json(await inputs.read_body(request))["seconds"]
        await asyncio.sleep(seconds)
        return {"waited": seconds}

    return api, [echo, predict, picture, wait]


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    return calls(app, [(method, path, kwargs)])[0]


def calls(app, requests: list[tuple[str, str, dict]]) -> list[httpx.Response]:
    """The requests sent at once, their answers in the same order."""

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await asyncio.gather(*(client.request(method, path, **kwargs) for method, path, kwargs in requests))

    return asyncio.run(send())


@pytest.fixture
def fast():
    api, endpoints = make_app()
    behind = Recorder()
    return FastPath(behind, api=api, endpoints=endpoints), behind


def test_chosen_routes_are_answered_without_the_app_behind(fast):
    app, behind = fast
    response = call(app, "POST", "/echo?model=m", json={"a": [1, 2.5, "x"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"got": {"a": [1, 2.5, "x"]}, "app": True, "model": "m"}
    assert behind.paths == []


def test_path_parameters_come_from_the_routes_own_patterns(fast):
    app, _ = fast
    assert call(app, "POST", "/v1/models/digits:predict").json() == {"name": "digits", "version": None}
    assert call(app, "POST", "/v1/models/digits/versions/3:predict").json() == {"name": "digits", "version": "3"}


def test_other_methods_paths_and_routes_go_to_the_app_behind(fast):
    app, behind = fast
    for method, path in (("GET", "/echo"), ("POST", "/slow-route"), ("POST", "/v1/models/a/b:predict")):
        assert call(app, method, path).status_code == 299
    assert behind.paths == [("GET", "/echo"), ("POST", "/slow-route"), ("POST", "/v1/models/a/b:predict")]


def test_errors_get_the_apps_own_handlers_most_specific_first(fast):
    app, _ = fast
    rejected = call(app, "POST", "/echo", json={"fail": "input"})
    assert rejected.status_code == 422
    assert rejected.json() == {"error": "bad field", "expected": "a good one"}
    broken = call(app, "POST", "/echo", json={"fail": "bug"})
    assert broken.status_code == 500
    assert broken.json() == {"error": "internal error: RuntimeError"}
    malformed = call(app, "POST", "/echo", content=b"{not json")
    assert malformed.status_code == 400
    assert "malformed JSON" in malformed.json()["error"]


def test_a_response_from_the_endpoint_is_sent_as_it_is(fast):
    app, _ = fast
    response = call(app, "POST", "/picture")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.content == b"\x89PNG"


def test_an_endpoint_that_is_not_a_route_of_the_app_is_refused():
    api, _ = make_app()

    async def stray(request: Request) -> dict:
        return {}

    with pytest.raises(ValueError, match="stray"):
        FastPath(Recorder(), api=api, endpoints=[stray])


def test_a_request_past_the_timeout_is_answered_504_and_the_next_one_is_served():
    api, endpoints = make_app()
    app = FastPath(Recorder(), api=api, endpoints=endpoints, timeout=0.2)
    late = call(app, "POST", "/wait", json={"seconds": 5})
    assert late.status_code == 504
    assert late.json() == {"error": "Not able to process the request in 0.2 seconds"}
    assert call(app, "POST", "/wait", json={"seconds": 0.01}).json() == {"waited": 0.01}
    assert app.in_flight == 0


def test_a_request_cancelled_from_outside_stays_cancelled_and_is_not_answered_504():
    api, endpoints = make_app()
    app = FastPath(Recorder(), api=api, endpoints=endpoints, timeout=30)
    sent = []
    body = b'{"seconds": 5}'
    scope = {"type": "http", "method": "POST", "path": "/wait", "query_string": b"", "headers": [], "state": {}}

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def disconnect() -> None:
        request = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.sleep(0.05)
        request.cancel()  # as uvicorn does when the client goes away
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(disconnect())
    assert sent == []
    assert app.in_flight == 0


def test_requests_past_the_concurrency_limit_are_answered_503_with_a_retry_hint():
    api, endpoints = make_app()
    app = FastPath(Recorder(), api=api, endpoints=endpoints, max_concurrency=2)
    answers = calls(app, [("POST", "/wait", {"json": {"seconds": 0.3}})] * 4)
    assert sorted(answer.status_code for answer in answers) == [200, 200, 503, 503]
    refused = next(answer for answer in answers if answer.status_code == 503)
    assert refused.headers["retry-after"] == "1"
    assert refused.json() == {
        "error": "the server is at its limit of 2 requests in flight on /wait",
        "expected": "a retry after the Retry-After seconds, or fewer concurrent requests",
    }
    assert app.in_flight == 0
    assert call(app, "POST", "/echo", json={}).status_code == 200


def test_each_route_has_its_own_limit():
    api, endpoints = make_app()
    app = FastPath(Recorder(), api=api, endpoints=endpoints, max_concurrency=1)
    answers = calls(app, [("POST", "/wait", {"json": {"seconds": 0.3}})] * 2 + [("POST", "/echo", {"json": {}})])
    assert [answer.status_code for answer in answers] in ([200, 503, 200], [503, 200, 200])


@pytest.mark.parametrize(("seconds", "limits"), [(0.3, [2, 2, 2, 2]), (0.0, [2, 3, 4, 5])])
def test_the_limit_grows_while_answers_are_within_the_latency_target_and_not_past_it(seconds, limits):
    import time

    api, endpoints = make_app()
    app = FastPath(Recorder(), api=api, endpoints=endpoints, min_concurrency=2, latency_target=0.15)
    seen, first = [], None
    for _ in range(4):  # each round of 4 requests at once in its own half-second window
        answers = calls(app, [("POST", "/wait", {"json": {"seconds": seconds}})] * 4)
        first = first or sorted(answer.status_code for answer in answers)
        seen.append(app.limits["/wait"].limit)
        time.sleep(0.5)
    assert first == [200, 200, 503, 503]
    assert seen == limits


def test_the_access_log_has_a_line_per_request_in_bentomls_format(caplog):
    api, endpoints = make_app()
    app = FastPath(Recorder(), api=api, endpoints=endpoints, access_log=True)
    with caplog.at_level("INFO", logger="bentoml.access"):
        call(app, "POST", "/echo", json={})
        call(app, "POST", "/echo", json={"fail": "input"})
    lines = [record.getMessage() for record in caplog.records if record.name == "bentoml.access"]
    assert len(lines) == 2
    assert "method=POST,path=/echo" in lines[0] and "status=200" in lines[0]
    assert "status=422" in lines[1]


def test_the_service_class_puts_the_drain_grpc_and_the_fast_path_in_front_of_bentomls_middleware():
    from serving.drain import Drain
    from serving.fast_path import FastPathService
    from serving.grpc_server import GrpcServer
    from serving.service import ModelService

    assert isinstance(ModelService, FastPathService)
    (drain, drain_options), (grpc_server, grpc_options), (fast_path, options) = ModelService.outer_middlewares
    assert (drain, grpc_server, fast_path) == (Drain, GrpcServer, FastPath)
    assert set(drain_options) == {"seconds", "stopping"}
    assert grpc_options["stopping"] is drain_options["stopping"]  # one drain for both sides
    assert {"timeout", "max_concurrency", "access_log"} <= set(options)
    app = ModelService.to_asgi()
    assert isinstance(app, Drain) and isinstance(app.app, GrpcServer) and isinstance(app.app.app, FastPath)
    assert type(app.app.app.app).__name__ == "Starlette"  # BentoML's own app, with its middleware, behind it


# --- the parsing the direct path made cheaper ------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '"\\ud800"',  # a lone surrogate: orjson refuses it, the standard parser reads it
        '{"big": 1' + "0" * 30 + "}",  # beyond 64 bits
        '\ufeff{"bom": true}',
        '{"a": [1, 2.5, -0.0, 1e-7, "é"], "b": null, "c": false}',
    ],
)
def test_json_bodies_read_as_the_standard_parser_reads_them(body):
    assert inputs.parse_json(body.encode()) == json.loads(body.encode())


@pytest.mark.parametrize("body", [b'{"a": NaN}', b'{"a": [1, 2', b"\xff"])
def test_json_bodies_that_are_refused_keep_their_messages(body):
    with pytest.raises(InputError) as error:
        inputs.parse_json(body)
    assert "non-finite value NaN" in error.value.message or "malformed JSON" in error.value.message


def test_only_a_true_or_false_token_makes_booleans_possible():
    assert not inputs.may_hold_booleans(b'{"instances": [[[0, 1]]]}')
    assert inputs.may_hold_booleans(b'{"instances": [[[true, 1]]]}')
    assert inputs.may_hold_booleans(b'{"flag": false}')


@pytest.mark.parametrize(
    "instances",
    [
        [[[0, 1], [2, 255]]],  # H×W ints
        [[[0.5, 1.25], [2.0, 254.75]], [[1, 2], [3, 4]]],  # floats, two images
        [[[[0, 1, 2], [3, 4, 5]]]],  # H×W×3
        [np.arange(64).reshape(8, 8).tolist()] * 3,
    ],
)
def test_the_one_conversion_batch_equals_the_image_by_image_batch(instances):
    fast = inputs.pixel_batch(instances, booleans_possible=False)
    checked = inputs.pixel_batch(instances)
    assert fast.dtype == checked.dtype == np.float32
    np.testing.assert_array_equal(fast, checked)


@pytest.mark.parametrize(
    ("instances", "fragment"),
    [
        ([[[0, 1], [2, 256]]], "instance 0 has values outside 0–255"),
        ([[[0, 1], [2, 3]], [[0, -1], [2, 3]]], "instance 1 has values outside 0–255"),
        ([[[0, 1], [2]]], "instance 0 is not a rectangular array"),
        ([[[0, "7"], [2, 3]]], "instance 0 contains non-numeric values"),
        ([[[0, 1]], [[0, 1], [2, 3]]], "different shapes"),
        ([[[[0, 0]]]], "2 channels"),
        ([[[1e300 * 1e300, 0]]], "NaN or infinite"),
    ],
)
def test_a_batch_the_one_conversion_refuses_gets_the_image_by_image_message(instances, fragment):
    with pytest.raises(InputError) as error:
        inputs.pixel_batch(instances, booleans_possible=False)
    assert fragment in error.value.message
