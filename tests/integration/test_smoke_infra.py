"""The test infrastructure itself: a migrated database and a working vhost."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def test_database_is_migrated(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
        tables = set((await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'"))).scalars())
    assert version
    assert {"companies", "marketplace_events", "whatsapp_sessions", "whatsapp_auth", "outbox"} <= tables
