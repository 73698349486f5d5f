"""An isolated database and RabbitMQ virtual host per test session, so parallel runs never collide."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg

from shared.db.migrate import migrate

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_BASE = os.environ.get("TEST_PG_BASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432")
AMQP_BASE = os.environ.get("TEST_AMQP_BASE_URL", "amqp://guest:guest@127.0.0.1:5672")


@dataclass(frozen=True)
class Infra:
    """Names and URLs of one test session's private database and vhost."""

    name: str
    database_url: str
    rabbitmq_url: str
    vhost: str


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def create_infra(prefix: str = "mp_test") -> Infra:
    """Create a fresh migrated database and an empty vhost with guest permissions."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    database_url = f"{PG_BASE}/{name}"
    migrate(database_url)
    return Infra(name, database_url, f"{AMQP_BASE}/{quote(name, safe='')}", name)


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def destroy_infra(infra: Infra) -> None:
    """Drop the database and delete the vhost (with every queue in it)."""
    try:
        _rabbitmqctl("delete_vhost", infra.vhost)
    finally:
        asyncio.run(_drop_database(infra.name))
