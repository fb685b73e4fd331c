"""Clients for the tests that load a real server: keep-alive connections, each sending its next request once
answered (a closed loop)."""

import asyncio
import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


def closed_loop(url: str, body: dict[str, Any], *, clients: int, seconds: float) -> list[tuple[int, str]]:
    """POST `body` as JSON to `url` from `clients` connections for `seconds`; (status, Connection header) of
    every answer. A request that gets no answer raises."""

    async def load() -> list[tuple[int, str]]:
        answers: list[tuple[int, str]] = []
        until = time.monotonic() + seconds

        async def client(http: httpx.AsyncClient) -> None:
            while time.monotonic() < until:
                response = await http.post(url, json=body)
                answers.append((response.status_code, response.headers.get("connection", "")))

        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            await asyncio.gather(*(client(http) for _ in range(clients)))
        return answers

    with no_collector_pauses():
        return asyncio.run(load())


@contextmanager
def no_collector_pauses() -> Iterator[None]:
    """Keep the garbage collector from stalling every client at once.

    A full collection of a test process's heap (TensorFlow, the session's models) took 1.1 s here, in the
    middle of a load. A draining server rightly takes a second without requests for its clients gone, and
    stopped under them (the container test's lost request). Frozen, what already exists is not collected
    again, and a collection covers only what the load allocates."""
    if gc.get_freeze_count():  # already inside one
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
