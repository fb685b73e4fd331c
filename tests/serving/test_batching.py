"""The adaptive batcher: requests that arrive while the model is busy share the next call."""

import asyncio
import time

import numpy as np
import pytest

from serving.batching import AdaptiveBatcher


def slow_double(items: np.ndarray) -> dict[str, np.ndarray]:
    if np.any(items < 0):
        raise ValueError("negative input")
    time.sleep(0.02)  # a model call long enough for other requests to queue behind it
    return {"y": items * 2, "n": np.full(len(items), len(items))}


async def submit_all(batcher: AdaptiveBatcher, requests: list[np.ndarray]) -> list:
    return await asyncio.gather(*(batcher(request) for request in requests), return_exceptions=True)


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    batcher = AdaptiveBatcher(slow_double, max_batch_size=16)
    requests = [np.array([float(i), float(i) + 0.5]) for i in range(20)]
    results = asyncio.run(submit_all(batcher, requests))
    for request, result in zip(requests, results):
        np.testing.assert_array_equal(result["y"], request * 2)
    assert max(batcher.batch_sizes) > 2  # batched, not one call per request
    assert max(batcher.batch_sizes) <= 16
    assert sum(batcher.batch_sizes) == 40


def test_a_lone_request_runs_at_once_without_waiting_for_company():
    batcher = AdaptiveBatcher(slow_double, max_batch_size=64)
    started = time.perf_counter()
    result = asyncio.run(batcher(np.array([1.0])))
    assert time.perf_counter() - started < 0.5
    assert result["n"].tolist() == [1]


def test_batch_size_one_disables_batching():
    batcher = AdaptiveBatcher(slow_double, max_batch_size=1)
    asyncio.run(submit_all(batcher, [np.array([1.0]) for _ in range(5)]))
    assert batcher.batch_sizes == [1] * 5


def test_one_failing_request_does_not_fail_its_batch_neighbours():
    batcher = AdaptiveBatcher(slow_double, max_batch_size=32)
    requests = [np.array([1.0]), np.array([-1.0]), np.array([3.0])]
    results = asyncio.run(submit_all(batcher, [np.array([0.0]), *requests]))
    assert results[1]["y"].tolist() == [2.0]
    assert isinstance(results[2], ValueError)
    assert results[3]["y"].tolist() == [6.0]


def test_the_error_of_a_lone_request_reaches_its_caller():
    batcher = AdaptiveBatcher(slow_double)
    with pytest.raises(ValueError, match="negative"):
        asyncio.run(batcher(np.array([-2.0])))


def test_the_runtime_counts_the_items_of_each_model_call(trained_classifier):
    """What /metrics exports as modelservice_batch_size: one observation per model call, of its item count."""
    from prometheus_client import REGISTRY

    from serving import store
    from serving.runtime import ModelRuntime

    runtime = ModelRuntime(store.load(trained_classifier[2]))
    labels = {"model": runtime.model.name, "version": runtime.model.version, "signature": "serving_default"}

    def observed() -> tuple[float, float]:
        return tuple(
            REGISTRY.get_sample_value(f"modelservice_batch_size_{part}", labels) or 0.0 for part in ("sum", "count")
        )

    before = observed()
    images = [np.zeros((1, 8, 8, 1), np.float32)] * 3 + [np.zeros((2, 8, 8, 1), np.float32)]

    async def concurrently() -> None:
        await asyncio.gather(*(runtime.run("serving_default", batch) for batch in images))

    asyncio.run(asyncio.wait_for(concurrently(), 60))
    total, calls = (after - earlier for after, earlier in zip(observed(), before))
    assert total == 5  # every item once, however the calls were batched
    assert 1 <= calls <= 4


def test_a_closed_loop_of_clients_splits_into_two_groups_so_the_model_never_waits_for_answers():
    batcher = AdaptiveBatcher(slow_double, max_batch_size=64)

    async def client(index: int) -> None:
        for step in range(5):  # the next request once the previous is answered, as a client in a loop sends it
            result = await batcher(np.array([float(index * 100 + step)]))
            assert result["y"].tolist() == [2.0 * (index * 100 + step)]

    async def clients() -> None:
        await asyncio.gather(*(client(index) for index in range(8)))

    asyncio.run(clients())
    assert batcher.batch_sizes[0] == 4  # half of the 8 held, not all of them
    assert max(batcher.batch_sizes) <= 4
    assert sum(batcher.batch_sizes) == 40


def test_the_limit_is_half_of_the_most_items_held_lately_and_never_below_one():
    batcher = AdaptiveBatcher(slow_double, max_batch_size=6)
    assert batcher.next_batch_limit() == 1
    asyncio.run(submit_all(batcher, [np.array([1.0, 2.0, 3.0])] * 3))  # 9 items held at once
    assert batcher.next_batch_limit() == 5  # ceil(9 / 2), within max_batch_size 6
    assert batcher.batch_sizes == [3, 3, 3]  # whole requests: a second one of 3 items would pass 5
    big = AdaptiveBatcher(slow_double, max_batch_size=4)
    assert asyncio.run(big(np.arange(10.0)))["n"].tolist() == [10] * 10  # a lone request larger than the limit runs
