"""The gRPC server beside the HTTP one: same process, same event loop, same loaded models and batchers.

BentoML 1.4's services have no gRPC (bentoml/BentoML#5607), so `GrpcServer`, an ASGI middleware, starts
grpcio's asyncio server on the worker's event loop once the app has started (its models are loaded), and stops
it when the app stops. Its calls run on that loop beside the HTTP requests and join their batches.
grpcio's asyncio server takes one call at a time from its core and waits a round trip through its poller thread
before taking the next, so with one server few calls reach a batch together (420-740 calls/s at 64 clients). It
therefore runs `ACCEPTORS` servers sharing the port (SO_REUSEPORT; the kernel spreads the connections between
them), each taking calls on its own. At 64 clients in `benchmarks/serving.py`: a no-op Predict served this way
answered 8,800 calls/s (grpc-ceiling), against 2,500-2,800 from grpcio's thread-pool server, which handed each call
from a pool thread to the loop and back; the service's Predict went from 1,000-1,200 to 3,600 calls/s; 64
acceptors gave batches of 15 and 1,700-2,200 calls/s in a slower hour where 16 gave 12 and 1,700-1,900.
The kernel spreads connections, not calls: the calls of one client channel (one connection) all reach one
acceptor, which takes them one at a time, so 64 calls in flight on one channel got half of what 64 channels got
(843 against 1,665 calls/s, 2026-12-04; `classify-grpc-1ch` in the benchmark). Clients that need the most calls
per second open a few channels, as gRPC's performance guide advises for any server.
It serves TF Serving's PredictionService and ModelService (`serving.grpc_api`) and
the standard health service (`grpc.health.v1.Health`: SERVING once a model version is AVAILABLE, NOT_SERVING
from the start of a drain), on MODELSERVICE_GRPC_PORT (TF Serving's 8500 by default; 0: off).

Each call gets what the HTTP fast path gives a request: a limit of calls in flight adapted to the latency
target (`serving.admission`; UNAVAILABLE past it, so the client retries elsewhere or later), the request
timeout (DEADLINE_EXCEEDED), TF Serving's request metrics (route = the gRPC method), and a place in the
server's drain (`serving.drain.Stopping`): on SIGTERM calls keep being answered until the server is quiet,
then the calls in flight finish and new ones get UNAVAILABLE.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from fastapi import FastAPI
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import metrics
from serving.admission import AdaptiveLimit
from serving.deadlines import Deadlines
from serving.drain import Stopping
from serving.inputs import InputError
from serving.process import port_taken

if TYPE_CHECKING:
    from serving.grpc_http2 import Http2Server

logger = logging.getLogger("modelservice")

PREDICTION_SERVICE = "tensorflow.serving.PredictionService"
MODEL_SERVICE = "tensorflow.serving.ModelService"
PREDICT_ROUTE = f"/{PREDICTION_SERVICE}/Predict"

Method = Callable[..., Awaitable[Any]]

ACCEPTORS = 64  # grpcio asyncio servers sharing the port, each taking calls from the core on its own

# What a client expects for each kind of mistake (tensorflow/serving's own mapping of its error codes).
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(error: InputError) -> grpc.StatusCode:
    return STATUS_CODES.get(error.status, grpc.StatusCode.INVALID_ARGUMENT)


def status_message(error: InputError) -> str:
    return f"{error.message}; expected {error.expected}" if error.expected else error.message


class Call:
    """What one call resolved, for its metrics: the model version that answered."""

    model: tuple[str, str] | None = None


class GrpcServer:
    """ASGI middleware: TF Serving's gRPC API on `host:port` for as long as the app runs (port 0: none)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        api: FastAPI,
        host: str,
        port: int,
        max_message_mb: int,
        workers: int,
        transport: str = "grpcio",
        timeout: float,
        max_concurrency: int,
        min_concurrency: int,
        latency_target: float,
        stopping: Stopping,
        stop_grace_seconds: float,
    ):
        self.app = app
        self.api = api
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.max_message_bytes = max_message_mb * 2**20
        self.workers = workers
        self.timeout = timeout
        self.deadlines = Deadlines(timeout)
        self.limit = AdaptiveLimit(PREDICT_ROUTE, latency_target, floor=min_concurrency, ceiling=max_concurrency)
        self.stopping = stopping
        self.stop_grace_seconds = stop_grace_seconds
        self.transport = transport
        self.servers: list[grpc.aio.Server] = []
        self.http2: Http2Server | None = None
        self.health: Health | None = None
        self._health_shutdown: asyncio.Task | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" or not self.port:
            await self.app(scope, receive, send)
            return

        async def receive_stopping() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        async def send_started(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self.start()
                except RuntimeError as error:  # the port is taken: the worker must not run without its gRPC API
                    message = {"type": "lifespan.startup.failed", "message": str(error)}
            await send(message)

        await self.app(scope, receive_stopping, send_started)

    async def start(self) -> None:
        # TensorFlow and TF Serving's protos load here, in the worker, not in BentoML's parent process.
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        from serving.grpc_api import ModelServicer, PredictionServicer, Services

        # The acceptors share the port, so binding cannot tell that another server holds it; a single worker
        # must not share it with a server left running (the workers of one server do share it, as they share
        # the HTTP port).
        if self.workers == 1 and (holder := port_taken(self.host, self.port)):
            raise RuntimeError(
                f"the gRPC port {self.address} is in use ({holder}): set MODELSERVICE_GRPC_PORT to a free port, "
                "or 0 for no gRPC"
            )
        services = Services(self.api.state.manager, self.max_message_bytes)
        predictions, models = PredictionServicer(self, services), ModelServicer(self, services)
        self.health = Health(lambda: bool(services.models.served.runtimes) and not self.stopping.draining)

        def add_services(server: Any) -> None:
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
            model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)

        if self.transport == "zttp":
            await self.start_http2(add_services)
        else:
            await self.start_grpcio(add_services)
        self.stopping.on_drain(self._on_drain)
        logger.info("TF Serving's gRPC API on %s (%s)", self.address, self.transport)

    async def start_http2(self, add_services: Callable[[Any], None]) -> None:
        from serving.grpc_http2 import GrpcApp, Handlers, Http2Server

        handlers = Handlers()
        add_services(handlers)
        self.http2 = Http2Server(GrpcApp(handlers, self.max_message_bytes), self.host, self.port)
        try:
            await self.http2.start()
        except OSError:
            self.http2 = None
            raise self.unbindable() from None

    async def start_grpcio(self, add_services: Callable[[Any], None]) -> None:
        options = [
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.so_reuseport", 1),
        ]
        for _ in range(ACCEPTORS):
            server = grpc.aio.server(options=options)
            add_services(server)
            try:
                server.add_insecure_port(self.address)
            except RuntimeError:
                await self.stop()
                raise self.unbindable() from None
            await server.start()
            self.servers.append(server)

    def unbindable(self) -> RuntimeError:
        return RuntimeError(
            f"the gRPC port {self.address} cannot be bound: set MODELSERVICE_GRPC_PORT to a free port, or 0 for no gRPC"
        )

    def _on_drain(self) -> None:
        if self.health is not None and self._health_shutdown is None:
            self._health_shutdown = asyncio.get_running_loop().create_task(self.health.enter_graceful_shutdown())

    async def stop(self) -> None:
        """The calls in flight finish (for at most the grace period); new ones get UNAVAILABLE."""
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        servers, self.servers = self.servers, []
        await asyncio.gather(*(server.stop(self.stop_grace_seconds) for server in servers))
        if self.http2 is not None:
            await self.http2.stop(self.stop_grace_seconds)
            self.http2 = None

    async def answer(self, route: str, method: Method, request: Any, context: grpc.aio.ServicerContext, *extra) -> Any:
        """One call: a status other than OK aborts it with its message. A client that leaves cancels the call's
        task, which `outcome` counts as CANCELLED."""
        code, message, response = await self.outcome(route, method, request, *extra)
        if code != grpc.StatusCode.OK:
            await context.abort(code, message)
        return response

    async def outcome(self, route: str, method: Method, request: Any, *extra) -> tuple[grpc.StatusCode, str, Any]:
        """One call of `method`, with the admission, timeout, drain, error mapping and metrics of an HTTP request."""
        started = time.perf_counter()
        call, response = Call(), None
        limited = route == PREDICT_ROUTE
        if limited and not self.limit.admit():
            code, message = (
                grpc.StatusCode.UNAVAILABLE,
                (
                    f"the server is at its limit of {self.limit.limit} calls in flight on {route}; "
                    "retry after a second, or make fewer concurrent calls"
                ),
            )
        else:
            self.stopping.started()
            deadline = self.deadlines.start()
            try:
                response = await method(request, call, *extra)
                code, message = grpc.StatusCode.OK, ""
            except asyncio.CancelledError:
                if not self.deadlines.expired(deadline):  # the client left: counted, then stopped
                    metrics.observe_request(call.model, route, "CANCELLED", time.perf_counter() - started)
                    raise
                code, message = grpc.StatusCode.DEADLINE_EXCEEDED, f"not able to answer in {self.timeout} seconds"
            except InputError as error:
                code, message = status_code(error), status_message(error)
            except Exception as error:
                logger.exception("unhandled error on %s", route)
                code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}"
            finally:
                self.deadlines.finish(deadline)
                if limited:
                    self.limit.done(time.perf_counter() - started)
                self.stopping.finished()
        metrics.observe_request(call.model, route, code.name, time.perf_counter() - started)
        return code, message, response


class Health(health.aio.HealthServicer):
    """grpc.health.v1.Health for the server ("") and both TF Serving services: SERVING while `ready()`."""

    SERVICES = ("", PREDICTION_SERVICE, MODEL_SERVICE)

    def __init__(self, ready: Callable[[], bool]):
        super().__init__()
        self.ready = ready

    async def _refresh(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING if self.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in self.SERVICES:
            await self.set(service, serving)

    async def Check(self, request, context):
        await self._refresh()
        return await super().Check(request, context)

    async def Watch(self, request, context):
        await self._refresh()
        await super().Watch(request, context)
