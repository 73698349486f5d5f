"""`python -m bench.refloop QUEUE`: the B3 reference — a plain aio-pika consumer on the same tables.

For each `registration.requested` message: one transaction that inserts the processed-message id
(`processed_messages`, conflict = already applied) and upserts each salon into `companies`; then the ack.
Same prefetch as our workers, an asyncpg pool as large as our engine's (pool + overflow), nothing else:
no audit event, no outbox, no follow-up publish, no enrichment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import uuid

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

CONSUMER = "bench.reference"


async def consume(queue_name: str, prefetch: int, pool_size: int) -> None:
    """Consume until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1),
        min_size=2,
        max_size=pool_size,
    )
    connection = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=prefetch)
    queue = await channel.declare_queue(queue_name, durable=True, arguments={"x-queue-type": "quorum"})

    async def handle(message: AbstractIncomingMessage) -> None:
        envelope = json.loads(message.body)
        async with pool.acquire() as conn, conn.transaction():
            new = await conn.fetchval(
                "INSERT INTO processed_messages (consumer, message_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                CONSUMER,
                uuid.UUID(envelope["id"]),
            )
            if new:
                user = envelope["data"].get("user") or {}
                for salon_id in envelope["data"]["salon_ids"]:
                    await conn.execute(
                        """
                        INSERT INTO companies (yclients_id, title, integration_status, whatsapp_connected,
                                               marketplace_user_id, marketplace_user_name)
                        VALUES ($1, $2, 'pending_whatsapp', false, $3, $4)
                        ON CONFLICT (yclients_id) DO UPDATE
                           SET marketplace_user_id = excluded.marketplace_user_id,
                               marketplace_user_name = excluded.marketplace_user_name, updated_at = now()
                        """,
                        salon_id,
                        f"Салон {salon_id}",
                        user.get("id"),
                        user.get("name"),
                    )
        await message.ack()

    await queue.consume(handle)
    print("consuming", flush=True)
    await stop.wait()
    await connection.close()
    await pool.close()


def main() -> None:
    """Run the reference consumer."""
    parser = argparse.ArgumentParser(prog="python -m bench.refloop")
    parser.add_argument("queue")
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--pool", type=int, default=20)
    args = parser.parse_args()
    # The standard loop, as our workers run (shared.runtime.run_until_signalled uses asyncio.run).
    asyncio.run(consume(args.queue, args.prefetch, args.pool))


if __name__ == "__main__":
    main()
