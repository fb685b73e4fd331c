"""Adaptive batching for model calls from concurrent requests.

Requests queue up while the model is busy; when it frees up, what is waiting goes through in one call.
Under light load a request runs alone with no added wait; under heavy load batches grow by themselves,
which is what keeps latency flat.

A call takes at most half of the items the batcher held at its fullest over the last second (waiting or
in the running call), and at most `max_batch_size`. Clients that send their next request once answered
(a closed loop, as most clients are) then settle into two groups: one group's call runs while the other
group's answers go out and its next requests come in, so the model never waits for them. Taking everything
instead gathered all of them into one call, and the model sat idle while that whole group was answered
and sent again: at 64 connections /translate kept the model busy 73% of the time, and 96% with two groups
(benchmarks/serving.py, 2026-12-02).
"""

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BatchFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class _Pending:
    items: np.ndarray
    future: asyncio.Future


PEAK_WINDOW_SECONDS = 1.0


class AdaptiveBatcher:
    def __init__(self, fn: BatchFn, *, max_batch_size: int = 256, isolate_failures: bool = True):
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.isolate_failures = isolate_failures
        self._waiting: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for metrics and tests
        self._held = 0  # items waiting or in the running call
        self._peaks = [0, 0]  # the most items held in the previous and in the current window
        self._window_ends = 0.0

    async def __call__(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """Run `fn` on `items` (batch axis first) as part of a larger batch; return this request's rows."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(items, future))
        self._held += len(items)
        self._note_peak()
        self._arrived.set()
        return await future

    def next_batch_limit(self) -> int:
        """Half of the most items held lately (a whole lone request still goes), within `max_batch_size`."""
        self._note_peak()
        return min(self.max_batch_size, max(1, math.ceil(max(self._peaks) / 2)))

    def _note_peak(self) -> None:
        now = time.monotonic()
        if now >= self._window_ends:
            fresh = now - self._window_ends < PEAK_WINDOW_SECONDS  # else the previous window saw nothing
            self._peaks = [self._peaks[1] if fresh else 0, 0]
            self._window_ends = now + PEAK_WINDOW_SECONDS
        self._peaks[1] = max(self._peaks[1], self._held)

    def close(self) -> None:
        """Cancel the worker from any thread; requests already answered are not affected."""
        if self._worker is not None and not self._worker.done():
            self._worker.get_loop().call_soon_threadsafe(self._worker.cancel)

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            limit = self.next_batch_limit()
            batch = [self._waiting.popleft()]
            size = len(batch[0].items)
            while self._waiting and size + len(self._waiting[0].items) <= limit:
                batch.append(self._waiting.popleft())
                size += len(batch[-1].items)
            try:
                await self._execute(batch)
            finally:
                self._held -= size

    async def _execute(self, batch: list[_Pending]) -> None:
        self.batch_sizes = [*self.batch_sizes[-999:], sum(len(p.items) for p in batch)]
        try:
            outputs = await asyncio.to_thread(self.fn, np.concatenate([p.items for p in batch]))
        except Exception as error:
            if len(batch) == 1 or not self.isolate_failures:
                for pending in batch:
                    _settle(pending.future, error=error)
                return
            # One bad request must not fail its neighbours: retry each on its own.
            for pending in batch:
                await self._execute([pending])
            return
        start = 0
        for pending in batch:
            stop = start + len(pending.items)
            _settle(pending.future, result={key: value[start:stop] for key, value in outputs.items()})
            start = stop


def _settle(future: asyncio.Future, *, result=None, error: Exception | None = None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
