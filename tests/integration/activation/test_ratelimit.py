"""The shared YClients limiter on the real PostgreSQL: several engines (as several processes) share one limit."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db.session import make_engine
from shared.ratelimit import PostgresRateLimiter, Window


def max_in_window(times: list[float], seconds: float) -> int:
    """The most calls in any half-open window (t - seconds, t] (how YClients counts)."""
    ordered = sorted(times)
    return max(sum(1 for s in ordered if end - seconds < s <= end) for end in ordered)


async def run_acquirers(limiters: list[PostgresRateLimiter], count: int) -> list[float]:
    """`count` concurrent callers spread over the limiters; returns when each was let through."""
    times: list[float] = []

    async def call(limiter: PostgresRateLimiter) -> None:
        await limiter.acquire()
        times.append(time.monotonic())

    await asyncio.gather(*(call(limiters[i % len(limiters)]) for i in range(count)))
    return times


async def test_two_engines_together_stay_within_every_window(settings: Settings) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    windows = [Window(5, 1.0), Window(8, 3.0)]
    engines: list[AsyncEngine] = [make_engine(settings.DATABASE_URL, pool_size=4) for _ in range(2)]
    try:
        limiters = [PostgresRateLimiter(e, windows=windows, name=name, margin_s=0.05) for e in engines]
        started = time.monotonic()

        times = await asyncio.wait_for(run_acquirers(limiters, 20), timeout=30)

        assert len(times) == 20  # nobody was refused: they queued
        assert max_in_window(times, 1.0) <= 5
        assert max_in_window(times, 3.0) <= 8
        # Queued, not serialised needlessly: 20 calls at 8 per 3 s need a little over 6 s.
        assert time.monotonic() - started < 10
    finally:
        for engine in engines:
            await engine.dispose()


async def test_the_yclients_limits_spread_five_per_second_then_queue(settings: Settings, engine: AsyncEngine) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    other = make_engine(settings.DATABASE_URL, pool_size=2)
    try:
        limiters = [
            PostgresRateLimiter(e, windows=[Window(5, 1.0), Window(200, 60.0)], name=name) for e in (engine, other)
        ]
        started = time.monotonic()

        times = await asyncio.wait_for(run_acquirers(limiters, 12), timeout=30)

        first = sorted(t - started for t in times)
        assert max_in_window(times, 1.0) <= 5
        # Spread evenly, not fired in a burst, and never slower than the limit needs.
        assert all(b - a >= 0.15 for a, b in itertools.pairwise(first))
        assert first[4] < 1.0
        assert first[5] >= 1.0 and first[10] >= 2.0
    finally:
        await other.dispose()


async def test_a_limiter_without_windows_never_waits(engine: AsyncEngine) -> None:
    limiter = PostgresRateLimiter(engine, windows=[], name="unused")
    assert await limiter.reserve() == 0.0


async def test_late_wake_ups_widen_the_windows_for_every_process(settings: Settings) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    windows = [Window(2, 1.0)]
    engines: list[AsyncEngine] = [make_engine(settings.DATABASE_URL, pool_size=2) for _ in range(2)]

    async def oversleep(delay: float) -> None:
        # An overloaded host: every caller of this process wakes 0.3 s after its slot.
        await asyncio.sleep(delay + 0.3)

    try:
        slow = PostgresRateLimiter(engines[0], windows=windows, name=name, margin_s=0.0, sleep=oversleep)
        quiet = PostgresRateLimiter(engines[1], windows=windows, name=name, margin_s=0.0)
        for _ in range(3):  # the third waits (and wakes late), the fourth reports it
            await slow.acquire()
        await slow.acquire()
        first = await quiet.reserve()
        second = await quiet.reserve()
        third = await quiet.reserve()
        # Without the learnt jitter the third slot would be exactly one window after the first.
        assert third - first >= 1.0 + 0.25
        assert second >= first
    finally:
        for engine in engines:
            await engine.dispose()
