"""The connection policy: codes, backoff with jitter and cap, the reconnect cap, and a flapping simulation."""

from __future__ import annotations

import random

import pytest

from services.whatsapp.policy import Action, AttemptLimiter, Backoff, ConnectionPolicy, classify


@pytest.mark.parametrize(
    ("code", "action"),
    [
        (515, Action.RESTART),
        (408, Action.RETRY),
        (428, Action.RETRY),
        (503, Action.RETRY),
        (599, Action.RETRY),
        (401, Action.LOGGED_OUT),
        (403, Action.LOGGED_OUT),
        (440, Action.REPLACED),
        (500, Action.BAD_SESSION),
    ],
)
def test_codes(code: int, action: Action) -> None:
    assert classify(code) is action


def test_backoff_doubles_within_jitter_bounds_and_stops_at_the_cap() -> None:
    backoff = Backoff(base_s=1.0, factor=2.0, cap_s=60.0, jitter=0.2)
    rng = random.Random(7)
    assert [backoff.nominal(s) for s in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    for step in range(1, 12):
        low, high = backoff.bounds(step)
        samples = [backoff.delay(step, rng) for _ in range(300)]
        assert all(low <= s <= high for s in samples)
        assert high <= 60.0
        if step <= 5:
            # Jitter really spreads the delays (no synchronised reconnects of many sessions).
            assert max(samples) - min(samples) > 0.5 * (high - low)
    assert backoff.delay(10_000, rng) <= 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_limiter_allows_n_per_window_then_waits_for_the_oldest() -> None:
    clock = FakeClock()
    limiter = AttemptLimiter(3, 60.0, clock)
    for _ in range(3):
        assert limiter.wait_s() == 0
        limiter.record()
        clock.now += 1
    assert limiter.wait_s() == pytest.approx(57.0)
    clock.now += 57.0
    assert limiter.wait_s() == 0


def test_a_flapping_connection_is_bounded_per_minute() -> None:
    """Every connection drops at once (428) for ten minutes: attempts and events stay within the cap."""
    policy = ConnectionPolicy(Backoff(base_s=0.2, factor=2.0, cap_s=5.0, jitter=0.2), max_per_minute=6)
    clock = FakeClock()
    limiter = policy.limiter(clock)
    rng = random.Random(1)
    attempts: list[float] = []
    delays: list[float] = []
    failures = 0
    end = clock.now + 600
    while clock.now < end:
        limiter.record()
        attempts.append(clock.now)
        # The connection drops right away: one failure, one disconnected event, one backoff step.
        failures += 1
        delay = policy.retry_delay(failures, limiter, rng)
        delays.append(delay)
        clock.now += delay
    for start in attempts:
        in_window = [a for a in attempts if start <= a < start + 60]
        assert len(in_window) <= 6
    # Ten minutes of flapping: at most 6 a minute, and the backoff climbs to its cap.
    assert len(attempts) <= 6 * 10 + 1
    assert max(delays) >= 5.0 * 0.8
    assert delays[0] < delays[3]


def test_515_restarts_are_not_failures_but_are_capped_as_attempts() -> None:
    policy = ConnectionPolicy(max_per_minute=6)
    clock = FakeClock()
    limiter = policy.limiter(clock)
    made = 0
    while limiter.wait_s() == 0:
        limiter.record()
        made += 1
    assert made == 6
    assert classify(515) is Action.RESTART
