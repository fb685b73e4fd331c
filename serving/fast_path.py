"""A direct path for the inference routes, in front of BentoML's middleware and the web framework's.

BentoML serves the app and everything else on it, but POST /classify, /detect, /translate and TF Serving's
:predict are answered before the request enters BentoML's stack: `FastPathService.to_asgi` wraps the app
BentoML builds in `FastPath`, which calls the FastAPI route's own function with a Starlette `Request`. On
2 cores at 64 connections the server is bound by its one Python thread (the GIL), and what the
request crossed on the way in and out cost more than the handler: BentoML's Prometheus, tracing, timeout,
concurrency and context middleware, each wrapping `send`, then the mount, Starlette's router and FastAPI's
request machinery (dependency solving, response encoding; orjson here). py-spy showed it, and
benchmarks/serving.py measures it: /classify 0.45-0.5 of the HTTP ceiling inside BentoML's middleware,
0.66-0.7 in front of it (2026-12-02, same machine and run).

What those middlewares gave these routes, the fast path does itself: the request timeout (504, BentoML's
message), the limit of requests in flight (503 with Retry-After past it; per route, adapted to a latency
target by `serving.admission`), the access log (BentoML's own middleware and
format, when turned on), and the request metrics (`serving.metrics`, TF Serving's names, per model version
and route; BentoML's `bentoml_service_request_*` series count the other routes). They are not traced,
which without a trace exporter only cost CPU (`serving.tuning`). Matching uses the FastAPI routes' own
compiled paths and methods, errors go to the app's own exception handlers, and FastAPI still documents
these routes at /docs.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs
import bentoml
import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from serving import metrics
from serving.admission import AdaptiveLimit
from serving.deadlines import Deadlines

Endpoint = Callable[..., Awaitable[Any]]
ROUTE_KEY = "modelservice.route"  # where `__call__` leaves the matched route for `respond`
METRICS_PATH = "/metrics"  # BentoML's Prometheus endpoint


class FastPath:
    """ASGI middleware: requests for `endpoints` of `api` are answered here; every other request goes to `app`.

    `timeout` seconds before a 504; per route, at most `max_concurrency` requests in flight (503 beyond), and
    with a `latency_target` (seconds) a limit between `min_concurrency` and that which keeps the route's p99
    latency within the target (`serving.admission`); `access_log` one line per request through BentoML's
    access-log middleware.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api: FastAPI,
        endpoints: Iterable[Endpoint],
        timeout: float | None = None,
        max_concurrency: int = 2**31 - 1,
        min_concurrency: int = 64,
        latency_target: float = 0.0,
        access_log: bool = False,
    ):
        self.app = app
        self.api = api
        self.timeout = timeout
        self.deadlines = Deadlines(timeout)
        chosen = set(endpoints)
        self.routes = [
            (route.path_regex, route.methods, route.endpoint, route.path)
            for route in api.routes
            if isinstance(route, APIRoute) and route.endpoint in chosen
        ]
        if missing := chosen - {endpoint for _, _, endpoint, _ in self.routes}:
            raise ValueError(f"not routes of the app: {sorted(endpoint.__name__ for endpoint in missing)}")
        self.limits = {
            template: AdaptiveLimit(template, latency_target, floor=min_concurrency, ceiling=max_concurrency)
            for _, _, _, template in self.routes
        }
        self.respond: ASGIApp = self.answer_route
        if access_log:
            from bentoml._internal.server.http.access import AccessLogMiddleware

            self.respond = AccessLogMiddleware(self.answer_route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for path, methods, endpoint, template in self.routes:
                if scope["method"] in methods and (match := path.match(scope["path"])):
                    scope[ROUTE_KEY] = (endpoint, template, match.groupdict())
                    await self.respond(scope, receive, send)
                    return
            if scope["path"] == METRICS_PATH:  # a scrape sees every request answered before it
                metrics.flush_requests()
        elif scope["type"] == "lifespan":
            try:
                await self.app(scope, receive, send)
            finally:  # the worker stops: the requests of its last moments are written too
                metrics.flush_requests()
            return
        await self.app(scope, receive, send)

    @property
    def in_flight(self) -> int:
        return sum(limit.in_flight for limit in self.limits.values())

    async def answer_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint, template, parameters = scope[ROUTE_KEY]
        started = time.perf_counter()
        limit = self.limits[template]
        if not limit.admit():
            response = refusal(limit.limit, template)
        else:
            deadline = self.deadlines.start()
            try:
                response = await self.answer(scope, receive, endpoint, parameters)
            except asyncio.CancelledError:
                if not self.deadlines.expired(deadline):
                    raise
                # BentoML's TimeoutMiddleware answer, as the other routes get it.
                response = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
                )
            finally:
                self.deadlines.finish(deadline)
                limit.done(time.perf_counter() - started)
        state = scope.get("state", {})
        metrics.observe_request(state.get("model"), template, response.status_code, time.perf_counter() - started)
        await response(scope, receive, send)

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


def refusal(limit: int, route: str) -> Response:
    """503 at once, so that a client backs off or tries another replica instead of queueing here."""
    return JSONResponse(
        {
            "error": f"the server is at its limit of {limit} requests in flight on {route}",
            "expected": "a retry after the Retry-After seconds, or fewer concurrent requests",
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )


@attrs.define
class FastPathService(bentoml.Service):
    """A BentoML service whose ASGI app can be wrapped outside BentoML's own middleware.

    `bentoml.service(service_class=FastPathService)`, then `add_outer_asgi_middleware(FastPath, ...)`: as
    `add_asgi_middleware`, but the middleware sees each request before BentoML's does.
    """

    outer_middlewares: list[tuple[type, dict[str, Any]]] = attrs.field(factory=list, init=False)

    def add_outer_asgi_middleware(self, middleware_cls: type, **options: Any) -> None:
        self.outer_middlewares.append((middleware_cls, options))

    def to_asgi(self, is_main: bool = True) -> ASGIApp:
        app = super().to_asgi(is_main)
        for middleware_cls, options in reversed(self.outer_middlewares):  # the first added is the outermost
            app = middleware_cls(app, **options)
        return app
