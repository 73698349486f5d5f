"""Micro-batches on the real broker: messages waiting together are applied together; a bad one fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel

from shared.bus.batching import BatchPolicy
from shared.bus.broker import Broker
from shared.bus.consumer import Consumer
from shared.bus.errors import PermanentError
from shared.bus.topology import WorkQueue
from shared.messages import Message, RegistrationRequested
from tests.integration.bus.bus_support import (
    MakeQueue,
    Recorder,
    StartConsumer,
    is_empty,
    probe,
    publish,
    registration,
    take,
)
from tests.support.wait import wait_for


class BatchRecorder:
    """A batch handler that records the batches it got and refuses any batch holding a salon in `poison`."""

    def __init__(self, poison: set[int] | None = None) -> None:
        self.poison = poison or set()
        self.batches: list[list[int | None]] = []

    async def handle(self, msgs: Sequence[Message]) -> None:
        salons = [m.salon_id for m in msgs]
        if self.poison & {s for s in salons if s is not None}:
            raise PermanentError("a poisoned salon in the batch")
        self.batches.append(salons)


async def run_batching(
    broker: Broker,
    queue: WorkQueue,
    start_consumer: StartConsumer,
    single: Recorder,
    batches: BatchRecorder,
    policy: BatchPolicy,
    salons: list[int],
) -> Consumer:
    """Start a batching consumer on `queue` and publish one registration per salon, all at once."""
    consumer = await start_consumer(
        queue,
        {RegistrationRequested: single.handle},
        prefetch=32,
        batch_handlers={RegistrationRequested: batches.handle},
        batch_policy=policy,
    )
    await asyncio.gather(*(publish(broker, registration(s), queue.routing_keys[0]) for s in salons))
    return consumer


async def test_messages_waiting_together_are_applied_in_batches_and_all_acked(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    single, batches = Recorder(), BatchRecorder()
    salons = list(range(700, 760))
    policy = BatchPolicy(max_size=8, concurrency=2)
    consumer = await run_batching(broker, queue, start_consumer, single, batches, policy, salons)

    await wait_for(probe(lambda: consumer.processed == len(salons)), timeout=10, what="every message acked")
    applied = [s for batch in batches.batches for s in batch]
    assert sorted(s for s in applied if s is not None) == salons
    assert not single.calls, "nothing failed, so no message needed the one-message path"
    assert max(len(b) for b in batches.batches) > 1, "60 messages published at once never shared a batch"
    assert max(len(b) for b in batches.batches) <= 8
    # Closing the channel returns every delivery it did not ack: none may come back.
    await consumer.stop()
    assert await is_empty(channel, queue.name)


async def test_a_failed_batch_falls_back_to_one_message_at_a_time(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    poison = 805
    single = Recorder(lambda call: PermanentError("bad salon") if call.salon_id == poison else None)
    batches = BatchRecorder(poison={poison})
    salons = list(range(800, 812))
    policy = BatchPolicy(max_size=32, concurrency=1)
    consumer = await run_batching(broker, queue, start_consumer, single, batches, policy, salons)

    [dead] = await take(channel, queue.dead)
    assert dead.message_id == str(registration_id(single, poison))
    await wait_for(probe(lambda: consumer.processed == len(salons) - 1), timeout=10, what="the others acked")
    in_batches = {s for batch in batches.batches for s in batch}
    one_by_one = {c.salon_id for c in single.succeeded}
    # Every good message was applied exactly once, by a batch or alone; the poisoned one only ever failed.
    assert in_batches | one_by_one == set(salons) - {poison}
    assert not in_batches & one_by_one
    assert poison not in in_batches and [c.salon_id for c in single.calls].count(poison) == 1
    assert one_by_one, "the batch holding the poisoned message was applied one by one"
    # Closing the channel returns every delivery it did not ack: none may come back.
    await consumer.stop()
    assert await is_empty(channel, queue.name)


def registration_id(recorder: Recorder, salon_id: int) -> object:
    """The message id the one-message handler saw for a salon."""
    return next(c.message_id for c in recorder.calls if c.salon_id == salon_id)
