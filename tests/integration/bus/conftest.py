"""Fixtures for the bus tests: private work queues removed after each test, consumers stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from shared.bus.batching import BatchHandler, BatchPolicy
from shared.bus.broker import Broker
from shared.bus.consumer import Consumer, GiveUpHook, Handler
from shared.bus.topology import WorkQueue
from shared.config import Settings
from shared.messages import Message
from tests.integration.bus.bus_support import RETRY_DELAYS_MS, MakeQueue, StartConsumer, private_queue


@pytest.fixture
async def channel(broker: Broker) -> AsyncIterator[AbstractChannel]:
    """A plain channel for peeking at queues."""
    ch = await broker.open_channel(publisher_confirms=False)
    yield ch
    if not ch.is_closed:
        await ch.close()


@pytest.fixture
async def make_queue(settings: Settings) -> AsyncIterator[MakeQueue]:
    """A factory of private work queues; every queue it made (with retry and dead queues) is deleted afterwards."""
    made: list[WorkQueue] = []

    def make(keys: int = 1) -> WorkQueue:
        queue = private_queue(keys)
        made.append(queue)
        return queue

    yield make
    # A connection of its own: a test may have left the shared one reconnecting.
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    try:
        ch = await connection.channel()
        for queue in made:
            for name in (queue.name, queue.dead, *(queue.retry(d) for d in RETRY_DELAYS_MS)):
                await ch.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture
async def start_consumer(broker: Broker, make_queue: MakeQueue) -> AsyncIterator[StartConsumer]:
    """Start a Consumer on a queue (retry delays 100, 200 ms); stopped afterwards, before `make_queue` cleans up."""
    started: list[Consumer] = []

    async def start(
        queue: WorkQueue,
        handlers: Mapping[type[Message], Handler],
        *,
        on_give_up: GiveUpHook | None = None,
        on: Broker | None = None,
        prefetch: int = 8,
        batch_handlers: Mapping[type[Message], BatchHandler] | None = None,
        batch_policy: BatchPolicy | None = None,
    ) -> Consumer:
        consumer = Consumer(
            on or broker,
            queue,
            handlers,
            retry_delays_ms=RETRY_DELAYS_MS,
            prefetch=prefetch,
            on_give_up=on_give_up,
            batch_handlers=batch_handlers,
            batch_policy=batch_policy,
        )
        await consumer.start()
        started.append(consumer)
        return consumer

    yield start
    for consumer in started:
        await consumer.stop(drain_timeout_s=2)
