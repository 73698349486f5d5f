"""Statistics for the benchmarks: percentiles of samples, and the fastest schedule a rate limit allows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(samples: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None for no samples."""
    if not samples:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float | None:
    """The median, None for no values."""
    return percentile(values, 50)


@dataclass(frozen=True)
class Summary:
    """Count, p50, p99 and max of latency samples (seconds in, kept in seconds)."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        """Summarise samples."""
        if not samples:
            return cls(0, None, None, None, None)
        return cls(
            len(samples), percentile(samples, 50), percentile(samples, 99), max(samples), sum(samples) / len(samples)
        )


@dataclass(frozen=True)
class Window:
    """At most `count` calls in any `seconds`-long window, as the platform counts arrivals."""

    count: int
    seconds: float

    @property
    def label(self) -> str:
        """`5/s`, `200/min`."""
        if self.seconds == 1:
            return f"{self.count}/s"
        if self.seconds == 60:
            return f"{self.count}/min"
        return f"{self.count}/{self.seconds:g}s"


def fastest_schedule(n: int, windows: Sequence[Window]) -> list[float]:
    """Arrival times (from 0) of the fastest `n` calls that never exceed any window.

    A call at `t` is admitted when fewer than `count` calls lie in `(t - seconds, t]`, as the sandbox counts.
    """
    times: list[float] = []
    for _ in range(n):
        t = times[-1] if times else 0.0
        for window in windows:
            if len(times) >= window.count:
                t = max(t, times[-window.count] + window.seconds)
        times.append(t)
    return times


@dataclass(frozen=True)
class LimitBound:
    """What a rate limit allows for `n` calls from a clean slate, and which window decides it."""

    calls: int
    seconds: float
    binding: str

    @property
    def rate(self) -> float | None:
        """Calls per second between the first and the last call; None when they all fit at once."""
        return (self.calls - 1) / self.seconds if self.calls > 1 and self.seconds > 0 else None


def limit_bound(n: int, windows: Sequence[Window]) -> LimitBound:
    """The shortest first-to-last span of `n` calls under every window, and the window that makes it so."""
    both = fastest_schedule(n, windows)
    span = both[-1] - both[0] if both else 0.0
    alone = {w.label: (lambda s: s[-1] - s[0] if s else 0.0)(fastest_schedule(n, [w])) for w in windows}
    binding = [label for label, seconds in alone.items() if seconds > 0 and math.isclose(seconds, span)]
    if not binding:
        binding = [label for label, seconds in alone.items() if seconds > 0]
        text = " and ".join(binding) + " together" if binding else "none"
    else:
        text = " and ".join(binding)
    return LimitBound(n, span, text)


def most_in_window(times: Sequence[float], seconds: float) -> int:
    """The most arrivals inside any `(t - seconds, t]` window."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - seconds:
            start += 1
        best = max(best, end - start + 1)
    return best
