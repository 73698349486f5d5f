"""A consumer process whose handler never finishes: killed by the test while its message is unacked.

Usage: python blocking_consumer.py RABBITMQ_URL QUEUE ROUTING_KEY. Prints "ready", then "received <id>".
"""

from __future__ import annotations

import asyncio
import sys

from shared.bus.broker import Broker
from shared.bus.consumer import Consumer, Delivery
from shared.bus.topology import WorkQueue
from shared.messages import Message, RegistrationRequested


async def main(url: str, queue: str, routing_key: str) -> None:
    """Consume `queue` and block in the handler of the first message."""
    broker = Broker(url, name="test-blocking-consumer")
    await broker.connect(attempts=3)

    async def handle(msg: Message, delivery: Delivery) -> None:
        print(f"received {msg.id}", flush=True)
        await asyncio.Event().wait()

    consumer = Consumer(
        broker,
        WorkQueue(queue, (routing_key,)),
        {RegistrationRequested: handle},
        retry_delays_ms=[100, 200],
        prefetch=1,
    )
    await consumer.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
