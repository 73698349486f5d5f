"""Fixtures for the attack and fuzz tests: the gateway on the session's real broker and database, spies, rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
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
from shared.db.models import Company, MarketplaceEvent, OutboxMessage, ProcessedMessage
from shared.messages import (
    CompanyEnriched,
    CompanyEnrichedData,
    RegistrationRequested,
    RequestActivation,
    RequestPairing,
    YClientsDataChanged,
    YClientsWebhookReceived,
)
from shared.tokens import encode_user_data, issue_onboarding_token, sign_user_data
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


@pytest.fixture(scope="package")
async def served(settings: Settings) -> AsyncIterator[ServedGateway]:
    """The gateway under uvicorn (a real HTTP server: chunked bodies, raw sockets, streams) for this folder."""
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
    """Proves a refused request changed nothing: no message published, no row written anywhere it could write."""

    spy: Spy
    broker: Broker
    sessionmaker: Sessions
    outbox_before: set[uuid.UUID]
    since: datetime

    async def assert_clean(self) -> None:
        """Publish a marker after the refused request; nothing the gateway publishes may arrive before it."""
        marker = CompanyEnriched(salon_id=1, data=CompanyEnrichedData(salon_id=1, title="marker"))
        await self.broker.publish(marker)
        # Bound to the marker's key too, so the drain knows where the request's effects would have ended.
        seen = await self.spy.drain_until(marker)
        assert seen == [], f"a refused request published {[m.type for m in seen]}"
        # Rows may leave meanwhile (a relay publishes them); none may appear.
        written = await outbox_ids(self.sessionmaker) - self.outbox_before
        assert written == set(), "a refused request wrote to the outbox"
        assert await rows_written_since(self.sessionmaker, self.since) == {}, "a refused request wrote rows"


async def database_now(sessionmaker: Sessions) -> datetime:
    """PostgreSQL's clock (the one its default timestamps use)."""
    async with sessionmaker() as session:
        now: datetime = (await session.execute(select(func.clock_timestamp()))).scalar_one()
        return now


async def rows_written_since(sessionmaker: Sessions, since: datetime) -> dict[str, int]:
    """Rows created or changed since `since` in the tables a request could reach (dedup keys, companies, audit)."""
    stamped = {
        "processed_messages": (ProcessedMessage, ProcessedMessage.processed_at),
        "companies": (Company, Company.updated_at),
        "marketplace_events": (MarketplaceEvent, MarketplaceEvent.created_at),
    }
    written: dict[str, int] = {}
    async with sessionmaker() as session:
        for name, (table, column) in stamped.items():
            count = (await session.execute(select(func.count()).select_from(table).where(column >= since))).scalar_one()
            if count:
                written[name] = int(count)
    return written


async def outbox_ids(sessionmaker: Sessions) -> set[uuid.UUID]:
    """The ids of the rows now in the fallback outbox."""
    async with sessionmaker() as session:
        return set((await session.execute(select(OutboxMessage.id))).scalars())


async def company_count(sessionmaker: Sessions) -> int:
    """Rows in `companies`."""
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Company))).scalar_one())


@pytest.fixture
async def channel_spy(channel: AbstractChannel) -> Spy:
    """A spy on every key the gateway publishes (for the accepted controls)."""
    return await Spy.bind(channel, *GATEWAY_KEYS)


@pytest.fixture
async def no_effect(channel: AbstractChannel, broker: Broker, sessionmaker: Sessions) -> NoEffect:
    """A spy on every key the gateway publishes (and the marker's), the outbox and the clock before the attack."""
    spy = await Spy.bind(channel, *GATEWAY_KEYS, CompanyEnriched.ROUTING_KEY)
    return NoEffect(spy, broker, sessionmaker, await outbox_ids(sessionmaker), await database_now(sessionmaker))


def token_for(settings: Settings, *salon_ids: int, ttl_s: int = 3600) -> str:
    """A genuine onboarding token for these salons."""
    return issue_onboarding_token(list(salon_ids), secret=settings.JWT_SECRET, ttl_s=ttl_s)


def bearer(token: str) -> dict[str, str]:
    """The header the onboarding page sends."""
    return {"Authorization": f"Bearer {token}"}


def user_data_bytes(user: dict[str, Any]) -> bytes:
    """The decoded `user_data` as YClients builds it: compact UTF-8 JSON."""
    return json.dumps(user, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def signed_user_data(settings: Settings, user: dict[str, Any]) -> dict[str, str]:
    """`user_data` and `user_data_sign` exactly as YClients sends them."""
    raw = user_data_bytes(user)
    return {
        "user_data": encode_user_data(raw),
        "user_data_sign": sign_user_data(raw, settings.YCLIENTS_PARTNER_TOKEN.get_secret_value()),
    }
