"""The test infrastructure itself: a migrated database and a working vhost."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus.broker import Broker
from shared.bus.topology import REGISTRATION, declare_all
from shared.messages import RegistrationRequested


async def test_database_is_migrated(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        tables = set((await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'"))).scalars())
    assert version
    assert {"companies", "marketplace_events", "whatsapp_sessions", "whatsapp_auth", "outbox"} <= tables


async def test_publish_is_routed_to_work_queue(broker: Broker) -> None:
    channel = await broker.open_channel()
    await declare_all(channel, [200, 400])
    msg = RegistrationRequested(salon_id=1, data={"salon_ids": [1]})
    await broker.publish(msg)
    queue = await channel.declare_queue(REGISTRATION.name, passive=True)
    incoming = await queue.get(timeout=5)
    assert incoming is not None and incoming.message_id == str(msg.id)
    await incoming.ack()
