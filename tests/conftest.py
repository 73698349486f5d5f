"""Fixtures shared by every suite: settings pointing at this session's own database and vhost."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.config import Settings
from shared.db.session import make_engine, make_sessionmaker
from tests.security.logscan import InProcessLog, capture_inprocess_logs
from tests.support.infra import Infra, create_infra, destroy_infra

PARTNER_TOKEN = "test-partner-token-7f3a9c1e5b"
JWT_SECRET = "test-jwt-secret-0b8e4d2a6c9f1e3a"
APP_ID = 4242


@pytest.fixture(scope="session", autouse=True)
def inprocess_logs() -> Iterator[InProcessLog]:
    """Every log line of the test process, as JSON lines in test-output/logs/inprocess.log (the leak scan reads it)."""
    with capture_inprocess_logs() as capture:
        yield capture


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    """A private, migrated database and RabbitMQ vhost for this test session."""
    created = create_infra()
    try:
        yield created
    finally:
        destroy_infra(created)


@pytest.fixture(scope="session")
def test_env(infra: Infra) -> dict[str, str]:
    """Environment variables for settings and service processes of this session."""
    return {
        "ENVIRONMENT": "test",
        "DATABASE_URL": infra.database_url,
        "RABBITMQ_URL": infra.rabbitmq_url,
        "YCLIENTS_PARTNER_TOKEN": PARTNER_TOKEN,
        "YCLIENTS_APP_ID": str(APP_ID),
        "JWT_SECRET": JWT_SECRET,
        "RETRY_DELAYS_MS": "[200,400]",
        "OUTBOX_RELAY_INTERVAL_S": "0.5",
        "PUBLISH_TIMEOUT_S": "3",
        "LOG_LEVEL": "INFO",
    }


@pytest.fixture(scope="session")
def settings(test_env: dict[str, str]) -> Settings:
    """Settings as a service of this session would read them."""
    saved = dict(os.environ)
    os.environ.update(test_env)
    try:
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """An engine on this session's database."""
    eng = make_engine(settings.DATABASE_URL, pool_size=5)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions on this session's database."""
    return make_sessionmaker(engine)


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    """A connected broker on this session's vhost."""
    b = Broker(settings.RABBITMQ_URL, name="tests", publish_timeout_s=3)
    await asyncio.wait_for(b.connect(attempts=3), timeout=30)
    yield b
    await b.close()
