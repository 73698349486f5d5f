"""The limiter's pure scheduling: which time each logged call counts at, the next slot, and what the log keeps."""

from __future__ import annotations

import random

import pytest

from shared.ratelimit import (
    Log,
    Reservation,
    Window,
    arrival_bounds,
    next_slot,
    pruned,
    reserve_ahead_s,
    spacing_s,
    window_margin,
)

YCLIENTS = [Window(5, 1.0), Window(200, 60.0)]


def test_the_log_pads_or_cuts_completions_to_its_slots() -> None:
    assert Log.of([1.0, 2.0], [1.5]) == Log((1.0, 2.0), (1.5, None))
    assert Log.of([1.0], [1.5, 9.0]) == Log((1.0,), (1.5,))
    assert Log.of([1.0]).appended(2.0) == Log((1.0, 2.0), (None, None))


def test_unreported_calls_count_at_their_slots_plus_the_margin_spread_evenly() -> None:
    log = Log.of([0.0, 0.2, 0.4, 0.6, 0.8])
    assert next_slot(log, 0.8, [Window(5, 1.0)], margin_s=0.04) == pytest.approx(1.04)
    assert next_slot(Log.of([0.0]), 0.0, [Window(5, 1.0)]) == pytest.approx(0.2)


def test_a_first_call_that_went_out_cold_holds_back_the_sixth() -> None:
    slots = [0.0, 0.2, 0.4, 0.6, 0.8]
    prompt = next_slot(Log.of(slots, [0.01]), 0.8, [Window(5, 1.0)], margin_s=0.04)
    cold = next_slot(Log.of(slots, [0.3]), 0.8, [Window(5, 1.0)], margin_s=0.04)

    assert prompt == pytest.approx(1.01)  # answered at once: only its round trip is spent, not the margin
    # It may have reached YClients as late as 0.3: the second call (0.24 at most) is the one that leaves.
    assert cold == pytest.approx(1.24)


def test_a_call_answered_late_moves_the_long_window() -> None:
    windows = [Window(5, 1.0), Window(3, 60.0)]
    slots = [0.0, 0.2, 0.4]

    late = next_slot(Log.of(slots, [0.9, 1.0, 1.1]), 1.2, windows, margin_s=0.04)
    prompt = next_slot(Log.of(slots, [0.01, 0.21, 0.41]), 1.2, windows, margin_s=0.04)

    # The first call may have reached YClients as late as 0.9: the fourth waits a minute from then.
    assert late == pytest.approx(60.9)
    # Answered at once: exact, none of the unreported call's 0.64 s spent.
    assert prompt == pytest.approx(60.01)


def test_the_call_that_decides_a_long_window_is_the_one_counted_earliest_not_the_first_reserved() -> None:
    window = Window(3, 60.0)
    log = Log.of([0.0, 0.2, 0.4], [5.0, 0.25, 0.45])  # the first call hung for five seconds

    assert arrival_bounds(log, window, 0.04) == [0.25, 0.45, 5.0]
    assert next_slot(log, 6.0, [window]) == pytest.approx(60.25)


def test_an_unreported_call_counts_from_its_slot_plus_the_margin_and_a_share_of_a_long_window() -> None:
    window = Window(2, 60.0)
    log = Log.of([0.0, 0.5], [None, 0.6])
    assert arrival_bounds(log, window, 0.04) == pytest.approx([0.6, 0.64])
    assert next_slot(log, 1.0, [window], margin_s=0.04) == pytest.approx(60.6)
    assert [window_margin(w, 0.04) for w in YCLIENTS] == pytest.approx([0.04, 0.64])


def test_pruning_keeps_a_late_call_that_still_counts_and_drops_it_once_it_cannot() -> None:
    windows = [Window(2, 1.0), Window(3, 60.0)]
    log = Log.of([0.0, 10.0, 20.0, 30.0], [35.0, 10.1, 20.1, 30.1])

    assert pruned(log, 40.0, windows, 0.04) == log
    assert pruned(log, 95.1, windows, 0.04) == Log.of([10.0, 20.0, 30.0], [10.1, 20.1, 30.1])
    # Dropping it by position would have let the next call in a minute after 10.1, with 35.0 still inside.
    assert next_slot(log, 40.0, windows) == pytest.approx(80.1)
    assert next_slot(Log.of([10.0, 20.0, 30.0], [10.1, 20.1, 30.1]), 40.0, windows) == pytest.approx(70.1)


def test_pruning_drops_an_unreported_call_once_out_of_every_window() -> None:
    windows = [Window(1, 1.0), Window(1, 60.0)]
    log = Log.of([0.0, 10.0], [None, 10.1])
    assert pruned(log, 60.5, windows, 0.04) == log  # 0.0 + 0.64 is still inside (0.5, ...]
    assert pruned(log, 60.7, windows, 0.04) == Log.of([10.0], [10.1])


def test_pruning_one_second_windows_keeps_the_last_count_and_the_calls_answered_within_a_second() -> None:
    windows = [Window(2, 1.0)]
    assert pruned(Log.of([0.0, 1.0, 2.0], [0.1, 1.1, None]), 2.0, windows, 0.0) == Log.of([1.0, 2.0], [1.1, None])
    late = Log.of([0.0, 1.0, 2.0], [1.5, 1.1, None])
    assert pruned(late, 2.0, windows, 0.0) == late


def test_slots_are_spaced_over_and_reserved_at_most_half_the_shortest_window_ahead() -> None:
    assert spacing_s(YCLIENTS) == pytest.approx(0.2)
    assert reserve_ahead_s(YCLIENTS) == pytest.approx(0.5)
    assert reserve_ahead_s([Window(200, 60.0)]) == pytest.approx(30.0)


def test_a_reservation_maps_the_local_clock_to_the_database_one() -> None:
    reservation = Reservation(slot=100.0, wait_s=0.0, clock_offset=90.0, due=10.0)
    assert reservation.database_time(12.5) == 102.5


LONG = Window(20, 10.0)
SHORT = Window(5, 1.0)


def simulate(*, reported: bool, latest_send_s: float, calls: int = 300) -> list[float]:
    """Callers queueing on one log; every call reaches YClients anywhere between its slot and its answer.

    Mostly prompt; one call in ten goes out late by up to ``latest_send_s`` (a cold connection, a stalled host).
    Returns the arrivals. With ``reported`` false the answers never reach the log (the limiter before this).
    """
    rng = random.Random(7)
    windows = [SHORT, LONG]
    ahead = reserve_ahead_s(windows)
    log = Log()
    arrivals: list[float] = []
    answers: list[float] = []
    now = 0.0
    for _ in range(calls):
        while True:
            # Only the answers already back are in the log when the caller reserves.
            visible = Log.of(log.slots, [a if reported and a <= now else None for a in answers])
            slot = next_slot(visible, now, windows, margin_s=0.04)
            if slot - now <= ahead:
                break
            now = slot - ahead  # too far ahead: the caller comes back later
        late = rng.uniform(latest_send_s / 4, latest_send_s) if rng.random() < 0.1 else rng.uniform(0.0, 0.02)
        arrivals.append(slot + late + rng.uniform(0.001, 0.03))
        answers.append(arrivals[-1] + rng.uniform(0.001, 0.03))
        log = log.appended(slot)
        now = max(now, slot - rng.uniform(0.0, ahead))  # the next caller comes along before this slot
    return arrivals


def test_however_late_calls_go_out_no_long_window_ever_holds_more_than_its_count() -> None:
    assert most_in_window(simulate(reported=True, latest_send_s=2.0), LONG.seconds) <= LONG.count


def test_calls_answered_within_half_a_second_keep_the_one_second_window_too() -> None:
    arrivals = simulate(reported=True, latest_send_s=0.4)
    assert most_in_window(arrivals, SHORT.seconds) <= SHORT.count
    assert most_in_window(arrivals, LONG.seconds) <= LONG.count


def test_counting_slots_alone_lets_late_calls_crowd_every_window() -> None:
    # The same schedules without the reports: the cases above are not passing by luck of the draw.
    assert most_in_window(simulate(reported=False, latest_send_s=2.0), LONG.seconds) > LONG.count
    assert most_in_window(simulate(reported=False, latest_send_s=0.4), SHORT.seconds) > SHORT.count


def most_in_window(times: list[float], seconds: float) -> int:
    """The most arrivals in any half-open window (t - seconds, t] (how YClients counts)."""
    ordered = sorted(times)
    return max(sum(1 for s in ordered if end - seconds < s <= end) for end in ordered)
