"""Adaptive batching for model calls from concurrent requests.

Requests queue up while the model is busy; when it frees up, everything waiting (up to
`max_batch_size` items) goes through in one call. Under light load a request runs alone with no
added wait; under heavy load batches grow by themselves, which is what keeps latency flat.
"""

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BatchFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class _Pending:
    items: np.ndarray
    future: asyncio.Future


class AdaptiveBatcher:
    def __init__(self, fn: BatchFn, *, max_batch_size: int = 256, isolate_failures: bool = True):
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.isolate_failures = isolate_failures
        self._waiting: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # recent batch sizes, for metrics and tests

    async def __call__(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """Run `fn` on `items` (batch axis first) as part of a larger batch; return this request's rows."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(items, future))
        self._arrived.set()
        return await future

    def close(self) -> None:
        """Cancel the worker from any thread; requests already answered are not affected."""
        if self._worker is not None and not self._worker.done():
            self._worker.get_loop().call_soon_threadsafe(self._worker.cancel)

    async def _run(self) -> None:
        while True:
            if not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            batch = [self._waiting.popleft()]
            size = len(batch[0].items)
            while self._waiting and size + len(self._waiting[0].items) <= self.max_batch_size:
                batch.append(self._waiting.popleft())
                size += len(batch[-1].items)
            await self._execute(batch)

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
