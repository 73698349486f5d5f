"""Fixtures for the attack and fuzz tests: the gateway on the session's real broker and database, spies, rows."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.options import GatewayOptions
from shared.bus.broker import Broker
from shared.bus.topology import ACTIVATION, REGISTRATION, WHATSAPP, declare_all
from shared.config import Settings
from shared.db.models import Company, OutboxMessage
from shared.messages import (
    CompanyEnriched,
    CompanyEnrichedData,
    RegistrationRequested,
    RequestActivation,
    RequestPairing,
    YClientsDataChanged,
    YClientsWebhookReceived,
)
from tests.integration.gateway.sse_support import ServedGateway, serving_gateway
from tests.unit.gateway.gateway_support import Spy

Sessions = async_sessionmaker[AsyncSession]

# Every message type the gateway can publish: an attack that is refused must publish none of them.
GATEWAY_KEYS = (
    RegistrationRequested.ROUTING_KEY,
    RequestPairing.ROUTING_KEY,
    RequestActivation.ROUTING_KEY,
    YClientsWebhookReceived.ROUTING_KEY,
    YClientsDataChanged.ROUTING_KEY,
)
WORK_QUEUES = (REGISTRATION, WHATSAPP, ACTIVATION)
OPTIONS = GatewayOptions(heartbeat_s=0.5, snapshot_refresh_s=30, max_streams_per_token=5, sse_retry_ms=500)


@pytest.fixture(scope="module")
async def served(settings: Settings) -> AsyncIterator[ServedGateway]:
    """The gateway under uvicorn (a real HTTP server: chunked bodies, raw sockets, streams) for the module."""
    async with serving_gateway(settings, OPTIONS) as gateway:
        yield gateway


@pytest.fixture
async def http(served: ServedGateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the served gateway (streams get no read timeout: the tests bound every wait)."""
    async with httpx.AsyncClient(base_url=served.url, timeout=httpx.Timeout(10, read=None)) as client:
        yield client


@pytest.fixture
async def channel(broker: Broker, settings: Settings) -> AsyncIterator[AbstractChannel]:
    """A channel with the whole topology declared."""
    ch = await broker.open_channel(publisher_confirms=False)
    await declare_all(ch, settings.RETRY_DELAYS_MS)
    yield ch
    if not ch.is_closed:
        await ch.close()


@dataclass
class NoEffect:
    """Proves a refused request changed nothing: no message published, no outbox row written."""

    spy: Spy
    broker: Broker
    sessionmaker: Sessions
    outbox_before: int

    async def assert_clean(self) -> None:
        """Publish a marker after the refused request; nothing the gateway publishes may arrive before it."""
        marker = CompanyEnriched(salon_id=1, data=CompanyEnrichedData(salon_id=1, title="marker"))
        await self.broker.publish(marker)
        # Bound to the marker's key too, so the drain knows where the request's effects would have ended.
        seen = await self.spy.drain_until(marker)
        assert seen == [], f"a refused request published {[m.type for m in seen]}"
        assert await outbox_rows(self.sessionmaker) == self.outbox_before, "a refused request wrote to the outbox"


async def outbox_rows(sessionmaker: Sessions) -> int:
    """Rows in the gateway's fallback outbox."""
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(OutboxMessage))).scalar_one())


async def company_count(sessionmaker: Sessions) -> int:
    """Rows in `companies`."""
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Company))).scalar_one())


@pytest.fixture
async def no_effect(channel: AbstractChannel, broker: Broker, sessionmaker: Sessions) -> NoEffect:
    """A spy on every key the gateway publishes (and the marker's), with the outbox size before the attack."""
    spy = await Spy.bind(channel, *GATEWAY_KEYS, CompanyEnriched.ROUTING_KEY)
    return NoEffect(spy, broker, sessionmaker, await outbox_rows(sessionmaker))


async def purge_work_queues(channel: AbstractChannel) -> dict[str, int]:
    """Drop what a test published into the work queues (nothing consumes them here; later tests read them)."""
    purged: dict[str, int] = {}
    for queue in WORK_QUEUES:
        declared = await channel.declare_queue(queue.name, passive=True)
        result = await declared.purge()
        purged[queue.name] = int(getattr(result, "message_count", 0) or 0)
    return purged


async def poll(probe: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
    """`wait_for` for probes that run blocking clients in a thread."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


def compact(value: Any) -> str:
    """JSON without spaces (as clients send it)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
