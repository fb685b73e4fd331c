"""Request timeouts for the inference routes, HTTP and gRPC: one timer for every request in flight.

`asyncio.timeout` schedules a timer for each request and cancels it after the answer: 6.4-7.4 µs a request
on uvloop, against 1.6-2.8 µs here (loops of 50,000, 2026-12-04). Every request of a route has the same timeout,
so deadlines fall due in the order the requests arrived: a queue, checked by one timer set for its head's
deadline (and at least every `PRUNE_SECONDS`, which drops the answered requests from its head), is enough.

    deadline = deadlines.start()      # in the request's task
    try:
        answer = await handle()
    except asyncio.CancelledError:
        if not deadlines.expired(deadline):
            raise                     # cancelled from outside (a client that left): stays cancelled
        answer = timed_out()          # the task is uncancelled; answer it
    finally:
        deadlines.finish(deadline)
"""

import asyncio
from collections import deque

PRUNE_SECONDS = 1.0
COMPACT_ABOVE = 4096


class Deadline:
    """One request's: its task, when it falls due, and whether it was answered or expired first."""

    __slots__ = ("answered", "cancelling", "due", "expired", "task")

    def __init__(self, task: asyncio.Task, due: float):
        self.task = task
        self.cancelling = task.cancelling()  # cancellations already asked for
        self.due = due
        self.answered = False
        self.expired = False


class Deadlines:
    """`seconds` after it started, a request's task is cancelled, and `expired` tells the request so
    (`seconds` None: never)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._queue: deque[Deadline] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> Deadline | None:
        if self.seconds is None:
            return None
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a test's): the old one's timer will never run
            self._loop, self._timer = loop, None
            self._queue.clear()
        task = asyncio.current_task()
        assert task is not None, "a deadline starts in the request's task"
        deadline = Deadline(task, loop.time() + self.seconds)
        self._queue.append(deadline)
        if self._timer is None:
            self._timer = loop.call_at(min(deadline.due, loop.time() + PRUNE_SECONDS), self._check)
        return deadline

    def finish(self, deadline: Deadline | None) -> None:
        if deadline is not None:
            deadline.answered = True

    def expired(self, deadline: Deadline | None) -> bool:
        """Whether `deadline` cancelled its task; if so its cancellation is taken back, so that it can answer,
        unless the task was also cancelled from outside (as asyncio.timeout decides)."""
        if deadline is None or not deadline.expired:
            return False
        return deadline.task.uncancel() <= deadline.cancelling

    def _check(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        queue = self._queue
        if len(queue) > COMPACT_ABOVE:  # a slow request at the head holds the answered ones behind it
            queue = self._queue = deque(deadline for deadline in queue if not deadline.answered)
        while queue and (queue[0].answered or queue[0].due <= now):
            deadline = queue.popleft()
            if not deadline.answered:
                deadline.expired = True
                deadline.task.cancel()
        if queue:
            self._timer = loop.call_at(min(queue[0].due, now + PRUNE_SECONDS), self._check)
