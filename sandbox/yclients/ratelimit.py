"""The platform's rate limit: N per second AND M per minute, sliding windows, for all endpoints together."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingWindowLimiter:
    """Admits a call when both windows have room; refused calls do not count."""

    def __init__(
        self,
        per_second: int | None,
        per_minute: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._second: deque[float] = deque()
        self._minute: deque[float] = deque()
        self.per_second = per_second
        self.per_minute = per_minute

    def configure(self, per_second: int | None, per_minute: int | None) -> None:
        """Change the limits (None = no limit for that window); the history is kept."""
        self.per_second = per_second
        self.per_minute = per_minute

    def reset(self) -> None:
        """Forget every call seen so far."""
        self._second.clear()
        self._minute.clear()

    def try_acquire(self) -> bool:
        """Record one call and return True if both windows allow it, else return False."""
        now = self._clock()
        _expire(self._second, now - 1.0)
        _expire(self._minute, now - 60.0)
        if self.per_second is not None and len(self._second) >= self.per_second:
            return False
        if self.per_minute is not None and len(self._minute) >= self.per_minute:
            return False
        self._second.append(now)
        self._minute.append(now)
        return True


def _expire(window: deque[float], horizon: float) -> None:
    while window and window[0] <= horizon:
        window.popleft()
