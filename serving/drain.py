"""A graceful stop that loses no request: SIGTERM first drains, then hands over to uvicorn's shutdown.

Uvicorn stops on SIGTERM at once: it finishes the requests in flight, but closes every keep-alive connection
that is idle at that moment, and a client whose next request is already on its way gets its connection closed
under it (measured: one failed request per connection of a 64-client load). `Drain`, the outermost ASGI
layer, catches SIGTERM first and keeps serving for a while: every response says `Connection: close`, so
each client's connection ends cleanly after its answer; `/readyz` answers 503, so a load balancer or
Kubernetes sends no new traffic. Once nothing has been in flight for `QUIET_SECONDS`, counted from the signal at
the earliest, or after `seconds` at most, it passes the signal on to uvicorn, which stops as before. A second
SIGTERM stops at once.

The gRPC API (`serving.grpc_server`) shares the same `Stopping`: its calls count as in flight, and its health
service answers NOT_SERVING from the moment the drain starts.
"""

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("modelservice")

# Counted from the signal too: a client between two requests when SIGTERM comes (its next one not yet sent)
# must not find the port closed. Half a second was too short on a loaded machine (a CI run lost requests).
QUIET_SECONDS = 1.0
CHECK_SECONDS = 0.05
# A check that comes this much later than asked found an event loop that was busy or stalled: the clients that
# connected meanwhile wait in the listen backlog, not yet counted as requests, so that is not quiet.
STALL_SECONDS = 0.1
READY_PATHS = ("/readyz",)


@dataclass
class Stopping:
    """What one server's HTTP and gRPC sides share about a stop: the calls in flight on both, and whether a
    drain has begun (all on the event loop's thread)."""

    draining: bool = False
    in_flight: int = 0
    last_activity: float = field(default_factory=time.monotonic)
    _on_drain: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def started(self) -> None:
        self.in_flight += 1
        self.last_activity = time.monotonic()

    def finished(self) -> None:
        self.in_flight -= 1
        self.last_activity = time.monotonic()

    def quiet(self) -> bool:
        return self.in_flight == 0 and time.monotonic() - self.last_activity >= QUIET_SECONDS

    def on_drain(self, callback: Callable[[], None]) -> None:
        self._on_drain.append(callback)

    def drain(self) -> None:
        self.draining = True
        self.last_activity = time.monotonic()
        for callback in self._on_drain:
            callback()


class Drain:
    """ASGI middleware: on SIGTERM, drain for at most `seconds` (0: stop at once), then stop as uvicorn does."""

    def __init__(self, app: ASGIApp, *, seconds: float, stopping: Stopping | None = None):
        self.app = app
        self.seconds = seconds
        self.stopping = stopping or Stopping()
        self._stop: Callable[[int, Any], Any] | None = None

    @property
    def draining(self) -> bool:
        return self.stopping.draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self._take_over_sigterm()
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.draining and scope["path"] in READY_PATHS:
            response = JSONResponse(
                {"error": "the server is stopping"}, status_code=503, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        self.stopping.started()
        try:
            await self.app(scope, receive, self._closing(send))
        finally:
            self.stopping.finished()

    def _closing(self, send: Send) -> Send:
        async def send_closing(message: Message) -> None:
            if self.draining and message["type"] == "http.response.start":
                headers = [(name, value) for name, value in message.get("headers", []) if name.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return send_closing

    def _take_over_sigterm(self) -> None:
        """Put the drain in front of the SIGTERM handler the server installed (uvicorn's), in its main thread."""
        previous = signal.getsignal(signal.SIGTERM)
        if self.seconds <= 0 or not callable(previous) or self._stop is not None:
            return
        self._stop = previous
        loop = asyncio.get_running_loop()

        def on_sigterm(signum: int, frame: Any) -> None:
            if self.draining:  # asked twice: stop now
                logger.warning("a second SIGTERM: stopping now, without waiting for the drain")
                previous(signum, frame)
                return
            self.stopping.draining = True  # at once: a second SIGTERM, even before the loop runs again, stops
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_stop(signum, frame)))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _drain_then_stop(self, signum: int, frame: Any) -> None:
        self.stopping.drain()
        started = time.monotonic()
        logger.info("SIGTERM: draining (Connection: close, /readyz 503) for at most %g s", self.seconds)
        why = f"after {self.seconds:g} s, the most it waits"
        while time.monotonic() - started < self.seconds:
            asleep = time.monotonic()
            await asyncio.sleep(CHECK_SECONDS)
            if time.monotonic() - asleep > CHECK_SECONDS + STALL_SECONDS:
                self.stopping.last_activity = time.monotonic()  # stalled, not quiet: see STALL_SECONDS
            elif self.stopping.quiet():
                why = f"quiet for {QUIET_SECONDS:g} s"
                break
        logger.info("drained in %.1f s (%s): stopping", time.monotonic() - started, why)
        assert self._stop is not None
        self._stop(signum, frame)
