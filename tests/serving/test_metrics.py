"""Request metrics (serving/metrics.py): tallied in memory, written to the shared series in one flush."""

import asyncio

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from serving import metrics

ROUTE = "/test-metrics"
LATENCIES_SECONDS = [0.0001, 0.00025, 0.0003, 0.002, 0.002, 0.9, 12.0]  # on a bound, between bounds, past the last


def exported(route: str) -> dict[tuple[str, str], float]:
    """(sample name, le or status) → value of this route's request series, as a scrape would read them."""
    samples = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.labels.get("route") == route:
                samples[sample.name, sample.labels.get("le") or sample.labels.get("status", "")] = sample.value
    return samples


def latency_samples(route: str) -> dict[tuple[str, str], float]:
    return {key: value for key, value in exported(route).items() if "request_latency" in key[0]}


def test_request_metrics_match_prometheus_clients_own_observe():
    reference = Histogram(
        "reference_latency", "the same buckets", ["route"], buckets=metrics.LATENCY_BOUNDS[:-1], registry=None
    )
    registry = CollectorRegistry()
    registry.register(reference)
    for seconds in LATENCIES_SECONDS:
        metrics.observe_request(("classifier", "1"), ROUTE, 200, seconds)
        reference.labels(ROUTE).observe(seconds * 1e6)
    metrics.flush_requests()

    ours_name = ":tensorflow:serving:request_latency"
    expected = {
        (sample.name.replace("reference_latency", ours_name), sample.labels["le"]): sample.value
        for family in registry.collect()
        for sample in family.samples
        if "le" in sample.labels
    }
    ours = latency_samples(ROUTE)
    assert {key: value for key, value in ours.items() if key[1] not in ("", None)} == expected
    assert ours[":tensorflow:serving:request_latency_count", ""] == len(LATENCIES_SECONDS)
    assert ours[":tensorflow:serving:request_latency_sum", ""] == pytest.approx(sum(LATENCIES_SECONDS) * 1e6)
    assert exported(ROUTE)[":tensorflow:serving:request_count_total", "200"] == len(LATENCIES_SECONDS)


def test_on_the_event_loop_requests_reach_the_shared_series_within_the_flush_interval():
    route = f"{ROUTE}/deferred"

    async def scenario() -> list[float]:
        seen = []
        for status in (200, 200, 404):
            metrics.observe_request(None, route, status, 0.001)
        seen.append(exported(route).get((":tensorflow:serving:request_count_total", "200"), 0.0))
        await asyncio.sleep(metrics.REQUEST_FLUSH_SECONDS * 3)
        seen.append(exported(route)[":tensorflow:serving:request_count_total", "200"])
        seen.append(exported(route)[":tensorflow:serving:request_count_total", "404"])
        return seen

    assert asyncio.run(scenario()) == [0.0, 2.0, 1.0]


def test_outside_an_event_loop_a_request_is_written_at_once():
    route = f"{ROUTE}/at-once"
    metrics.observe_request(("classifier", "1"), route, "CANCELLED", 0.5)
    assert exported(route)[":tensorflow:serving:request_count_total", "CANCELLED"] == 1


def test_a_write_asked_for_on_an_event_loop_that_ended_is_made_on_the_next_one():
    writes = []
    paced = metrics.PacedWrite(lambda: writes.append("written"), 0.02)

    async def ask(then_wait: float) -> None:
        paced.ask()
        paced.ask()  # once for both
        await asyncio.sleep(then_wait)

    asyncio.run(ask(0))  # the loop ends before the write is due: it never runs there
    assert writes == []
    asyncio.run(ask(0.1))
    assert writes == ["written"]
