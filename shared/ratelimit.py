"""The YClients rate limit held across every process and host, on one PostgreSQL row (YCLIENTS.md §4, DESIGN §6).

Why PostgreSQL and not Redis: every service already depends on it (nothing to add to compose or to operate),
its clock is one clock for all processes and hosts, and a row lock serialises reservations without a separate
lock service. The load is a few statements per YClients call, which is capped at 5 per second anyway.

Algorithm: a sliding-window log with reservation. The row ``rate_limits[name]`` keeps the times (database
clock, epoch seconds) of the last ``max(count)`` calls reserved, some of them possibly still in the future.
A caller locks the row, takes the earliest time ``t`` that is not before the last reservation and leaves
fewer than ``count`` reservations in ``(t - seconds, t]`` for every window, appends ``t``, commits, and sleeps
until ``t``. Reservations are handed out in order, so checking the windows that end at ``t`` is enough:
no later window can hold more calls than the one ending at its own newest reservation.
Under a burst callers queue (each sleeps until its slot), spaced evenly over the shortest window; none is
refused.

The platform counts calls when they arrive, not when we send them, so two calls' network and scheduling
delays can differ. Every window is widened by ``margin_s`` plus the jitter the callers really see: each caller
measures how late it woke up for its slot and reports it with its next reservation; the row keeps a decaying
maximum. On a quiet host the windows stay tight (the limit is used to ~96%); on a loaded one they widen by
what the load costs, so a late first call cannot push a sixth one into YClients' one-second window.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings

log = logging.getLogger(__name__)

YCLIENTS_LIMIT = "yclients"
# Arrival jitter tolerated between two of our calls (event-loop and network delays on a busy host). It costs
# throughput: the per-second window admits at most 1 / (1 + margin) of the limit (0.96 here, the target
# `make bench` B4 holds us to), so it is as small as the measured jitter allows.
DEFAULT_MARGIN_S = 0.04

# How fast the learnt jitter forgets: per reservation (at 5 calls/s a spike halves in about 3 s).
JITTER_DECAY = 0.95
# A single pathological wake-up (a GC pause, a stalled host) must not stall the limit for long.
MAX_JITTER_S = 1.0

_LOCK_AND_READ = text(
    """
    INSERT INTO rate_limits AS r (name) VALUES (:name)
    ON CONFLICT (name) DO UPDATE SET name = r.name
    RETURNING r.slots, r.jitter_s, extract(epoch FROM clock_timestamp())::float8 AS now
    """
)
_STORE = text(
    "UPDATE rate_limits SET slots = :slots, jitter_s = :jitter, updated_at = now() WHERE name = :name"
).bindparams(bindparam("slots", type_=ARRAY(DOUBLE_PRECISION)))


@dataclass(frozen=True)
class Window:
    """At most ``count`` calls in any ``seconds``-long window."""

    count: int
    seconds: float


def next_slot(slots: Sequence[float], now: float, windows: Sequence[Window], margin_s: float = 0.0) -> float:
    """The earliest time, not before ``now`` nor the last reservation, that keeps every window within its count.

    ``slots`` are the reservations so far, in ascending order.
    """
    slot = max(now, slots[-1]) if slots else now
    if slots and windows:
        # Calls are spread evenly over the shortest window instead of fired in bursts: five requests sent
        # at once reach YClients queued behind each other (and behind five new connections), which is the
        # arrival jitter that turns the next second's first call into a 429.
        shortest = min(windows, key=lambda w: w.seconds)
        slot = max(slot, slots[-1] + shortest.seconds / shortest.count)
    for window in windows:
        if len(slots) >= window.count:
            slot = max(slot, slots[-window.count] + window.seconds + window_margin(window, margin_s))
    return slot


def window_margin(window: Window, margin_s: float) -> float:
    """How much a window is widened: the fixed jitter, plus 1% of the length of windows longer than a second.

    A call that was due first can reach YClients late (a busy event loop, a slow connect) while a later one
    arrives on time; over a one-minute window that skew grows with load, so the margin grows with the window.
    """
    return margin_s + (0.01 * window.seconds if window.seconds > 1 else 0.0)


def yclients_windows(settings: Settings) -> list[Window]:
    """The platform's limits from the settings (a non-positive value disables that window)."""
    pairs = ((settings.YCLIENTS_RATE_PER_SECOND, 1.0), (settings.YCLIENTS_RATE_PER_MINUTE, 60.0))
    return [Window(count, seconds) for count, seconds in pairs if count > 0]


class PostgresRateLimiter:
    """Waits until one more call fits every window, counting the calls of every process sharing the database."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        windows: Sequence[Window],
        name: str = YCLIENTS_LIMIT,
        margin_s: float = DEFAULT_MARGIN_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if any(w.count <= 0 or w.seconds <= 0 for w in windows):
            raise ValueError("window counts and lengths must be positive")
        self._engine = engine
        self._windows = list(windows)
        self._name = name
        self._margin = margin_s
        self._sleep = sleep
        self._keep = max((w.count for w in self._windows), default=0)
        self._last_lateness = 0.0

    @classmethod
    def for_yclients(cls, engine: AsyncEngine, settings: Settings) -> PostgresRateLimiter:
        """The limiter every YClients client of a process uses (5 per second and 200 per minute by default)."""
        return cls(engine, windows=yclients_windows(settings))

    def __repr__(self) -> str:
        return f"PostgresRateLimiter(name={self._name!r}, windows={self._windows!r})"

    async def reserve(self) -> float:
        """Reserve the next slot; returns how many seconds to wait for it."""
        if not self._windows:
            return 0.0
        late, self._last_lateness = self._last_lateness, 0.0
        async with self._engine.begin() as conn:
            row = (await conn.execute(_LOCK_AND_READ, {"name": self._name})).one()
            now = float(row.now)
            jitter = learnt_jitter(float(row.jitter_s or 0.0), late)
            slots = [float(s) for s in row.slots or ()]
            slot = next_slot(slots, now, self._windows, self._margin + jitter)
            slots.append(slot)
            await conn.execute(_STORE, {"name": self._name, "slots": slots[-self._keep :], "jitter": jitter})
        return max(0.0, slot - now)

    async def acquire(self) -> None:
        """Block until a call may be made."""
        started = time.monotonic()
        delay = await self.reserve()
        if delay > 0:
            if delay >= 1.0:
                log.debug("yclients rate limit: waiting", extra={"wait_s": round(delay, 3), "limit": self._name})
            await self._sleep(delay)
        # How late this caller is for its slot (a busy event loop, the reservation's own round trips, a late
        # wake-up) is the jitter its call reaches YClients with. The next reservation of this process reports
        # it, so every process widens the windows by what the host really does.
        lateness = time.monotonic() - started - delay
        self._last_lateness = max(self._last_lateness, lateness)


def learnt_jitter(previous: float, lateness: float) -> float:
    """The decaying maximum of reported wake-up lateness, capped."""
    return min(MAX_JITTER_S, max(previous * JITTER_DECAY, lateness))
