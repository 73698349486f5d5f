"""The consumer on the real broker: retries through the wait queues, parking in `.dead`, unroutable publishes."""

from __future__ import annotations

import time
import uuid

import pytest
from aio_pika.abc import AbstractChannel

from shared.bus import topology as t
from shared.bus.broker import Broker, amqp_message
from shared.bus.errors import PermanentError, PublishError, TransientError
from shared.messages import RegistrationRequested, YClientsDataChanged, encode
from tests.integration.bus.bus_support import (
    MakeQueue,
    Recorder,
    StartConsumer,
    data_changed,
    is_empty,
    probe,
    publish,
    registration,
    take,
)
from tests.support.wait import wait_for


class NotRetryable(Exception):
    """Like a YClients 401/422: the error itself says retrying is pointless."""

    retryable = False


def fail_first(n: int) -> Recorder:
    """A handler that fails transiently on the first `n` calls, then succeeds."""
    return Recorder(lambda call: TransientError(f"down (attempt {call.attempt})") if call.attempt <= n else None)


async def test_transient_failures_are_retried_through_the_wait_queues(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    recorder = fail_first(2)
    consumer = await start_consumer(queue, {RegistrationRequested: recorder.handle}, on_give_up=recorder.give_up)
    msg = registration(501)

    started = time.monotonic()
    await publish(broker, msg, queue.routing_keys[0])
    await wait_for(probe(lambda: bool(recorder.succeeded)), timeout=10, what="the third attempt to succeed")
    elapsed = time.monotonic() - started

    calls = recorder.calls_for(msg.id)
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert len(recorder.succeeded) == 1 and recorder.succeeded[0].message_id == msg.id
    # The broker's own record proves each retry waited in its step's queue (100 ms, then 200 ms).
    assert calls[1].headers["x-death"][0]["queue"] == queue.retry(100)
    assert calls[2].headers["x-death"][0]["queue"] == queue.retry(200)
    assert calls[2].headers["x-death"][0]["reason"] == "expired"
    assert calls[2].headers[t.H_LAST_ERROR] == "TransientError: down (attempt 2)"
    assert calls[2].headers[t.H_ROUTING_KEY] == queue.routing_keys[0]
    assert elapsed >= 0.3
    assert recorder.gave_up == []
    assert consumer.processed == 1
    for name in (queue.name, queue.dead, queue.retry(100), queue.retry(200)):
        assert await is_empty(channel, name), name


async def test_a_message_that_always_fails_is_parked_after_the_last_attempt(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    recorder = Recorder(lambda call: RuntimeError(f"boom {call.attempt}"))
    await start_consumer(queue, {RegistrationRequested: recorder.handle}, on_give_up=recorder.give_up)
    msg = registration(502)

    await publish(broker, msg, queue.routing_keys[0])
    [dead] = await take(channel, queue.dead)
    assert [c.attempt for c in recorder.calls_for(msg.id)] == [1, 2, 3]
    assert dead.message_id == str(msg.id)
    assert dead.correlation_id == msg.correlation_id
    assert dead.body == encode(msg)
    headers = dead.headers
    assert headers[t.H_ATTEMPT] == 3
    assert str(headers[t.H_DEAD_REASON]).startswith("exhausted after 3 attempts: RuntimeError: boom 3")
    assert headers[t.H_ROUTING_KEY] == queue.routing_keys[0]
    assert headers[t.H_ORIGINAL_QUEUE] == queue.name
    assert len(recorder.gave_up) == 1
    assert recorder.gave_up[0][0] == msg.id and "boom 3" in recorder.gave_up[0][1]
    assert await is_empty(channel, queue.name)


@pytest.mark.parametrize(
    "error", [PermanentError("bad salon"), NotRetryable("HTTP 422")], ids=["PermanentError", "retryable-False"]
)
async def test_a_permanent_error_parks_the_message_at_once(
    error: Exception, broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    recorder = Recorder(lambda _: error)
    await start_consumer(queue, {RegistrationRequested: recorder.handle}, on_give_up=recorder.give_up)
    msg = registration(503)

    await publish(broker, msg, queue.routing_keys[0])
    [dead] = await take(channel, queue.dead)
    assert len(recorder.calls_for(msg.id)) == 1
    assert dead.message_id == str(msg.id) and dead.body == encode(msg)
    assert dead.headers[t.H_ATTEMPT] == 1
    assert str(dead.headers[t.H_DEAD_REASON]).startswith(f"permanent: {type(error).__name__}")
    assert [reason for _, reason in recorder.gave_up] == [f"permanent: {type(error).__name__}: {error}"]
    for name in (queue.retry(100), queue.retry(200), queue.name):
        assert await is_empty(channel, name)


async def test_an_undecodable_message_is_parked_with_the_reason(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    recorder = Recorder()
    await start_consumer(queue, {RegistrationRequested: recorder.handle})
    garbage = amqp_message(registration(504))
    garbage.body = b'{"type": "registration.requested", "salon_id": "not a number"'

    await broker.publish_raw(garbage, routing_key=queue.routing_keys[0])
    [dead] = await take(channel, queue.dead)
    assert recorder.calls == []
    assert dead.body == garbage.body
    assert dead.message_id == garbage.message_id
    assert str(dead.headers[t.H_DEAD_REASON]).startswith("undecodable message: ValidationError")
    assert dead.headers[t.H_ATTEMPT] == 1


async def test_a_message_without_a_handler_is_parked(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    await start_consumer(queue, {})
    msg = registration(505)

    await publish(broker, msg, queue.routing_keys[0])
    [dead] = await take(channel, queue.dead)
    assert dead.headers[t.H_DEAD_REASON] == f"no handler for registration.requested in {queue.name}"


async def test_a_publish_nobody_is_bound_to_raises(broker: Broker, channel: AbstractChannel) -> None:
    unbound = f"test.nobody.{uuid.uuid4().hex}"
    with pytest.raises(PublishError, match="not confirmed"):
        await publish(broker, registration(506), unbound)

    # The publishing channel survives the returned message.
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(t.EXCHANGE, routing_key=unbound)
    msg = registration(506)
    await publish(broker, msg, unbound)
    incoming = await queue.get(timeout=5)
    assert incoming.message_id == str(msg.id)


async def test_broker_publish_routes_by_the_message_type(broker: Broker, channel: AbstractChannel) -> None:
    # No work queue consumes this type, so nobody else's queue receives the test message.
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(t.EXCHANGE, routing_key=YClientsDataChanged.ROUTING_KEY)
    msg = data_changed(507)
    try:
        await broker.publish(msg)
        incoming = await queue.get(timeout=5)
    finally:
        await queue.unbind(t.EXCHANGE, routing_key=YClientsDataChanged.ROUTING_KEY)
    assert incoming.message_id == str(msg.id)
    assert incoming.correlation_id == msg.correlation_id
    assert incoming.type == incoming.routing_key == "yclients.data_changed"
    assert incoming.delivery_mode == 2
    assert incoming.body == encode(msg)
