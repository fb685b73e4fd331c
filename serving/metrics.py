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
"""

import functools
from enum import StrEnum

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    ":tensorflow:serving:request_count",
    "Inference requests, by model version, route and HTTP status",
    ["model_name", "model_version", "route", "status"],
)
LATENCY = Histogram(
    ":tensorflow:serving:request_latency",
    "Inference request latency in microseconds, from the request's arrival to its answer",
    ["model_name", "model_version", "route"],
    buckets=[250 * 2**power for power in range(16)],  # 250 µs to about 8 s
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


def observe_request(model: tuple[str, str] | None, route: str, status: int, seconds: float) -> None:
    count, latency = _request_series(*(model or ("", "")), route, status)
    count.inc()
    latency.observe(seconds * 1e6)


@functools.lru_cache(maxsize=4096)
def _request_series(name: str, version: str, route: str, status: int) -> tuple[Counter, Histogram]:
    # `labels()` looks the series up under a lock on every call: a tenth of an inference request's own CPU.
    return REQUESTS.labels(name, version, route, str(status)), LATENCY.labels(name, version, route)


def set_state(name: str, version: int, state: StrEnum) -> None:
    """1 for `state`, 0 for every other member of its enum (model_manager.State)."""
    for known in type(state):
        STATES.labels(name, str(version), str(known)).set(1 if known == state else 0)
