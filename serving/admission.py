"""How many inference requests of one route may be in flight: enough to keep the model's batches full,
few enough that the requests it accepts are answered within a latency target.

Past capacity a server can either queue (every client waits longer; at 1000 connections and a fixed limit
of 512 the accepted requests waited 0.9-1.7 s, issue 18) or refuse at once with 503 and `Retry-After`, so
that clients back off or go to another replica. The limit that separates the two is not one number: a
/classify call answers thousands of images a second here, a /detect call a few hundred, and the same
route costs more on a busier machine. So each route's limit moves with what its answers take, as
Envoy's adaptive concurrency filter and Netflix's concurrency-limits do (AIMD):

- every `window` seconds, the p99 latency of the route's answers in the window is compared with the target;
- above it, the limit shrinks to three quarters (never below `floor`);
- within it, and the limit was reached in the window (requests were refused, or it was full), the limit
  grows by a quarter (never above `ceiling`).

`floor` keeps enough in flight for batching to work and for moderate load never to see a 503 (64 by
default: `benchmarks/serving.py`'s 64 connections are never refused); `ceiling` is the fixed limit the
server had before (MODELSERVICE_MAX_CONCURRENCY). A target of 0 turns adaptation off: the limit is the ceiling.
"""

import math
import time
from dataclasses import dataclass, field

from serving import metrics

GROWTH = 1.25
SHRINK = 0.75
WINDOW_SECONDS = 0.5
# The in-flight gauge is written at most this often: once per request it took two writes to prometheus_client's
# shared memory file, each under a lock with a getpid(), 6% of the event loop's time at 3,400 gRPC calls/s.
IN_FLIGHT_REFRESH_SECONDS = 0.05
PERCENTILE = 0.99


@dataclass
class AdaptiveLimit:
    """The in-flight limit of one route; `admit` before a request, `done` with its latency after."""

    route: str
    target_seconds: float  # 0: no adaptation, the limit stays at `ceiling`
    floor: int
    ceiling: int
    window: float = WINDOW_SECONDS
    limit: int = field(init=False)
    in_flight: int = field(default=0, init=False)
    _latencies: list[float] = field(default_factory=list, init=False, repr=False)
    _reached: bool = field(default=False, init=False, repr=False)
    _window_ends: float | None = field(default=None, init=False, repr=False)  # the first answer opens one

    def __post_init__(self) -> None:
        self.floor = min(self.floor, self.ceiling)
        self.limit = self.floor if self.target_seconds else self.ceiling
        metrics.CONCURRENCY_LIMITS.labels(self.route).set(self.limit)
        gauge = metrics.IN_FLIGHT.labels(self.route)
        # The count at the time of writing, with every change since the last write.
        self._in_flight_writes = metrics.PacedWrite(lambda: gauge.set(self.in_flight), IN_FLIGHT_REFRESH_SECONDS)

    def admit(self) -> bool:
        """Whether one more request may start now (then it is counted in flight until `done`)."""
        if self.in_flight >= self.limit:
            self._reached = True
            return False
        self.in_flight += 1
        self._in_flight_writes.ask()
        self._reached |= self.in_flight == self.limit
        return True

    def done(self, seconds: float, now: float | None = None) -> None:
        """An admitted request was answered after `seconds` (at `now`, on the monotonic clock)."""
        self.in_flight -= 1
        self._in_flight_writes.ask()
        if not self.target_seconds:
            return
        now = time.monotonic() if now is None else now
        if self._window_ends is None or now >= self._window_ends:
            if self._window_ends is not None:
                self._adapt()
            self._window_ends = now + self.window
        self._latencies.append(seconds)

    def _adapt(self) -> None:
        before = self.limit
        if self._latencies:
            ordered = sorted(self._latencies)
            tail = ordered[min(len(ordered) - 1, math.ceil(PERCENTILE * len(ordered)) - 1)]
            if tail > self.target_seconds:
                self.limit = max(self.floor, math.floor(self.limit * SHRINK))
            elif self._reached:
                self.limit = min(self.ceiling, math.ceil(self.limit * GROWTH))
        if self.limit != before:
            metrics.CONCURRENCY_LIMITS.labels(self.route).set(self.limit)
        self._latencies.clear()
        self._reached = False
