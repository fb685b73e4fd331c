"""Clients for the tests that load a real server: keep-alive connections, each sending its next request once
answered (a closed loop)."""

import asyncio
import time
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

    return asyncio.run(load())
