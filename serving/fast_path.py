"""A direct path for the inference routes, inside BentoML's request path but past the web framework's.

BentoML's middleware (its Prometheus metrics, tracing, timeout and concurrency limit) still wraps every
request. For POST /classify, /detect, /translate and TF Serving's :predict, this middleware then calls
the FastAPI route's own function with the same Starlette `Request`, and skips what sits between: the
mount of the FastAPI app, Starlette's router and FastAPI's request machinery (dependency solving and
response encoding, here done by orjson). At 64 connections on 2 cores that machinery cost more CPU per request than the
handler and its share of the model call together (benchmarks/serving.py). Matching uses the FastAPI
routes' own compiled paths and methods, errors go to the app's own exception handlers, and FastAPI still
serves every other request and documents these routes at /docs. Each answer is counted and timed per
model version and route (`serving.metrics`): the route sets `request.state.model` once it has chosen one.
"""

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving import metrics

Endpoint = Callable[..., Awaitable[Any]]


class FastPath:
    """ASGI middleware (for `Service.add_asgi_middleware`): `endpoints` of `api` are called directly."""

    def __init__(self, app: ASGIApp, *, api: FastAPI, endpoints: Iterable[Endpoint]):
        self.app = app
        self.api = api
        chosen = set(endpoints)
        self.routes = [
            (route.path_regex, route.methods, route.endpoint, route.path)
            for route in api.routes
            if isinstance(route, APIRoute) and route.endpoint in chosen
        ]
        if missing := chosen - {endpoint for _, _, endpoint, _ in self.routes}:
            raise ValueError(f"not routes of the app: {sorted(endpoint.__name__ for endpoint in missing)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for path, methods, endpoint, template in self.routes:
                if scope["method"] in methods and (match := path.match(scope["path"])):
                    started = time.perf_counter()
                    response = await self.answer(scope, receive, endpoint, match.groupdict())
                    state = scope.get("state", {})
                    metrics.observe_request(
                        state.get("model"), template, response.status_code, time.perf_counter() - started
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def answer(self, scope: Scope, receive: Receive, endpoint: Endpoint, parameters: dict) -> Response:
        scope["app"] = self.api  # what `request.app` reads, as inside the mounted app
        request = Request(scope, receive)
        try:
            result = await endpoint(request, **parameters)
        except Exception as error:
            return await self.handled(request, error)
        if isinstance(result, Response):
            return result
        return Response(orjson.dumps(result), media_type="application/json")  # ~10x faster than json.dumps

    async def handled(self, request: Request, error: Exception) -> Response:
        """The app's own handler for this kind of error (its most specific class first), as FastAPI picks it."""
        for kind in type(error).__mro__:
            if handler := self.api.exception_handlers.get(kind):
                return await handler(request, error)
        raise error
