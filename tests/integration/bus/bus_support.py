"""Helpers for the bus tests: private work queues with their own routing keys, a scriptable handler, peeking."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.bus.broker import Broker, amqp_message
from shared.bus.consumer import Consumer, Delivery
from shared.bus.topology import WorkQueue
from shared.messages import Message, RegistrationRequested, YClientsDataChanged
from tests.support.wait import wait_for

RETRY_DELAYS_MS = [100, 200]

MakeQueue = Callable[..., WorkQueue]
StartConsumer = Callable[..., Awaitable[Consumer]]


def private_queue(keys: int = 1) -> WorkQueue:
    """A work queue of its own, bound to routing keys nobody else uses (tests never see each other's messages)."""
    tag = uuid.uuid4().hex[:10]
    return WorkQueue(f"t_{tag}", tuple(f"test.{tag}.k{i}" for i in range(keys)))


def registration(salon_id: int) -> RegistrationRequested:
    """A real catalog message for one salon."""
    return RegistrationRequested(salon_id=salon_id, data={"salon_ids": [salon_id]})


def data_changed(salon_id: int) -> YClientsDataChanged:
    """A real catalog message whose type no work queue consumes."""
    return YClientsDataChanged(
        salon_id=salon_id, data={"company_id": salon_id, "resource": "record", "dedup_key": uuid.uuid4().hex}
    )


async def publish(broker: Broker, msg: Message, routing_key: str) -> None:
    """Publish a catalog message (the envelope `Broker.publish` sends) to the exchange with `routing_key`."""
    await broker.publish_raw(amqp_message(msg), routing_key=routing_key)


@dataclass
class Call:
    """One handler invocation."""

    message_id: uuid.UUID
    salon_id: int | None
    attempt: int
    redelivered: bool
    headers: dict[str, Any]


@dataclass
class Recorder:
    """A handler that records every call and fails as `behaviour(call_number)` says (None = succeed)."""

    behaviour: Callable[[Call], Exception | None] = lambda _: None
    calls: list[Call] = field(default_factory=list)
    succeeded: list[Call] = field(default_factory=list)
    gave_up: list[tuple[uuid.UUID, str]] = field(default_factory=list)

    async def handle(self, msg: Message, delivery: Delivery) -> None:
        """The handler given to the consumer."""
        call = Call(msg.id, msg.salon_id, delivery.attempt, delivery.redelivered, dict(delivery.headers))
        self.calls.append(call)
        error = self.behaviour(call)
        if error is not None:
            raise error
        self.succeeded.append(call)

    async def give_up(self, msg: Message, reason: str) -> None:
        """The consumer's on_give_up hook."""
        self.gave_up.append((msg.id, reason))

    def calls_for(self, message_id: uuid.UUID) -> list[Call]:
        """Calls for one message, in order."""
        return [c for c in self.calls if c.message_id == message_id]


async def take(
    channel: AbstractChannel, queue: str, n: int = 1, *, timeout: float = 10
) -> list[AbstractIncomingMessage]:
    """Remove `n` messages from a queue, waiting for them (quorum queue counters lag; basic.get does not)."""
    q = await channel.declare_queue(queue, passive=True)
    taken: list[AbstractIncomingMessage] = []

    async def _more() -> bool:
        while len(taken) < n and (incoming := await q.get(no_ack=True, fail=False, timeout=5)) is not None:
            taken.append(incoming)
        return len(taken) >= n

    await wait_for(_more, timeout=timeout, what=f"{n} message(s) in {queue} (got {len(taken)})")
    return taken


async def is_empty(channel: AbstractChannel, queue: str) -> bool:
    """No message ready in a queue (a message found is put back)."""
    q = await channel.declare_queue(queue, passive=True)
    incoming = await q.get(no_ack=False, fail=False, timeout=5)
    if incoming is None:
        return True
    await incoming.nack(requeue=True)
    return False


def probe(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """An async probe for `wait_for` from a plain predicate."""

    async def _probe() -> bool:
        return check()

    return _probe
