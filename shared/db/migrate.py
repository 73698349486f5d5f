"""Prestart step: create the database named in DATABASE_URL if it is missing, then migrate to head."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from shared.config import get_settings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


async def ensure_database(database_url: str) -> bool:
    """Create the database if it does not exist; True when it was created."""
    url = make_url(database_url)
    name = url.database
    admin = url.set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        # Identifiers can't be bound as parameters; quote it the way PostgreSQL does.
        quoted = '"' + str(name).replace('"', '""') + '"'
        await conn.execute(f"CREATE DATABASE {quoted}")
        return True
    finally:
        await conn.close()


def alembic_config(database_url: str) -> Config:
    """Alembic configuration pointing at the project's migrations and the given database."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = database_url
    return cfg


def migrate(database_url: str) -> None:
    """Create the database if needed and upgrade it to the newest revision."""
    created = asyncio.run(ensure_database(database_url))
    if created:
        log.info("database created", extra={"database": make_url(database_url).database})
    command.upgrade(alembic_config(database_url), "head")


def main() -> None:
    """Entry point of `make migrate`."""
    logging.basicConfig(level=logging.INFO)
    migrate(get_settings().DATABASE_URL)


if __name__ == "__main__":
    main()
