"""Request timeouts on one timer (serving/deadlines.py): what asyncio.timeout gave each request."""

import asyncio
import time

import pytest

from serving import deadlines
from serving.deadlines import Deadlines


async def guarded(timer: Deadlines, seconds: float) -> str:
    """A request that takes `seconds`, answered "answered" in time or "timed out" past its deadline."""
    deadline = timer.start()
    try:
        await asyncio.sleep(seconds)
        return "answered"
    except asyncio.CancelledError:
        if not timer.expired(deadline):
            raise
        return "timed out"
    finally:
        timer.finish(deadline)


def test_a_request_past_its_deadline_is_told_so_and_can_still_answer():
    timer = Deadlines(0.1)

    async def scenario() -> tuple[str, float, bool]:
        started = time.monotonic()
        answer = await guarded(timer, 5)
        return answer, time.monotonic() - started, asyncio.current_task().cancelling() == 0

    answer, took, uncancelled = asyncio.run(scenario())
    assert answer == "timed out"
    assert 0.1 <= took < 0.1 + deadlines.PRUNE_SECONDS / 2  # at its own deadline, not at the next prune
    assert uncancelled


def test_requests_answered_in_time_are_not_cancelled_and_a_late_one_behind_them_still_expires():
    timer = Deadlines(0.2)

    async def scenario() -> list[str]:
        quick = [asyncio.create_task(guarded(timer, 0.001 * (index % 5))) for index in range(1000)]
        late = asyncio.create_task(guarded(timer, 5))
        return [*await asyncio.gather(*quick), await late]

    answers = asyncio.run(scenario())
    assert answers[:-1] == ["answered"] * 1000
    assert answers[-1] == "timed out"


def test_a_request_cancelled_from_outside_stays_cancelled():
    timer = Deadlines(30)

    async def scenario() -> None:
        request = asyncio.create_task(guarded(timer, 5))
        await asyncio.sleep(0.01)
        request.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(scenario())


def test_without_a_timeout_nothing_expires():
    assert asyncio.run(guarded(Deadlines(None), 0.05)) == "answered"


def test_each_event_loop_gets_its_own_timer():
    timer = Deadlines(0.05)
    assert asyncio.run(guarded(timer, 5)) == "timed out"
    assert asyncio.run(guarded(timer, 5)) == "timed out"  # the first loop's timer is gone with it


def test_answered_requests_behind_a_slow_one_are_dropped_once_there_are_many(monkeypatch):
    monkeypatch.setattr(deadlines, "PRUNE_SECONDS", 0.02)
    monkeypatch.setattr(deadlines, "COMPACT_ABOVE", 10)
    timer = Deadlines(30)

    async def scenario() -> int:
        slow = asyncio.create_task(guarded(timer, 0.3))
        await asyncio.sleep(0)
        await asyncio.gather(*(guarded(timer, 0) for _ in range(100)))
        await asyncio.sleep(0.1)  # a few prunes while the slow request holds the head
        held = len(timer._queue)
        slow.cancel()
        return held

    assert asyncio.run(scenario()) == 1


def test_a_request_cancelled_from_outside_as_well_as_expired_stays_cancelled():
    timer = Deadlines(0.05)

    async def scenario() -> None:
        request = asyncio.create_task(guarded(timer, 5))
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        # The client leaves just as the deadline falls due: both cancellations reach the task together.
        loop.call_at(timer._queue[0].due, request.cancel)
        with pytest.raises(asyncio.CancelledError):
            await request

    asyncio.run(scenario())
