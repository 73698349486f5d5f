"""The connection policy: what each WhatsApp disconnect code means, backoff with jitter, and a reconnect cap.

| code | action |
|---|---|
| 515 restart required (after a scan) | reconnect at once; success, not a failure (never counted) |
| 408, 428, 503, engine unreachable, unknown | reconnect after ``backoff(step)``; ``step`` = consecutive failures |
| 401 logged out, 403 banned | terminal: wipe credentials, state ``logged_out``, ``WhatsAppLoggedOut`` |
| 440 replaced | stop (state ``replaced``), keep credentials, never fight over the session |
| 500 bad session | wipe credentials and require a new pairing (``logged_out``, the salon is told) |

No reconnect storms, by three rules working together:
- a failure only resets after a connection held ``stable_after_s``: a flapping connection climbs the backoff;
- every connect attempt (515 restarts too) is counted in a sliding minute; past ``max_per_minute`` the next
  attempt waits for the window;
- the runner emits one ``WhatsAppDisconnected`` per failure, i.e. per backoff step.
So a session produces at most ``max_per_minute`` connections (and as many disconnected events) a minute,
whatever the server does.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

RESTART_REQUIRED = 515
TIMED_OUT = 408
CONNECTION_CLOSED = 428
REPLACED = 440
LOGGED_OUT = 401
FORBIDDEN = 403
BAD_SESSION = 500
UNAVAILABLE = 503
# What the messages carry when the engine could not reach WhatsApp at all.
UNREACHABLE_CODE = UNAVAILABLE

REASONS = {
    RESTART_REQUIRED: "restart required",
    TIMED_OUT: "connection lost",
    CONNECTION_CLOSED: "connection closed",
    REPLACED: "connection replaced: the session was opened elsewhere",
    LOGGED_OUT: "logged out: the device was removed on the phone",
    FORBIDDEN: "forbidden: the account is banned",
    BAD_SESSION: "bad session: credentials are unusable, pair again",
    UNAVAILABLE: "WhatsApp service unavailable",
}


class Action(StrEnum):
    """What the runner does after a disconnect."""

    RESTART = "restart"
    RETRY = "retry"
    LOGGED_OUT = "logged_out"
    REPLACED = "replaced"
    BAD_SESSION = "bad_session"


def classify(code: int) -> Action:
    """The action for a disconnect code (unknown codes are treated as transient)."""
    if code == RESTART_REQUIRED:
        return Action.RESTART
    if code in (LOGGED_OUT, FORBIDDEN):
        return Action.LOGGED_OUT
    if code == REPLACED:
        return Action.REPLACED
    if code == BAD_SESSION:
        return Action.BAD_SESSION
    return Action.RETRY


def reason_for(code: int) -> str:
    """A short human reason for a code."""
    return REASONS.get(code, f"disconnected ({code})")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base * factor**(step-1)``, ±``jitter`` (a fraction), never above ``cap``."""

    base_s: float = 1.0
    factor: float = 2.0
    cap_s: float = 300.0
    jitter: float = 0.2

    def nominal(self, step: int) -> float:
        """The delay before jitter for failure number ``step`` (1-based)."""
        exponent = max(step, 1) - 1
        # Compare in log space first: factor**exponent overflows long before the cap matters.
        if self.factor > 1 and exponent > 64:
            return self.cap_s
        return float(min(self.cap_s, self.base_s * self.factor**exponent))

    def bounds(self, step: int) -> tuple[float, float]:
        """The interval ``delay(step)`` falls in."""
        n = self.nominal(step)
        return n * (1 - self.jitter), min(self.cap_s, n * (1 + self.jitter))

    def delay(self, step: int, rng: random.Random) -> float:
        """The jittered delay for failure number ``step``."""
        n = self.nominal(step)
        return min(self.cap_s, n * rng.uniform(1 - self.jitter, 1 + self.jitter))


class AttemptLimiter:
    """At most ``max_attempts`` connect attempts in any ``window_s`` (sliding window)."""

    def __init__(self, max_attempts: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self.clock = clock
        self._attempts: deque[float] = deque()

    def _trim(self, now: float) -> None:
        while self._attempts and self._attempts[0] <= now - self.window_s:
            self._attempts.popleft()

    def wait_s(self) -> float:
        """Seconds until another attempt is allowed (0 when one is allowed now)."""
        now = self.clock()
        self._trim(now)
        if len(self._attempts) < self.max_attempts:
            return 0.0
        return max(0.0, self._attempts[0] + self.window_s - now)

    def record(self) -> None:
        """Count an attempt made now."""
        now = self.clock()
        self._trim(now)
        self._attempts.append(now)

    @property
    def recent(self) -> int:
        """Attempts inside the current window."""
        self._trim(self.clock())
        return len(self._attempts)


@dataclass(frozen=True)
class ConnectionPolicy:
    """Backoff, the reconnect cap and the stability period, as one object the runners share."""

    backoff: Backoff = Backoff()
    max_per_minute: int = 6
    stable_after_s: float = 60.0

    def limiter(self, clock: Callable[[], float] = time.monotonic) -> AttemptLimiter:
        """A fresh per-session attempt limiter."""
        return AttemptLimiter(self.max_per_minute, 60.0, clock)

    def retry_delay(self, step: int, limiter: AttemptLimiter, rng: random.Random) -> float:
        """The wait before the next attempt: the backoff for ``step``, or longer if the minute's cap is reached."""
        return max(self.backoff.delay(step, rng), limiter.wait_s())
