"""The YClients rate limit held across every process and host, on one PostgreSQL row (YCLIENTS.md §4, DESIGN §6).

Why PostgreSQL and not Redis: every service already depends on it (nothing to add to compose or to operate),
its clock is one clock for all processes and hosts, and a row lock serialises reservations without a separate
lock service. The load is two or three short statements per YClients call, capped at 5 calls per second anyway.

Algorithm: a sliding-window log with reservation. The row ``rate_limits[name]`` keeps, for the recent calls,
the time each one was reserved (``slots``, database clock, epoch seconds, ascending) and, once it has been
answered, when it was done (``completed``, NULL until then). A caller locks the row, takes the earliest time
``t`` that is not before the last reservation and leaves fewer than ``count`` calls counted in
``(t - seconds, t]`` for every window, appends ``t``, commits, and sleeps until ``t``. When the answer comes
back (or the call fails) it reports that moment against its slot. Calls are spread evenly over the shortest
window, callers queue instead of being refused, and within a process one caller at a time reserves.

The platform counts a call when it *arrives*, somewhere between its slot and its completion. If, when ``t`` is
chosen, every earlier call is counted at a time no earlier than its arrival, no window ending at any arrival
ever holds more than ``count`` calls, however late any call went out: take the newest reservation in that
window; when it was made it counted every other call of the window. So each call is counted at its completion
time once it has reported: an upper bound of its arrival, which makes the windows exact. What it costs is the
round trip of the call that decides the window (milliseconds on a local link; a tenth of the per-second limit
on a 100 ms one), against a fixed margin that a cold connection or a stalled host can overrun (both did: the
first call of a burst arrived late enough for the sixth, or the 201st a minute later, to draw a 429).

For the deciding call to have reported, slots are reserved at most half the shortest window ahead: the call a
reservation must count has been due for half a window by then. A call not reported yet (slower than that, or
its process died mid-call) is counted at its slot plus ``margin_s`` plus the jitter the callers see, and for
windows longer than a second 1% of the window on top. The jitter: each caller measures how late it woke up for
its slot and reports it with its next reservation; the row keeps a decaying maximum, so a loaded host widens
that fallback by what the load costs. Calls are pruned once no window can count them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY, DOUBLE_PRECISION
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import Settings

log = logging.getLogger(__name__)

YCLIENTS_LIMIT = "yclients"
# How much later than its slot a call that has not reported yet is taken to reach YClients (event-loop and
# network delays on a busy host), on top of the learnt jitter. Reported calls need no margin.
DEFAULT_MARGIN_S = 0.04
# An unreported call's slot is widened by this share of a window longer than a second on top.
UNREPORTED_SHARE = 0.01

# How fast the learnt jitter forgets: per reservation (at 5 calls/s a spike halves in about 3 s).
JITTER_DECAY = 0.95
# A single pathological wake-up (a GC pause, a stalled host) must not stall the limit for long.
MAX_JITTER_S = 1.0

_LOCK_AND_READ = text(
    """
    INSERT INTO rate_limits AS r (name) VALUES (:name)
    ON CONFLICT (name) DO UPDATE SET name = r.name
    RETURNING r.slots, r.completed, r.jitter_s, extract(epoch FROM clock_timestamp())::float8 AS now
    """
)
_STORE = text(
    "UPDATE rate_limits SET slots = :slots, completed = :completed, jitter_s = :jitter, updated_at = now() "
    "WHERE name = :name"
).bindparams(bindparam("slots", type_=ARRAY(DOUBLE_PRECISION)), bindparam("completed", type_=ARRAY(DOUBLE_PRECISION)))
# Both bounds are upper bounds of the arrival; the local one leaves out waiting for a connection and the lock.
# Assigning past the end of ``completed`` pads it with NULLs, so it may be shorter than ``slots``.
_REPORT = text(
    """
    UPDATE rate_limits
    SET completed[array_position(slots, CAST(:slot AS float8))] =
        least(CAST(:bound AS float8), extract(epoch FROM clock_timestamp())::float8)
    WHERE name = :name AND CAST(:slot AS float8) = ANY (slots)
    """
)


@dataclass(frozen=True)
class Window:
    """At most ``count`` calls in any ``seconds``-long window."""

    count: int
    seconds: float


@dataclass(frozen=True)
class Log:
    """The calls a limit remembers: slots ascending, and each one's completion time (None while unreported)."""

    slots: tuple[float, ...] = ()
    completed: tuple[float | None, ...] = ()

    @classmethod
    def of(cls, slots: Sequence[float], completed: Sequence[float | None] = ()) -> Log:
        """A log with ``completed`` cut or padded with None to the length of ``slots``."""
        done = list(completed[: len(slots)]) + [None] * (len(slots) - len(completed))
        return cls(tuple(slots), tuple(done))

    def appended(self, slot: float) -> Log:
        """This log with one more (unreported) reservation."""
        return Log((*self.slots, slot), (*self.completed, None))


@dataclass(frozen=True)
class Reservation:
    """A reserved slot (database clock) and how the local monotonic clock maps onto the database's."""

    slot: float
    wait_s: float
    # Database time minus local monotonic time, read so that it errs late: ``monotonic + offset`` is never
    # earlier than the database clock at that moment.
    clock_offset: float
    # The local monotonic time the slot comes, erring late by the database's answer's way back (well under a
    # millisecond): the database clock was read before the answer arrived.
    due: float

    def database_time(self, monotonic: float) -> float:
        """An upper bound of the database clock at the local monotonic time ``monotonic``."""
        return monotonic + self.clock_offset


def arrival_bounds(log_: Log, window: Window, margin_s: float) -> list[float]:
    """The time each logged call is counted at in ``window``, ascending (see the module docstring)."""
    unreported = window_margin(window, margin_s)
    return sorted(
        slot + unreported if done is None else done for slot, done in zip(log_.slots, log_.completed, strict=True)
    )


def next_slot(log_: Log, now: float, windows: Sequence[Window], margin_s: float = 0.0) -> float:
    """The earliest time, not before ``now`` nor the last reservation, that keeps every window within its count."""
    slots = log_.slots
    slot = max(now, slots[-1]) if slots else now
    if slots and windows:
        # Calls are spread evenly over the shortest window instead of fired in bursts: five requests sent
        # at once reach YClients queued behind each other (and behind five new connections), which is the
        # arrival jitter that turns the next second's first call into a 429.
        slot = max(slot, slots[-1] + spacing_s(windows))
    for window in windows:
        if len(slots) >= window.count:
            slot = max(slot, arrival_bounds(log_, window, margin_s)[-window.count] + window.seconds)
    return slot


def pruned(log_: Log, now: float, windows: Sequence[Window], margin_s: float) -> Log:
    """The log without the calls no window will count again; the last ``max(count)`` are always kept.

    A call that completed late can still count after later ones have left the window, so calls are dropped by
    when they are counted, not by position.
    """
    if not windows:
        return Log()
    keep = len(log_.slots) - max(w.count for w in windows)
    kept = [
        i
        for i, (slot, done) in enumerate(zip(log_.slots, log_.completed, strict=True))
        if i >= keep
        or any((slot + window_margin(w, margin_s) if done is None else done) > now - w.seconds for w in windows)
    ]
    return Log(tuple(log_.slots[i] for i in kept), tuple(log_.completed[i] for i in kept))


def spacing_s(windows: Sequence[Window]) -> float:
    """The least time between two slots: the shortest window's length over its count."""
    shortest = min(windows, key=lambda w: w.seconds)
    return shortest.seconds / shortest.count


def reserve_ahead_s(windows: Sequence[Window]) -> float:
    """How far ahead a slot may be reserved: half the shortest window."""
    return min(w.seconds for w in windows) / 2


def window_margin(window: Window, margin_s: float) -> float:
    """How much later than its slot a call that has not reported is counted in ``window``.

    The margin, plus 1% of a window longer than a second: a call that was due first can reach YClients late
    while a later one arrives on time, and over a minute that skew grows with load.
    """
    return margin_s + (UNREPORTED_SHARE * window.seconds if window.seconds > 1 else 0.0)


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
        self._ahead = reserve_ahead_s(self._windows) if self._windows else 0.0
        self._spacing = spacing_s(self._windows) if self._windows else 0.0
        self._last_lateness = 0.0
        # This process's callers reserve one at a time, each no sooner than a slot could be had: a crowd of
        # callers polling the row for the next slot would cost a statement each per slot.
        self._turn = asyncio.Lock()
        self._next_try = 0.0

    @classmethod
    def for_yclients(cls, engine: AsyncEngine, settings: Settings) -> PostgresRateLimiter:
        """The limiter every YClients client of a process uses (5 per second and 200 per minute by default)."""
        return cls(engine, windows=yclients_windows(settings))

    def __repr__(self) -> str:
        return f"PostgresRateLimiter(name={self._name!r}, windows={self._windows!r})"

    async def reserve(self) -> Reservation | float:
        """Reserve the next slot; or, when it is further ahead than slots are reserved, how long to wait first."""
        if not self._windows:
            raise ValueError("a limiter without windows reserves nothing")
        late, self._last_lateness = self._last_lateness, 0.0
        before = time.monotonic()
        async with self._engine.begin() as conn:
            row = (await conn.execute(_LOCK_AND_READ, {"name": self._name})).one()
            read = time.monotonic()
            now = float(row.now)
            jitter = learnt_jitter(float(row.jitter_s or 0.0), late)
            margin = self._margin + jitter
            completed = [None if c is None else float(c) for c in row.completed or ()]
            log_ = Log.of([float(s) for s in row.slots or ()], completed)
            slot = next_slot(log_, now, self._windows, margin)
            if slot - now > self._ahead:
                # Nothing stored: the lateness measured goes with the reservation this caller makes later.
                self._last_lateness = late
                return slot - now - self._ahead
            stored = pruned(log_.appended(slot), now, self._windows, margin)
            await conn.execute(
                _STORE,
                {
                    "name": self._name,
                    "slots": list(stored.slots),
                    "completed": list(stored.completed),
                    "jitter": jitter,
                },
            )
        wait = max(0.0, slot - now)
        return Reservation(slot, wait, clock_offset=now - before, due=read + wait)

    async def report(self, reservation: Reservation, completed_monotonic: float) -> None:
        """Record that the call reserved at ``reservation`` was done (answered or failed) by then."""
        params = {
            "name": self._name,
            "slot": reservation.slot,
            "bound": reservation.database_time(completed_monotonic),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(_REPORT, params)
        except (SQLAlchemyError, OSError) as exc:
            # The call itself is done and must not be repeated for this; its slot plus the margin stands in.
            log.warning("yclients rate limit: completion not recorded (%s)", type(exc).__name__)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a slot on entering; the call is made inside, and its completion is recorded on leaving."""
        if not self._windows:
            yield
            return
        reservation = await self._wait_for_slot()
        try:
            yield
        finally:
            await self.report(reservation, time.monotonic())

    async def _wait_for_slot(self) -> Reservation:
        async with self._turn:
            while True:
                if (early := self._next_try - time.monotonic()) > 0:
                    await self._sleep(early)
                reserved = await self.reserve()
                if isinstance(reserved, float):
                    self._next_try = time.monotonic() + reserved
                    continue
                self._next_try = reserved.due + self._spacing - self._ahead
                break
        if reserved.wait_s >= 1.0:
            log.debug("yclients rate limit: waiting", extra={"wait_s": round(reserved.wait_s, 3), "limit": self._name})
        # Until the slot, not for ``wait_s`` from now: the reservation's own commit is already behind.
        if (delay := reserved.due - time.monotonic()) > 0:
            await self._sleep(delay)
        # How late this caller is for its slot (a busy event loop, the reservation's commit, a late wake-up) is
        # the jitter an unreported call reaches YClients with. The next reservation of this process reports it.
        # Waiting for the row lock before the slot was chosen is not lateness: the slot is chosen after it.
        self._last_lateness = max(self._last_lateness, time.monotonic() - reserved.due)
        return reserved


def learnt_jitter(previous: float, lateness: float) -> float:
    """The decaying maximum of reported wake-up lateness, capped."""
    return min(MAX_JITTER_S, max(previous * JITTER_DECAY, lateness))
