"""The slot arithmetic of the shared YClients limiter (the cross-process behaviour is an integration test)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from shared.config import Settings
from shared.ratelimit import Log, Window, learnt_jitter, next_slot, yclients_windows

LIMITS = [Window(5, 1.0), Window(200, 60.0)]


def reserve(count: int, *, now: float = 0.0, margin: float = 0.0) -> list[float]:
    """Slots for ``count`` calls reserved at once, none of them answered yet."""
    log = Log()
    for _ in range(count):
        log = log.appended(next_slot(log, now, LIMITS, margin))
    return list(log.slots)


def max_in_window(slots: list[float], seconds: float) -> int:
    # Windows are half-open (t - seconds, t], as YClients (and the sandbox) count them.
    # (1e-9: slots that sit exactly one window apart must not meet through float rounding.)
    return max(sum(1 for s in slots if end - seconds + 1e-9 < s <= end) for end in slots)


def test_a_burst_queues_five_per_second_and_two_hundred_per_minute() -> None:
    slots = reserve(260)
    assert slots[:6] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])  # spread evenly, not fired at once
    assert max_in_window(slots, 1.0) == 5
    assert max_in_window(slots, 60.0) == 200
    assert slots[200] == pytest.approx(60.6)  # the 201st call waits for the first to leave the (widened) minute
    assert slots == sorted(slots)


def test_the_margin_widens_every_window() -> None:
    slots = reserve(11, margin=0.2)
    assert slots[5] == pytest.approx(1.2)
    assert slots[10] == pytest.approx(2.4)
    assert max_in_window([s - 0.19 if i % 5 == 0 else s for i, s in enumerate(slots)], 1.0) <= 5


def test_a_late_first_call_cannot_crowd_the_minute() -> None:
    # The first call of a minute reaches YClients half a second late, the 201st on time: still 200 per minute.
    slots = reserve(201, margin=0.2)
    arrivals = [slots[0] + 0.5, *slots[1:]]
    assert max_in_window(arrivals, 60.0) <= 200


def test_a_quiet_limiter_answers_now() -> None:
    assert next_slot(Log.of([1.0, 2.0]), 100.0, LIMITS, 0.2) == 100.0
    assert next_slot(Log(), 7.5, LIMITS) == 7.5


def test_windows_come_from_the_settings() -> None:
    settings = Settings(ENVIRONMENT="test", YCLIENTS_PARTNER_TOKEN=SecretStr("x" * 20), YCLIENTS_RATE_PER_MINUTE=0)
    assert yclients_windows(settings) == [Window(5, 1.0)]


def test_the_learnt_jitter_is_a_decaying_capped_maximum() -> None:
    assert learnt_jitter(0.0, 0.12) == pytest.approx(0.12)
    assert learnt_jitter(0.12, 0.0) == pytest.approx(0.12 * 0.95)
    assert learnt_jitter(0.12, 0.5) == pytest.approx(0.5)
    assert learnt_jitter(0.0, 30.0) == 1.0
