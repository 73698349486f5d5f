"""The shared YClients limiter on the real PostgreSQL: several engines (as several processes) share one limit."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings
from shared.db.session import make_engine
from shared.ratelimit import PostgresRateLimiter, Reservation, Window


@dataclass(frozen=True)
class Call:
    """When a caller was let through and when its (simulated) call was done, local monotonic seconds."""

    entered: float
    done: float


def max_in_window(times: list[float], seconds: float) -> int:
    """The most calls in any half-open window (t - seconds, t] (how YClients counts)."""
    ordered = sorted(times)
    return max(sum(1 for s in ordered if end - seconds < s <= end) for end in ordered)


def worst_arrivals_in_window(calls: list[Call], seconds: float) -> int:
    """The most calls any window can hold when each one arrives anywhere between being let through and done.

    The fullest window ends at some call's earliest arrival ``T`` and holds every call that could have arrived
    in ``(T - seconds, T]``: let through by ``T`` and not done by ``T - seconds``.
    """
    return max(sum(1 for c in calls if c.entered <= end.entered and c.done > end.entered - seconds) for end in calls)


async def run_callers(limiters: list[PostgresRateLimiter], durations: list[float]) -> list[Call]:
    """One concurrent caller per duration, spread over the limiters, each call taking that long."""
    calls: list[Call] = []

    async def call(limiter: PostgresRateLimiter, duration: float) -> None:
        async with limiter.slot():
            entered = time.monotonic()
            await asyncio.sleep(duration)  # the HTTP call itself
            calls.append(Call(entered, time.monotonic()))

    await asyncio.gather(*(call(limiters[i % len(limiters)], d) for i, d in enumerate(durations)))
    return calls


async def completions(engine: AsyncEngine, name: str) -> tuple[list[float], list[float | None], float]:
    """The row's slots and completion times, and the database clock now."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT slots, completed, extract(epoch FROM clock_timestamp())::float8 AS now "
                    "FROM rate_limits WHERE name = :name"
                ),
                {"name": name},
            )
        ).one()
    return list(row.slots), list(row.completed), float(row.now)


async def test_two_engines_together_stay_within_every_window_counted_on_arrival(settings: Settings) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    windows = [Window(5, 1.0), Window(8, 3.0)]
    engines: list[AsyncEngine] = [make_engine(settings.DATABASE_URL, pool_size=4) for _ in range(2)]
    rng = random.Random(3)
    # Most calls are quick; a few take most of a second (a cold connection, a slow answer).
    durations = [rng.uniform(0.6, 1.0) if i % 6 == 0 else rng.uniform(0.0, 0.05) for i in range(20)]
    try:
        limiters = [PostgresRateLimiter(e, windows=windows, name=name, margin_s=0.05) for e in engines]
        started = time.monotonic()

        calls = await asyncio.wait_for(run_callers(limiters, durations), timeout=30)

        assert len(calls) == 20  # nobody was refused: they queued
        assert max_in_window([c.entered for c in calls], 1.0) <= 5
        # The three-second window is exact: however the slow calls' arrivals fall, never more than 8 in it.
        assert worst_arrivals_in_window(calls, 3.0) <= 8
        # Queued, not serialised needlessly: 20 calls at 8 per 3 s need a little over 6 s.
        assert time.monotonic() - started < 12
        slots, completed, _ = await completions(engines[0], name)
        assert len(completed) == len(slots) and None not in completed  # every call reported
        assert all(c >= s for s, c in zip(slots, completed, strict=True) if c is not None)
    finally:
        for engine in engines:
            await engine.dispose()


async def test_a_call_answered_late_holds_its_place_in_the_long_window(engine: AsyncEngine) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    limiter = PostgresRateLimiter(engine, windows=[Window(2, 2.0)], name=name, margin_s=0.0)

    slow, prompt, third = [(await run_callers([limiter], [d]))[0] for d in (0.5, 0.0, 0.0)]

    # Counted by its slot the first call would have let the third in 2 s after it was let through; counted
    # by its answer, 2 s after that.
    assert third.entered - slow.done >= 2.0 - 0.01
    assert third.entered - slow.entered >= 2.4
    assert prompt.entered - slow.entered < 1.3  # the spacing alone (1 s), not held up by the slow answer


async def test_a_report_records_an_upper_bound_of_the_arrival_against_its_slot(engine: AsyncEngine) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    limiter = PostgresRateLimiter(engine, windows=[Window(5, 1.0), Window(200, 60.0)], name=name)
    first = await limiter.reserve()
    second = await limiter.reserve()
    assert isinstance(first, Reservation) and isinstance(second, Reservation)

    await limiter.report(first, time.monotonic())

    slots, completed, now = await completions(engine, name)
    assert slots == [first.slot, second.slot]
    assert completed[0] is not None and first.slot <= completed[0] <= now
    assert completed[1] is None  # still in flight


async def test_a_report_for_a_slot_already_forgotten_changes_nothing(engine: AsyncEngine) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    limiter = PostgresRateLimiter(engine, windows=[Window(5, 1.0)], name=name)
    reserved = await limiter.reserve()
    assert isinstance(reserved, Reservation)

    forgotten = Reservation(reserved.slot - 100.0, 0.0, reserved.clock_offset, reserved.due)
    await limiter.report(forgotten, time.monotonic())

    assert (await completions(engine, name))[:2] == ([reserved.slot], [None])


async def test_the_yclients_limits_spread_five_per_second_then_queue(settings: Settings, engine: AsyncEngine) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    other = make_engine(settings.DATABASE_URL, pool_size=2)
    try:
        limiters = [
            PostgresRateLimiter(e, windows=[Window(5, 1.0), Window(200, 60.0)], name=name) for e in (engine, other)
        ]
        started = time.monotonic()

        calls = await asyncio.wait_for(run_callers(limiters, [0.0] * 12), timeout=30)

        first = sorted(c.entered - started for c in calls)
        assert max_in_window([c.entered for c in calls], 1.0) <= 5
        # Spread evenly, not fired in a burst, and never slower than the limit needs.
        assert all(b - a >= 0.15 for a, b in itertools.pairwise(first))
        assert first[4] < 1.0
        assert first[5] >= 1.0 and first[10] >= 2.0
    finally:
        await other.dispose()


async def test_a_limiter_without_windows_never_waits_nor_touches_the_row(engine: AsyncEngine) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    limiter = PostgresRateLimiter(engine, windows=[], name=name)
    async with limiter.slot():
        pass
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT 1 FROM rate_limits WHERE name = :name"), {"name": name})
        assert rows.first() is None


async def test_late_wake_ups_are_learnt_on_the_row_every_process_shares(settings: Settings) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    windows = [Window(2, 1.0)]
    engines: list[AsyncEngine] = [make_engine(settings.DATABASE_URL, pool_size=2) for _ in range(2)]

    async def oversleep(delay: float) -> None:
        # An overloaded host: every caller of this process wakes 0.3 s after its slot.
        await asyncio.sleep(delay + 0.3)

    try:
        slow = PostgresRateLimiter(engines[0], windows=windows, name=name, margin_s=0.0, sleep=oversleep)
        quiet = PostgresRateLimiter(engines[1], windows=windows, name=name, margin_s=0.0)
        for _ in range(4):  # the third waits (and wakes late), the fourth reports it
            async with slow.slot():
                pass
        async with quiet.slot():
            pass

        async with engines[1].connect() as conn:
            query = text("SELECT jitter_s FROM rate_limits WHERE name = :name")
            jitter = (await conn.execute(query, {"name": name})).scalar_one()
        # Still there after the quiet process's reservation: its unreported calls are counted that much later.
        assert jitter >= 0.25
    finally:
        for engine in engines:
            await engine.dispose()
