"""Prometheus metrics per model, version and route, beside BentoML's own at /metrics.

TF Serving's names where it has the same thing (its `/tensorflow/serving/request_count` is exported to
Prometheus as `:tensorflow:serving:request_count`), so its dashboards work on this server:

    :tensorflow:serving:request_count{model_name, model_version, route, status}   inference requests, by HTTP status
    :tensorflow:serving:request_latency{model_name, model_version, route}         microseconds, as TF Serving's
    :tensorflow:cc:saved_model:load_attempt_count{model_path, status}              loads, status success | fail
    modelservice_model_unloads_total{model_name, model_version}
    modelservice_model_version_state{model_name, model_version, state}            1 for the version's state, else 0
    modelservice_batch_size{model, version, signature}                             items per model call (runtime.py)
    modelservice_concurrency_limit{route}                                          admitted in flight (admission.py)
    modelservice_requests_in_flight{route}                                         admitted, not answered yet (50 ms)

A request whose model was never resolved (an unknown name, a bad body) has empty model labels, so made-up
names in URLs cannot multiply the series.

Requests are tallied in the worker's memory and written to prometheus_client's shared memory files at most
every `REQUEST_FLUSH_SECONDS`, before every scrape of /metrics, and when the worker stops. Each write takes a
lock and a getpid(), and a request took three (the count, the latency's sum and its bucket): 4.1-4.6 µs a
request against 0.5-0.6 µs tallied (50,000 in a loop on the event loop, 2026-12-04).
"""

import asyncio
import bisect
import functools
import math
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BOUNDS = (*(250.0 * 2**power for power in range(16)), math.inf)  # 250 µs to about 8 s, then the rest
REQUESTS = Counter(
    ":tensorflow:serving:request_count",
    "Inference requests, by model version, route and HTTP status",
    ["model_name", "model_version", "route", "status"],
)
LATENCY = Histogram(
    ":tensorflow:serving:request_latency",
    "Inference request latency in microseconds, from the request's arrival to its answer",
    ["model_name", "model_version", "route"],
    buckets=LATENCY_BOUNDS[:-1],
)
LOADS = Counter(
    ":tensorflow:cc:saved_model:load_attempt_count",
    "Attempts to load a model version, by outcome",
    ["model_path", "status"],
)
UNLOADS = Counter("modelservice_model_unloads", "Model versions unloaded", ["model_name", "model_version"])
STATES = Gauge(
    "modelservice_model_version_state",
    "1 for the state each model version is in (START, LOADING, AVAILABLE, UNLOADING, END), 0 for the others",
    ["model_name", "model_version", "state"],
    multiprocess_mode="livemax",
)

IN_FLIGHT = Gauge(
    "modelservice_requests_in_flight",
    "Inference requests of the route admitted and not answered yet, those of clients that left included",
    ["route"],
    multiprocess_mode="livesum",
)

CONCURRENCY_LIMITS = Gauge(
    "modelservice_concurrency_limit",
    "Inference requests of the route admitted in flight at once; past it, 503 (serving/admission.py)",
    ["route"],
    multiprocess_mode="livesum",
)


class PacedWrite:
    """`write()` within `seconds` of being asked, once for every request in between: on the running event
    loop, or at once where none runs. Writing prometheus_client's shared series takes a lock and a getpid() a
    value, too much to do for every request."""

    def __init__(self, write: Callable[[], None], seconds: float):
        self.write = write
        self.seconds = seconds
        self._scheduled_on: asyncio.AbstractEventLoop | None = None  # the loop a write is due on, if any

    def ask(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to come back: written at once
            self.now()
            return
        if self._scheduled_on is loop:  # (a write due on a loop that has ended will never run: ask again)
            return
        self._scheduled_on = loop
        loop.call_later(self.seconds, self.now)

    def now(self) -> None:
        self._scheduled_on = None
        self.write()


REQUEST_FLUSH_SECONDS = 0.05
SeriesKey = tuple[str, str, str, str]  # model name, version, route, status


class RequestTally:
    """Request counts and latency histograms since the last write to the shared series."""

    def __init__(self) -> None:
        self.pending: dict[SeriesKey, list] = {}  # key → [count, latency sum µs, count per bucket]
        self.flushes = PacedWrite(self.flush, REQUEST_FLUSH_SECONDS)

    def observe(self, key: SeriesKey, microseconds: float) -> None:
        tally = self.pending.get(key)
        if tally is None:
            tally = self.pending[key] = [0, 0.0, [0] * len(LATENCY_BOUNDS)]
        tally[0] += 1
        tally[1] += microseconds
        tally[2][bisect.bisect_left(LATENCY_BOUNDS, microseconds)] += 1  # the first bound >= it, as observe()
        self.flushes.ask()

    def flush(self) -> None:
        pending, self.pending = self.pending, {}
        for key, (count, total, buckets) in pending.items():
            requests, latency = _request_series(*key)
            requests.inc(count)
            # Histogram has no bulk observe: its sum and per-bucket values take the window's totals
            # (test_request_metrics_match_prometheus_clients_own_observe keeps this in step with observe()).
            latency._sum.inc(total)
            for bucket, observed in zip(latency._buckets, buckets):
                if observed:
                    bucket.inc(observed)


REQUESTS_SEEN = RequestTally()


def observe_request(model: tuple[str, str] | None, route: str, status: int | str, seconds: float) -> None:
    """One answered request, in the shared series within REQUEST_FLUSH_SECONDS."""
    REQUESTS_SEEN.observe((*(model or ("", "")), route, str(status)), seconds * 1e6)


def flush_requests() -> None:
    """Write the requests tallied so far to the shared series now (a scrape, a stop)."""
    REQUESTS_SEEN.flushes.now()


@functools.lru_cache(maxsize=4096)
def _request_series(name: str, version: str, route: str, status: str) -> tuple[Counter, Histogram]:
    # `labels()` looks the series up under a lock on every call.
    return REQUESTS.labels(name, version, route, status), LATENCY.labels(name, version, route)


def set_state(name: str, version: int, state: StrEnum) -> None:
    """1 for `state`, 0 for every other member of its enum (model_manager.State)."""
    for known in type(state):
        STATES.labels(name, str(version), str(known)).set(1 if known == state else 0)
