"""Replay's pure pieces: reading a dead message, the republished copy, selection."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from aio_pika import IncomingMessage
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands as spec
from pamqp.header import ContentHeader

from shared.bus import topology as t
from shared.bus.replay import H_REPLAY_COUNT, H_REPLAYED_AT, DeadMessage, describe, replay_copy, selector
from shared.messages import RequestActivation, encode

DEAD_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def incoming(body: bytes, headers: dict[str, Any], *, type_: str | None = "activation.requested") -> IncomingMessage:
    """A message as basic.get returns it from `activation.dead`."""
    properties = spec.Basic.Properties(
        headers=headers,
        message_id="m-1",
        correlation_id="c-1",
        message_type=type_,
        content_type="application/json",
        delivery_mode=2,
        timestamp=DEAD_AT,
    )
    delivered = DeliveredMessage(
        delivery=spec.Basic.GetOk(delivery_tag=7, routing_key="activation.dead", exchange="", message_count=0),
        header=ContentHeader(body_size=len(body), properties=properties),
        body=body,
        channel=cast(AbstractChannel, None),
    )
    return IncomingMessage(delivered, no_ack=True)


def activation(salon_id: int = 42) -> RequestActivation:
    return RequestActivation(salon_id=salon_id, data={"salon_id": salon_id})


def test_a_message_parked_by_our_consumer() -> None:
    msg = activation()
    dead = describe(
        incoming(
            encode(msg),
            {
                t.H_ATTEMPT: 6,
                t.H_DEAD_REASON: "exhausted after 6 attempts: YClientsUnavailable: 503",
                t.H_DEAD_AT: "2026-01-02T03:04:05+00:00",
                t.H_ROUTING_KEY: "activation.requested",
            },
        )
    )
    assert dead.salon_id == 42
    assert dead.type == "activation.requested"
    assert dead.attempts == 6
    assert dead.reason.startswith("exhausted after 6 attempts")
    assert dead.dead_at == DEAD_AT
    assert dead.occurred_at == msg.occurred_at
    assert dead.replay_count == 0


def test_a_message_parked_by_the_broker_delivery_limit_after_waiting_in_a_retry_queue() -> None:
    deaths = [
        # Newest first, as the broker keeps them; the retry wait is not why it is dead.
        {"count": 1, "reason": "expired", "queue": "activation.retry.1000ms", "exchange": "", "routing-keys": ["x"]},
        {
            "count": 1,
            "reason": "delivery_limit",
            "queue": "activation",
            "exchange": "marketplace",
            "routing-keys": ["whatsapp.connected"],
            "time": DEAD_AT,
        },
    ]
    dead = describe(
        incoming(encode(activation()), {"x-death": deaths, "x-delivery-count": 11}, type_=None),
    )
    assert dead.reason == "dead-lettered by the broker: delivery_limit in activation"
    assert dead.routing_key == "whatsapp.connected"
    assert dead.type == "activation.requested"  # from the body
    assert dead.attempts == 11
    assert dead.dead_at == DEAD_AT


def test_an_undecodable_message_still_shows_what_its_json_tells() -> None:
    body = json.dumps({"type": "activation.requested", "salon_id": 77, "data": "garbage"}).encode()
    dead = describe(incoming(body, {t.H_DEAD_REASON: "undecodable message: ValidationError"}))
    assert dead.salon_id == 77
    assert dead.reason.startswith("undecodable")
    assert describe(incoming(b"\xff not json", {})).salon_id is None


def test_the_replayed_copy_keeps_identity_and_restarts_attempts() -> None:
    msg = activation()
    parked = incoming(
        encode(msg),
        {
            t.H_ATTEMPT: 6,
            t.H_DEAD_REASON: "exhausted",
            t.H_LAST_ERROR: "503",
            t.H_DEAD_AT: "2026-01-02T03:04:05+00:00",
            t.H_FIRST_FAILED_AT: "2026-01-02T03:00:00+00:00",
            t.H_ROUTING_KEY: "activation.requested",
            t.H_ORIGINAL_QUEUE: "activation",
            "x-death": [{"reason": "expired"}],
            "x-delivery-count": 3,
            H_REPLAY_COUNT: 1,
        },
    )
    copy = replay_copy(parked)
    assert copy.body == encode(msg)
    assert (copy.message_id, copy.correlation_id, copy.type) == ("m-1", "c-1", "activation.requested")
    assert copy.delivery_mode == 2
    assert copy.headers[H_REPLAY_COUNT] == 2
    assert H_REPLAYED_AT in copy.headers
    left = {k for k in copy.headers if k not in {H_REPLAY_COUNT, H_REPLAYED_AT}}
    assert left == {t.H_ROUTING_KEY, t.H_ORIGINAL_QUEUE}


def _dead(salon_id: int | None, type_: str) -> DeadMessage:
    return DeadMessage(
        message_id="m",
        type=type_,
        routing_key=type_,
        salon_id=salon_id,
        attempts=1,
        reason="r",
        dead_at=None,
        occurred_at=None,
        correlation_id=None,
        replay_count=0,
    )


def test_selection_by_salon_and_type() -> None:
    by_salon = selector(salons=[1, 2])
    assert by_salon(_dead(1, "a")) and by_salon(_dead(2, "b")) and not by_salon(_dead(3, "a"))
    both = selector(salons=[1], types=["a"])
    assert both(_dead(1, "a")) and not both(_dead(1, "b")) and not both(_dead(2, "a"))
    assert selector(everything=True)(_dead(None, "z"))
    with pytest.raises(ValueError, match="--all"):
        selector()
