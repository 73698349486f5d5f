"""The in-process fan-out of the live-update hub (no broker needed: messages are dispatched directly)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from services.gateway.events import event_payload, message_salon_id
from services.gateway.livehub import HubClosed, LiveHub, Subscription, TooManyStreams
from shared.messages import (
    ActivationCompleted,
    ActivationCompletedData,
    Message,
    PairingExpired,
    PairingExpiredData,
    WhatsAppConnected,
    WhatsAppConnectedData,
    WhatsAppDisconnected,
    WhatsAppDisconnectedData,
)


def connected(salon_id: int) -> WhatsAppConnected:
    return WhatsAppConnected(data=WhatsAppConnectedData(session_id=f"company_{salon_id}", phone="79001112233"))


async def collect(sub: Subscription, count: int) -> list[Message]:
    got: list[Message] = []
    async for msg in sub:
        got.append(msg)
        if len(got) == count:
            break
    return got


async def test_each_subscriber_gets_only_its_salons() -> None:
    hub = LiveHub()
    a = hub.subscribe([1, 2])
    b = hub.subscribe([2])
    c = hub.subscribe([3])

    assert hub.dispatch(connected(1)) == 1
    assert hub.dispatch(connected(2)) == 2
    assert hub.dispatch(connected(4)) == 0

    got_a = await asyncio.wait_for(collect(a, 2), timeout=1)
    got_b = await asyncio.wait_for(collect(b, 1), timeout=1)
    assert [message_salon_id(m) for m in got_a] == [1, 2]
    assert [message_salon_id(m) for m in got_b] == [2]
    assert c.pending == 0


async def test_a_slow_subscriber_is_dropped_and_the_others_keep_receiving() -> None:
    hub = LiveHub(subscriber_queue_size=3)
    slow = hub.subscribe([7])
    fast = hub.subscribe([7])
    for _ in range(3):
        hub.dispatch(connected(7))
        await asyncio.wait_for(collect(fast, 1), timeout=1)

    hub.dispatch(connected(7))  # the fourth unread event: the slow page is dropped

    assert slow.closed and slow.closed_reason == "overflow"
    assert await asyncio.wait_for(collect(slow, 10), timeout=1) == []
    assert not fast.closed
    assert hub.open_streams() == 1
    assert hub.dispatch(connected(7)) == 1


async def test_streams_per_key_are_limited_and_released_on_close() -> None:
    hub = LiveHub(max_per_key=2)
    first = hub.subscribe([1], key="k")
    hub.subscribe([1], key="k")
    with pytest.raises(TooManyStreams):
        hub.subscribe([1], key="k")
    hub.subscribe([1], key="other")

    first.close()
    first.close()  # idempotent

    assert hub.open_streams("k") == 1
    hub.subscribe([1], key="k")
    assert hub.open_streams() == 3


async def test_shutdown_ends_every_stream_and_refuses_new_ones() -> None:
    hub = LiveHub()
    sub = hub.subscribe([1])
    waiting = asyncio.create_task(collect(sub, 1))
    await asyncio.sleep(0)

    hub.close_streams()

    assert await asyncio.wait_for(waiting, timeout=1) == []
    assert sub.closed_reason == "shutdown" and hub.open_streams() == 0
    with pytest.raises(HubClosed):
        hub.subscribe([1])


def test_the_salon_of_a_message_comes_from_the_envelope_the_payload_or_the_session() -> None:
    at = datetime.now(UTC)
    assert message_salon_id(connected(42)) == 42
    assert message_salon_id(ActivationCompleted(data=ActivationCompletedData(salon_id=5, activated_at=at))) == 5
    assert message_salon_id(PairingExpired(salon_id=9, data=PairingExpiredData(session_id="x", attempt_id="a"))) == 9
    assert message_salon_id(PairingExpired(data=PairingExpiredData(session_id="garbage", attempt_id="a"))) is None


def test_event_payloads_carry_no_raw_error_text() -> None:
    msg = WhatsAppDisconnected(
        data=WhatsAppDisconnectedData(
            session_id="company_3", code=428, reason="Traceback: socket closed", retrying=True, retry_in_s=2.0
        ),
        occurred_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    payload = event_payload(msg, 3)
    assert payload is not None
    assert payload["retrying"] is True and payload["code"] == 428
    assert "Traceback" not in str(payload)
