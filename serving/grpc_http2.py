"""gRPC's wire protocol on uvicorn's HTTP/2 (zttp), for the servicers `serving.grpc_server` gives grpcio.

`MODELSERVICE_GRPC_SERVER=zttp` serves the same PredictionService, ModelService and Health servicers on the
same port, loop and batchers, with uvicorn's HTTP/2 protocol (whose framing, HPACK and flow control run in
zttp's Zig core) in place of grpcio's server. Why: on this project's 2-core machines the event loop is the
bottleneck, and grpcio's asyncio server costs it more per call than a whole JSON request over HTTP/1.1 (its
completion-queue round trips through a poller thread, a task per call and another watching for cancellation).
A no-op Predict served this way cost the loop 96 µs a call at a held 2,560 calls/s against grpcio's 169, and
answered 16,200 calls/s at 64 clients against grpcio's 6,700 (2026-12-04, 2-core AMD EPYC with AVX-512).

What a unary call is here: a POST to /<service>/<method> with `content-type: application/grpc`, a body of
length-prefixed messages (1 byte compressed flag, 4 bytes big-endian length), answered 200 with the response
message the same way and the status in the trailers (`grpc-status`, `grpc-message` percent-encoded). The
servicers' `context.abort` and `context.write` (Health's Watch streams its answers) are all they use.

As grpcio's server does: gzip and deflate messages are accepted (answers go uncompressed); a call whose client
resets its stream or leaves is cancelled, and one whose deadline (`grpc-timeout`) passes is cancelled and answered
DEADLINE_EXCEEDED; a stop sends GOAWAY first, and calls sent past it are refused so that clients retry them.
"""

import asyncio
import logging
import socket
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import grpc
import uvicorn
import zttp
from google.protobuf.message import DecodeError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.zttp_h2_impl import ZttpH2Protocol
from uvicorn.server import ServerState

from serving.inputs import receive_body

logger = logging.getLogger("modelservice")

GRPC_CONTENT_TYPE = b"application/grpc"
PREFIX_BYTES = 5  # compressed flag + 4-byte length
IDLE_CONNECTION_SECONDS = 3600.0  # gRPC channels stay open between calls; uvicorn's default closes them after 5 s
STREAMS_PER_CONNECTION = 4000
CLOSE_AFTER_GOAWAY_SECONDS = 1.0  # Go's HTTP/2 server waits as long: the client's frames already sent still arrive
NO_ERROR, REFUSED_STREAM = 0x0, 0x7  # HTTP/2 error codes (RFC 9113 section 7)
RECEIVE_WINDOW_BYTES = 16 * 2**20  # what grpc-go's window estimate grows to at most: 1.6 GB/s at a 10 ms round trip
DEFAULT_WINDOW_BYTES = 65_535  # HTTP/2's initial window, which zttp 0.0.35 keeps
SETTINGS_FRAME, WINDOW_UPDATE_FRAME = 0x4, 0x8  # HTTP/2 frame types (RFC 9113 section 6)
TASK = "modelservice.grpc_task"  # the scope key under which a call's task is found to cancel it
WINDOW_BITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}  # zlib's names for gRPC's encodings
ACCEPTED_ENCODINGS = b"identity,deflate,gzip"
TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
MESSAGE_SAFE = " !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"  # grpc-message is percent-encoded except printable ASCII


def connection_frame(frame_type: int, payload: bytes) -> bytes:
    """An HTTP/2 frame on stream 0 (the connection) with no flags (RFC 9113 section 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([frame_type, 0]) + bytes(4) + payload


# Sent with zttp's own SETTINGS on every connection: the stream windows, then the connection's, grown to
# RECEIVE_WINDOW_BYTES (see GrpcH2Protocol)
GROWN_WINDOWS = connection_frame(
    SETTINGS_FRAME,
    zttp.H2Settings.INITIAL_WINDOW_SIZE.to_bytes(2, "big") + RECEIVE_WINDOW_BYTES.to_bytes(4, "big"),
) + connection_frame(WINDOW_UPDATE_FRAME, (RECEIVE_WINDOW_BYTES - DEFAULT_WINDOW_BYTES).to_bytes(4, "big"))


class Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(details)
        self.code, self.details, self.trailers = code, details, trailers


@dataclass(frozen=True)
class _CallDetails:  # grpc.HandlerCallDetails, as a generic handler reads it
    method: str
    invocation_metadata: tuple = ()


class Handlers:
    """Where the generated `add_*Servicer_to_server` functions register their method handlers, as on a grpcio
    server: `handler(path)` finds them through grpc's public generic-handler interface."""

    def __init__(self) -> None:
        self._generic: list[grpc.GenericRpcHandler] = []
        self._found: dict[str, grpc.RpcMethodHandler] = {}  # only paths that name a method: they are few

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        """The generated code registers each method twice, the second time for grpcio's faster lookup."""

    def handler(self, path: str) -> grpc.RpcMethodHandler | None:
        if found := self._found.get(path):
            return found
        for generic in self._generic:
            if found := generic.service(_CallDetails(path)):
                self._found[path] = found
                return found
        return None


class Context:
    """What the servicers use of `grpc.aio.ServicerContext`."""

    def __init__(self, scope: Scope, send: Send, handler: grpc.RpcMethodHandler):
        self._scope, self._send, self._handler = scope, send, handler
        self.started = False

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Abort(code, details)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in self._scope["headers"]
            if not name.startswith(b":")
        )

    async def write(self, message: Any) -> None:
        """One message of a streamed answer."""
        await self.start()
        await self._send(
            {
                "type": "http.response.body",
                "body": framed(self._handler.response_serializer(message)),
                "more_body": True,
            }
        )

    async def start(self) -> None:
        if not self.started:
            self.started = True
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", GRPC_CONTENT_TYPE)],
                    "trailers": True,
                }
            )


def framed(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


class GrpcApp:
    """ASGI app: the unary and server-streaming methods of `handlers`, messages of at most `max_message_bytes`
    (after decompression)."""

    def __init__(self, handlers: Handlers, max_message_bytes: int):
        self.handlers = handlers
        self.max_message_bytes = max_message_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        task = scope[TASK] = asyncio.current_task()  # GrpcH2Protocol cancels it if the client resets the stream
        handler = self.handlers.handler(scope["path"])
        context = Context(scope, send, handler)
        deadline, extra = None, ()
        try:
            content_type, encoding, timeout = call_headers(scope)
            if scope["method"] != "POST" or not content_type.startswith(GRPC_CONTENT_TYPE):
                await _plain(send, 415, b"a gRPC call: POST with content-type application/grpc")
                return
            if handler is None or handler.request_streaming:
                raise Abort(grpc.StatusCode.UNIMPLEMENTED, f"unknown method {scope['path']}")
            if timeout is not None:
                deadline = ClientDeadline(task, timeout)
            request = handler.request_deserializer(await self.message(receive, encoding))
            if handler.response_streaming:
                await self.stream(handler, request, context)
                body = b""
            else:
                body = framed(handler.response_serializer(await handler.unary_unary(request, context)))
            code, details = grpc.StatusCode.OK, ""
        except asyncio.CancelledError:
            if deadline is None or not deadline.passed:
                return  # the client reset the stream or left: there is no one to answer
            body, code, details = b"", grpc.StatusCode.DEADLINE_EXCEEDED, "the client's deadline (grpc-timeout) passed"
        except Abort as abort:
            body, code, details, extra = b"", abort.code, abort.details, abort.trailers
        except DecodeError as error:
            body, code, details = b"", grpc.StatusCode.INVALID_ARGUMENT, f"the request message does not parse: {error}"
        except Exception as error:  # the servicers map their own errors; this is a fault of this module's
            logger.exception("unhandled error on %s", scope["path"])
            body, code, details = b"", grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}"
        finally:
            if deadline is not None:
                deadline.cancel()
        await context.start()
        await send({"type": "http.response.body", "body": body, "more_body": False})
        trailers = [(b"grpc-status", str(code.value[0]).encode()), *extra]
        if details:
            trailers.append((b"grpc-message", quote(details, safe=MESSAGE_SAFE).encode()))
        await send({"type": "http.response.trailers", "headers": trailers, "more_trailers": False})

    def too_large(self, size: int) -> Abort:
        return Abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"received message larger than max ({size - PREFIX_BYTES} vs. {self.max_message_bytes})",
        )

    @staticmethod
    async def stream(handler: grpc.RpcMethodHandler, request: Any, context: Context) -> None:
        """A streaming method is an async generator, or (as Health's Watch) a coroutine that calls `write`."""
        answers = handler.unary_stream(request, context)
        if not hasattr(answers, "__aiter__"):
            await answers
            return
        async for message in answers:
            await context.write(message)

    async def message(self, receive: Receive, encoding: bytes) -> bytes:
        """The one request message, checked against its prefix and the size limit, and decompressed if it was
        sent compressed."""
        try:
            body = await receive_body(receive, self.max_message_bytes + PREFIX_BYTES, self.too_large)
        except ClientDisconnect:
            raise asyncio.CancelledError from None
        if len(body) < PREFIX_BYTES or int.from_bytes(body[1:PREFIX_BYTES], "big") != len(body) - PREFIX_BYTES:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "the body is not one length-prefixed gRPC message")
        if body[0] == 0:
            return body[PREFIX_BYTES:]
        return self.decompressed(body[PREFIX_BYTES:], encoding)

    def decompressed(self, message: bytes, encoding: bytes) -> bytes:
        window_bits = WINDOW_BITS.get(encoding)
        if window_bits is None:
            raise Abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"a compressed message with grpc-encoding {encoding.decode('latin-1') or '(none)'}: "
                f"expected one of {ACCEPTED_ENCODINGS.decode()}",
                trailers=((b"grpc-accept-encoding", ACCEPTED_ENCODINGS),),  # as gRPC's protocol asks
            )
        inflate = zlib.decompressobj(window_bits)
        try:
            plain = inflate.decompress(message, self.max_message_bytes + 1)  # a small bomb stays small
        except zlib.error as error:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"the message does not decompress ({error})") from None
        if len(plain) > self.max_message_bytes:
            raise Abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"received message larger than max once decompressed (over {self.max_message_bytes} bytes)",
            )
        if not inflate.eof:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "the compressed message is cut short")
        return plain


def call_headers(scope: Scope) -> tuple[bytes, bytes, float | None]:
    """A call's content type, message encoding and timeout in seconds (None: none), read in one pass."""
    content_type, encoding, timeout = b"", b"", None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"grpc-encoding":
            encoding = value
        elif name == b"grpc-timeout":
            timeout = parse_timeout(value)
    return content_type, encoding, timeout


def parse_timeout(value: bytes) -> float:
    """gRPC's `grpc-timeout` header: 1 to 8 digits and a unit, as "250m" (250 ms)."""
    seconds_per_unit = TIMEOUT_UNITS.get(value[-1:])
    if seconds_per_unit is None or not 1 <= len(value) - 1 <= 8 or not value[:-1].isdigit():
        raise Abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"grpc-timeout {value.decode('latin-1')!r}: expected 1 to 8 digits and a unit (H, M, S, m, u or n)",
        )
    return int(value[:-1]) * seconds_per_unit


class ClientDeadline:
    """Cancels the call's task when the client's deadline passes: the client has stopped waiting, so the
    call's place in a batch goes to one whose client still is."""

    def __init__(self, task: asyncio.Task, seconds: float):
        self.passed = False
        self._task = task
        self._timer = asyncio.get_running_loop().call_later(seconds, self._pass)

    def _pass(self) -> None:
        self.passed = True
        self._task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()


async def _plain(send: Send, status: int, text: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": text, "more_body": False})


class CorkedTransport:
    """`transport`, with the writes made in one turn of the event loop sent in one system call at its end.

    A call's answer is three ASGI messages (headers, message, trailers), each of which uvicorn writes at once:
    three `send`s, and on loopback three trips through the receiver's TCP path in this thread. Node's HTTP server
    corks its sockets until the next tick for the same reason.
    """

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:  # the rest is the transport's own
        return getattr(self._transport, name)


class GrpcH2Protocol(ZttpH2Protocol):
    """uvicorn's HTTP/2 protocol, corked (`CorkedTransport`), with what a gRPC server does beside it:
    - receive windows of `RECEIVE_WINDOW_BYTES` for each stream and the connection: zttp keeps HTTP/2's initial
      64 KiB, so a request crossed a network at 64 KiB a round trip (`benchmarks/grpc_upload.py`). zttp has no
      setting for them; it credits each 32 KiB back as it parses them, whatever its own window, so the larger
      windows granted in frames of our own (a SETTINGS, whose second ACK zttp ignores, and a connection
      WINDOW_UPDATE) only let the client send sooner (tested in `tests/serving/test_grpc_http2.py`);
    - a stream the client resets (a cancelled call, a passed deadline) or a lost connection cancels its call;
    - a connection is retired with GOAWAY (NO_ERROR) after `STREAMS_PER_CONNECTION` calls, before zttp's flood
      guard ends it with ENHANCE_YOUR_CALM at 4,096 (zttp 0.0.35) and logs a warning each time;
    - a stop sends GOAWAY at once, so clients send their next calls elsewhere; calls already sent past it are
      refused with REFUSED_STREAM, which gRPC clients retry by themselves, where uvicorn answers them 503.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CorkedTransport(transport, self.loop))  # type: ignore[arg-type]
        self.transport.write(GROWN_WINDOWS)  # corked: it leaves with zttp's own SETTINGS
        self.streams, self.newest_stream = 0, 0
        self.last_stream_id: int | None = None  # the last stream this connection answers, once GOAWAY is sent
        self.closing: asyncio.TimerHandle | None = None

    def handle_request(self, event: zttp.Request) -> None:
        if self.last_stream_id is not None and event.stream_id > self.last_stream_id:
            self.conn.stream(event.stream_id).reset(REFUSED_STREAM)
            return
        super().handle_request(event)
        self.streams, self.newest_stream = self.streams + 1, event.stream_id
        if self.streams >= STREAMS_PER_CONNECTION:
            self.go_away(event.stream_id)

    def handle_rst_stream(self, event: zttp.RstStream) -> None:
        cycle = self.cycles.get(event.stream_id)
        if cycle is not None and not cycle.response_complete:
            _cancel(cycle)
        super().handle_rst_stream(event)

    def connection_lost(self, exc: Exception | None) -> None:
        for cycle in self.cycles.values():
            if not cycle.response_complete:
                _cancel(cycle)
        if self.closing is not None:
            self.closing.cancel()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        self.go_away(self.newest_stream)

    def go_away(self, last_stream_id: int) -> None:
        """Tell the client to open a new connection for calls after `last_stream_id`; this one closes once the
        calls up to it are answered."""
        if self.last_stream_id is None:
            self.last_stream_id = last_stream_id
            self.conn.close(NO_ERROR, last_stream_id)
            self.flush()
        self.shutdown_requested = True
        if not self.cycles:
            self._close_connection()

    def _close_connection(self) -> None:
        """Closed at once, or, after this server's own GOAWAY, a second after the last call was answered (or when
        the client closes it first): frames the client sent before it read the GOAWAY may still be on their way,
        and a socket closed with unread data resets the connection, which could lose the REFUSED_STREAMs and
        answers not yet read, so that the client saw its calls fail UNAVAILABLE instead of retrying them."""
        if self.transport.is_closing():
            return
        if self.last_stream_id is None:  # a second GOAWAY may not name a later stream than the first
            self.conn.close()
            self.flush()
            self.transport.close()
        elif self.closing is None:
            self.flush()
            self.closing = self.loop.call_later(CLOSE_AFTER_GOAWAY_SECONDS, self.transport.close)


def _cancel(cycle: Any) -> None:
    task = cycle.scope.get(TASK)
    if task is not None:
        task.cancel()


class Http2Server:
    """`app` on host:port over HTTP/2 with prior knowledge (gRPC's cleartext mode), on the running loop. The port
    is shared (SO_REUSEPORT) with the other workers' servers, as their HTTP port is."""

    def __init__(self, app: GrpcApp, host: str, port: int):
        self.config = uvicorn.Config(
            app,
            http="zttp",
            http2=True,
            lifespan="off",
            proxy_headers=False,
            access_log=False,
            log_config=None,
            timeout_keep_alive=IDLE_CONNECTION_SECONDS,
        )
        self.config.load()
        self.state = ServerState()
        self.host, self.port = host, port
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that
        # say so, and with it on, an answer written after a WINDOW_UPDATE waited for the client's delayed ACK
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError:
            listener.close()
            raise
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: GrpcH2Protocol(config=self.config, server_state=self.state, app_state={}, _loop=loop),
            sock=listener,
            backlog=self.config.backlog,
        )

    async def stop(self, grace_seconds: float) -> None:
        """Take no new connections; each open one is told to go away once its calls are answered (GOAWAY), and
        whatever is still running after `grace_seconds` is cut off."""
        if self.server is None:
            return
        self.server.close()
        for connection in list(self.state.connections):
            connection.shutdown()
        if self.state.tasks:
            await asyncio.wait(list(self.state.tasks), timeout=grace_seconds)
        for connection in list(self.state.connections):
            connection.transport.close()
        self.server = None
