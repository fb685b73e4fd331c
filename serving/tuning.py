"""Latency tuning of the server process, measured with benchmarks/serving.py (64 clients, 2 CPU cores).

- The inference routes are answered in front of BentoML's middleware (`serving.fast_path`), so they are
  not traced: without a configured exporter (the default) every span was recorded and then dropped, which
  was ~30% of the per-request CPU.
- Garbage collection: the models and libraries loaded at start-up (~460k objects) are frozen out of the
  collector, and young collections run every 10,000 allocations instead of 700, so a request is not
  stalled behind full collections that re-scan TensorFlow's object graph (those took 100-400 ms).
- The GIL's switch interval is 0.2 ms instead of 5 ms. A model call runs in a worker thread while the
  event loop parses and answers other requests; the Python side of a TensorFlow call takes the GIL many
  times, and each time the busy loop may hold it for a whole interval (a classifier call of 1 ms alone
  took 11-14 ms in the loaded server). At 64 connections, 0.005 → 0.0002 s: /classify 1,720-1,890 →
  2,010 requests/s, /translate 520-720 → 840, /detect 270-300 → 330 (one run each; 1 and 0.05 ms
  were no better).
- BentoML 1.4's TimeoutMiddleware never cancels its per-request `call_later` timer, so each request's
  future and context (its tracing span included) stay alive for `traffic.timeout` seconds: at ~2,000
  requests/s that is a million live objects after a minute, and collections that scan them stall for
  hundreds of ms. The subclass below is the same middleware (same 504 after the same timeout) with the
  timer cancelled once the response has started.
"""

import asyncio
import gc
import sys

from bentoml._internal.server.http import traffic as bentoml_traffic
from fastapi.responses import JSONResponse

GC_THRESHOLDS = (10_000, 10, 100)
GIL_SWITCH_SECONDS = 0.0002


class CancellingTimeoutMiddleware(bentoml_traffic.TimeoutMiddleware):
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def started(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, started), loop=loop)
        try:
            await waiter
        except TimeoutError:
            if handler.cancel():
                response = JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"}, status_code=504
                )
                await response(scope, receive, send)
            return
        finally:
            timer.cancel()
        await handler


if hasattr(bentoml_traffic.TimeoutMiddleware, "_set_timer_out"):  # the BentoML 1.4 implementation this fixes
    bentoml_traffic.TimeoutMiddleware = CancellingTimeoutMiddleware


def release_memory() -> None:
    """Call once an unloaded model is unreferenced: the frozen start-up graph may hold its cycles, so thaw, collect,
    freeze again."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def settle_after_load() -> None:
    """Call once the models are loaded: keep the start-up object graph out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
