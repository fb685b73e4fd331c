"""What every gRPC call gets from `GrpcServer.outcome`, in this process: the in-flight limit, the timeout, the drain's
count and the status for each kind of failure (tests/serving/test_grpc.py calls the real server)."""

import asyncio
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from serving import metrics
from serving.drain import QUIET_SECONDS, Drain, Stopping
from serving.grpc_server import PREDICT_ROUTE, Call, GrpcServer
from serving.inputs import InputError

STATUS_ROUTE = "/tensorflow.serving.ModelService/GetModelStatus"


def grpc_server(**options) -> GrpcServer:
    settings = {"timeout": 5.0, "max_concurrency": 2, "min_concurrency": 2, "latency_target": 0.0} | options
    return GrpcServer(
        None,
        api=None,
        host="127.0.0.1",
        port=0,
        max_message_mb=1,
        workers=1,
        stopping=Stopping(),
        stop_grace_seconds=1.0,
        **settings,
    )


async def slow(request: str, call: Call) -> str:
    call.model = ("classifier", "1")
    await asyncio.sleep(0.2)
    return f"answer to {request}"


def outcomes(server: GrpcServer, calls: list[tuple[str, object]]) -> list[tuple[grpc.StatusCode, str, object]]:
    async def all_at_once():
        return await asyncio.gather(*(server.outcome(route, method, "request") for route, method in calls))

    return asyncio.run(all_at_once())


def test_predict_calls_past_the_limit_are_refused_at_once_with_unavailable():
    server = grpc_server()
    results = outcomes(server, [(PREDICT_ROUTE, slow)] * 3 + [(STATUS_ROUTE, slow)])
    assert [code for code, _, _ in results] == [grpc.StatusCode.OK] * 2 + [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.OK,
    ]
    assert results[0][2] == "answer to request"
    assert "at its limit of 2 calls in flight" in results[2][1] and "retry" in results[2][1]
    assert server.limit.in_flight == 0 and server.stopping.in_flight == 0


@pytest.mark.parametrize(
    ("failure", "code", "message"),
    [
        (InputError("no model named 'x' is served", expected="one of ['a']", status=404), "NOT_FOUND", "expected one"),
        (InputError("batch of 65 images is over the limit", status=413), "RESOURCE_EXHAUSTED", "over the limit"),
        (InputError("input 'images' is int32, not float32"), "INVALID_ARGUMENT", "int32, not float32"),
        (InputError("missing admin token", status=401), "UNAUTHENTICATED", "missing admin token"),
        (InputError("wrong admin token", status=403), "PERMISSION_DENIED", "wrong admin token"),
        (InputError("only predict signatures", status=501), "UNIMPLEMENTED", "only predict"),
        (KeyError("a bug"), "INTERNAL", "internal error: KeyError"),
    ],
)
def test_each_failure_gets_its_status_and_message(failure, code, message):
    async def failing(request: str, call: Call) -> None:
        raise failure

    ((status, text, response),) = outcomes(grpc_server(), [(PREDICT_ROUTE, failing)])
    assert status.name == code and message in text and response is None


def test_a_call_past_the_timeout_gets_deadline_exceeded():
    ((status, text, _),) = outcomes(grpc_server(timeout=0.05), [(PREDICT_ROUTE, slow)])
    assert status == grpc.StatusCode.DEADLINE_EXCEEDED and "not able to answer in 0.05 seconds" in text


def test_calls_in_flight_hold_off_the_drain():
    server = grpc_server()

    async def watched() -> list[int]:
        seen = []

        async def watch() -> None:
            await asyncio.sleep(0.1)
            seen.append(server.stopping.in_flight)

        await asyncio.gather(server.outcome(PREDICT_ROUTE, slow, "request"), watch())
        return [*seen, server.stopping.in_flight]

    assert asyncio.run(watched()) == [1, 0]
    assert not server.stopping.quiet()  # its last call ended just now: the drain waits for a second of quiet


def test_the_signal_starts_the_quiet_clock():
    """A client between two requests when SIGTERM comes has QUIET_SECONDS to send its next one: the server was
    idle for a minute, yet the drain does not end the moment it starts."""
    stopping = Stopping(last_activity=time.monotonic() - 60)
    assert stopping.quiet()
    stopping.drain()
    assert stopping.draining and not stopping.quiet()
    stopping.last_activity -= QUIET_SECONDS
    assert stopping.quiet()


def test_a_stalled_event_loop_is_not_taken_for_quiet():
    """The loop busy for longer than QUIET_SECONDS right after SIGTERM (a loaded machine): the clients that connected
    meanwhile are still in the listen backlog, not yet requests, so the drain does not stop at its next check."""
    stopped: list[float] = []
    drain = Drain(app=None, seconds=5, stopping=Stopping(last_activity=time.monotonic() - 60))
    drain._stop = lambda signum, frame: stopped.append(time.monotonic())

    async def scenario() -> float:
        draining = asyncio.create_task(drain._drain_then_stop(15, None))
        await asyncio.sleep(0)  # the drain has begun
        time.sleep(QUIET_SECONDS + 0.2)  # the loop stalls
        resumed = time.monotonic()
        await asyncio.sleep(0.02)
        assert not stopped  # the check right after the stall did not stop the server
        drain.stopping.started()  # the request that waited in the backlog
        await asyncio.sleep(0.2)
        drain.stopping.finished()
        await draining
        return resumed

    resumed = asyncio.run(scenario())
    assert stopped and stopped[0] - resumed >= QUIET_SECONDS + 0.2


async def slow_bytes(request: bytes, call: Call) -> bytes:
    return (await slow(request.decode(), call)).encode()


def test_a_call_whose_client_left_is_counted_as_cancelled_and_logs_no_error(caplog):
    """h2load ends each run by closing its connections: their calls must not be logged as application errors."""
    server = grpc_server()
    cancelled = {"model_name": "classifier", "model_version": "1", "route": PREDICT_ROUTE, "status": "CANCELLED"}
    before = REGISTRY.get_sample_value(":tensorflow:serving:request_count_total", cancelled) or 0.0

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await server.answer(PREDICT_ROUTE, slow_bytes, request, context)

    async def scenario() -> None:
        methods = {"Call": grpc.unary_unary_rpc_method_handler(handler)}
        real = grpc.aio.server()
        real.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Slow", methods),))
        port = real.add_insecure_port("127.0.0.1:0")
        await real.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answered = await channel.unary_unary("/test.Slow/Call")(b"first")
            call = channel.unary_unary("/test.Slow/Call")(b"second")
            await asyncio.sleep(0.05)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        deadline = time.monotonic() + 5
        while server.limit.in_flight and time.monotonic() < deadline:  # the cancellation reaches the call's task
            await asyncio.sleep(0.01)
        await real.stop(None)
        assert answered == b"answer to first"

    with caplog.at_level("WARNING"):
        asyncio.run(scenario())
    assert server.limit.in_flight == 0 and server.stopping.in_flight == 0
    metrics.flush_requests()  # what a scrape of /metrics does first
    assert REGISTRY.get_sample_value(":tensorflow:serving:request_count_total", cancelled) == before + 1
    assert [record.getMessage() for record in caplog.records if record.levelname in ("ERROR", "CRITICAL")] == []
