"""The adaptive in-flight limit (serving/admission.py), driven with made-up latencies and clock times.

A window is judged when the first answer after its end arrives: `window` below answers every admitted
request at one time, so each call judges the window before it.
"""

import asyncio

from prometheus_client import REGISTRY

from serving.admission import IN_FLIGHT_REFRESH_SECONDS, AdaptiveLimit


def window(limit: AdaptiveLimit, at: float, *, slow: int = 0, full: bool = True) -> int:
    """Admit up to the limit (or 2 when not `full`), answer them all at `at` (`slow` of them in 0.2 s, the
    others in 10 ms); the limit after."""
    admitted = 0
    while (full or admitted < 2) and limit.admit():
        admitted += 1
    for index in range(admitted):
        limit.done(0.2 if index < slow else 0.01, now=at)
    return limit.limit


def test_starts_at_the_floor_and_refuses_past_it():
    limit = AdaptiveLimit("/classify", 0.04, floor=8, ceiling=100)
    admitted = sum(limit.admit() for _ in range(20))
    assert admitted == 8 and limit.in_flight == 8  # the 12 refused are not in flight


def test_grows_by_a_quarter_a_window_while_full_and_fast_up_to_the_ceiling():
    limit = AdaptiveLimit("/classify", 0.04, floor=8, ceiling=20, window=0.5)
    assert [window(limit, at=0.5 * index) for index in range(7)] == [8, 10, 13, 17, 20, 20, 20]


def test_does_not_grow_while_the_limit_is_not_reached():
    limit = AdaptiveLimit("/classify", 0.04, floor=8, ceiling=100)
    assert [window(limit, at=0.5 * index, full=False) for index in range(4)] == [8, 8, 8, 8]


def test_shrinks_by_a_quarter_while_the_p99_is_over_the_target_but_not_below_the_floor():
    limit = AdaptiveLimit("/detect", 0.04, floor=8, ceiling=100)
    limit.limit = 64
    assert [window(limit, at=0.5 * index, slow=8) for index in range(9)] == [64, 48, 36, 27, 20, 15, 11, 8, 8]


def test_the_p99_lets_one_slow_answer_in_a_hundred_pass():
    limit = AdaptiveLimit("/classify", 0.04, floor=8, ceiling=1000)
    limit.limit = 200
    assert window(limit, at=0.0, slow=2) == 200
    assert window(limit, at=0.5, slow=4) == 250  # 2 slow of 200: within the p99
    assert window(limit, at=1.0) == 187  # 4 slow of 250: over it


def test_answers_within_one_window_are_judged_together():
    limit = AdaptiveLimit("/classify", 0.04, floor=8, ceiling=100, window=0.5)
    assert window(limit, at=0.0, slow=8) == 8
    assert window(limit, at=0.3) == 8  # the same window as the slow answers: judged later, with them
    assert window(limit, at=0.6) == 8  # slow: stays at the floor
    assert window(limit, at=1.2) == 10  # the window from 0.6: fast and full


def test_a_target_of_zero_keeps_the_ceiling():
    limit = AdaptiveLimit("/classify", 0.0, floor=8, ceiling=12)
    assert [window(limit, at=0.5 * index, slow=12) for index in range(3)] == [12, 12, 12]
    assert limit.in_flight == 0


def test_the_floor_never_exceeds_the_ceiling():
    limit = AdaptiveLimit("/classify", 0.04, floor=64, ceiling=10)
    assert limit.limit == 10 and sum(limit.admit() for _ in range(20)) == 10


def test_the_requests_in_flight_are_exposed_per_route():
    limit = AdaptiveLimit("/in-flight-test", 0.04, floor=4, ceiling=4)

    def exposed() -> float | None:
        return REGISTRY.get_sample_value("modelservice_requests_in_flight", {"route": "/in-flight-test"})

    assert [limit.admit() for _ in range(5)] == [True] * 4 + [False]
    assert exposed() == 4  # the refused one is not in flight
    limit.done(0.01, now=1.0)
    assert exposed() == 3


def test_on_an_event_loop_the_in_flight_gauge_follows_within_its_refresh_time():
    limit = AdaptiveLimit("/in-flight-loop-test", 0.04, floor=8, ceiling=8)

    def exposed() -> float | None:
        return REGISTRY.get_sample_value("modelservice_requests_in_flight", {"route": "/in-flight-loop-test"})

    async def scenario() -> list[float | None]:
        seen = []
        for admitted, answered in ((3, 0), (0, 1), (0, 2)):
            for _ in range(admitted):
                limit.admit()
            for _ in range(answered):
                limit.done(0.01, now=1.0)
            await asyncio.sleep(IN_FLIGHT_REFRESH_SECONDS * 2)
            seen.append(exposed())
        return seen

    assert asyncio.run(scenario()) == [3, 2, 0]
    assert limit.in_flight == 0
