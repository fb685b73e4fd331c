"""serving.grpc_http2 in this process: gRPC's framing, statuses and trailers as an ASGI app, and the corked writes
(tests/serving/test_grpc.py calls a real server with MODELSERVICE_GRPC_SERVER=zttp through grpcio's client)."""

import asyncio
from urllib.parse import unquote

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from serving.grpc_http2 import CorkedTransport, GrpcApp, Handlers, framed

CHECK = "/grpc.health.v1.Health/Check"
GRPC_HEADERS = [(b"content-type", b"application/grpc"), (b"te", b"trailers")]


class Failing(health.aio.HealthServicer):
    async def Check(self, request, context):
        if request.service == "abort":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "café at 100%; expected tea")
        raise ValueError("a bug")


def app_for(servicer: health.aio.HealthServicer, max_message_bytes: int = 1024) -> GrpcApp:
    handlers = Handlers()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, handlers)
    return GrpcApp(handlers, max_message_bytes)


def call(app: GrpcApp, path: str, body: bytes, headers=GRPC_HEADERS, method: str = "POST") -> dict:
    """One request through the app: its status, body and trailers."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(app(scope, receive, send))
    trailers = dict(next((m["headers"] for m in sent if m["type"] == "http.response.trailers"), []))
    return {
        "status": sent[0]["status"],
        "body": b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        "code": int(trailers[b"grpc-status"]) if b"grpc-status" in trailers else None,
        "message": unquote(trailers.get(b"grpc-message", b"").decode()),
    }


def check(service: str) -> bytes:
    return framed(health_pb2.HealthCheckRequest(service=service).SerializeToString())


def test_a_unary_call_is_answered_with_one_framed_message_and_status_ok_in_the_trailers():
    answer = call(app_for(health.aio.HealthServicer()), CHECK, check(""))
    assert answer["status"] == 200 and answer["code"] == grpc.StatusCode.OK.value[0]
    assert answer["body"][:5] == b"\x00" + (len(answer["body"]) - 5).to_bytes(4, "big")
    assert (
        health_pb2.HealthCheckResponse.FromString(answer["body"][5:]).status == health_pb2.HealthCheckResponse.SERVING
    )


@pytest.mark.parametrize(
    ("path", "body", "max_bytes", "code", "message"),
    [
        (CHECK, check("other"), 1024, grpc.StatusCode.NOT_FOUND, ""),
        ("/grpc.health.v1.Health/Explain", check(""), 1024, grpc.StatusCode.UNIMPLEMENTED, "unknown method"),
        (CHECK, check("")[:-1], 1024, grpc.StatusCode.INVALID_ARGUMENT, "not one length-prefixed gRPC message"),
        (CHECK, b"\x01" + check("")[1:], 1024, grpc.StatusCode.UNIMPLEMENTED, "send them uncompressed"),
        (CHECK, check("x" * 40), 16, grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max (42 vs. 16)"),
        (CHECK, framed(b"\xff\xff\xff"), 1024, grpc.StatusCode.INVALID_ARGUMENT, "does not parse"),
    ],
    ids=["unknown-service", "unknown-method", "cut-message", "compressed", "too-large", "not-protobuf"],
)
def test_each_faulty_call_gets_the_status_a_grpc_client_expects(path, body, max_bytes, code, message):
    answer = call(app_for(health.aio.HealthServicer(), max_bytes), path, body)
    assert answer["status"] == 200 and answer["body"] == b""
    assert answer["code"] == code.value[0]
    assert message in answer["message"]


def test_an_abort_keeps_its_message_percent_encoded_and_a_bug_is_internal_not_a_crash():
    app = app_for(Failing())
    aborted = call(app, CHECK, check("abort"))
    assert aborted["code"] == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert aborted["message"] == "café at 100%; expected tea"
    broken = call(app, CHECK, check(""))
    assert (broken["code"], broken["message"]) == (grpc.StatusCode.INTERNAL.value[0], "internal error: ValueError")


def test_what_is_not_a_grpc_call_gets_415():
    app = app_for(health.aio.HealthServicer())
    assert call(app, CHECK, b"{}", headers=[(b"content-type", b"application/json")])["status"] == 415
    assert call(app, CHECK, b"", method="GET")["status"] == 415


class Recording:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0


def test_the_writes_of_one_turn_of_the_loop_leave_in_one_write_at_its_end():
    async def scenario() -> list[list[bytes]]:
        real = Recording()
        corked = CorkedTransport(real, asyncio.get_running_loop())
        corked.write(b"headers|")
        corked.write(bytearray(b"message|"))
        corked.write(b"trailers")
        seen = [list(real.writes)]
        assert corked.get_write_buffer_size() == 24
        await asyncio.sleep(0)
        seen.append(list(real.writes))
        corked.write(b"next")
        corked.close()  # flushes first
        seen.append(list(real.writes))
        assert real.closed
        return seen

    before, after_turn, after_close = asyncio.run(scenario())
    assert before == []
    assert after_turn == [b"headers|message|trailers"]
    assert after_close == [b"headers|message|trailers", b"next"]


def test_an_aborted_connection_drops_what_it_held():
    async def scenario() -> Recording:
        real = Recording()
        corked = CorkedTransport(real, asyncio.get_running_loop())
        corked.write(b"never sent")
        corked.abort()
        await asyncio.sleep(0)
        return real

    real = asyncio.run(scenario())
    assert real.aborted and real.writes == []
