"""`GET /marketplace/api/events`: snapshot first, live events from the broker, isolation, limits, reconnects."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.auth import token_key
from services.gateway.livehub import LiveHub
from services.gateway.options import GatewayOptions
from shared.bus.broker import Broker
from shared.config import Settings
from shared.messages import (
    ActivationFailed,
    ActivationFailedData,
    CompanyEnriched,
    CompanyEnrichedData,
    QrIssued,
    QrIssuedData,
    WhatsAppConnected,
    WhatsAppConnectedData,
    session_id_for,
)
from shared.tokens import issue_onboarding_token
from tests.integration.gateway.sse_support import EventReader, ServedGateway, serving_gateway
from tests.support.infra import Infra
from tests.support.wait import wait_for
from tests.unit.gateway.gateway_support import new_salon_id, put_company, put_session

pytestmark = pytest.mark.integration

OPTIONS = GatewayOptions(heartbeat_s=0.5, snapshot_refresh_s=1.5, max_streams_per_token=5, sse_retry_ms=500)


@pytest.fixture(scope="module")
async def served(settings: Settings) -> AsyncIterator[ServedGateway]:
    """One gateway under uvicorn for the module."""
    async with serving_gateway(settings, OPTIONS) as gateway:
        yield gateway


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """A client for streaming (no read timeout: the tests bound every wait themselves)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as client:
        yield client


def token_for(settings: Settings, *salon_ids: int, ttl_s: int = 3600) -> str:
    return issue_onboarding_token(list(salon_ids), secret=settings.JWT_SECRET, ttl_s=ttl_s)


def qr_issued(salon_id: int, seq: int = 1, payload: str | None = None) -> QrIssued:
    return QrIssued(
        data=QrIssuedData(
            session_id=session_id_for(salon_id),
            attempt_id="attempt-1",
            payload=payload or f"2@{uuid4().hex},bm9pc2U=,aWRlbnRpdHk=,YWR2",
            seq=seq,
            max=6,
            expires_at=datetime.now(UTC) + timedelta(seconds=60),
        )
    )


async def test_snapshot_first_then_a_qr_event_with_its_svg(
    served: ServedGateway,
    http: httpx.AsyncClient,
    broker: Broker,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    salon_id = new_salon_id()
    await put_company(sessionmaker, salon_id, title="Студия «Ирис»")
    url = f"{served.url}/marketplace/api/events"
    async with http.stream("GET", url, params={"token": token_for(settings, salon_id)}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-store")
        events = EventReader(response)

        first = await events.next()
        assert first.name == "snapshot"
        assert [s["salon_id"] for s in first.data["salons"]] == [salon_id]
        assert first.data["salons"][0]["title"] == "Студия «Ирис»"

        msg = qr_issued(salon_id, seq=2)
        await broker.publish(msg)
        event, _ = await events.until("whatsapp.qr_issued")

    assert event.data["salon_id"] == salon_id
    assert event.data["qr"]["payload"] == msg.data.payload
    assert event.data["qr"]["seq"] == 2 and event.data["qr"]["max"] == 6
    assert event.data["qr"]["svg"].startswith("<svg") and "<path" in event.data["qr"]["svg"]


async def test_events_of_other_salons_are_not_delivered(
    served: ServedGateway, http: httpx.AsyncClient, broker: Broker, settings: Settings
) -> None:
    mine, other = new_salon_id(), new_salon_id()
    async with http.stream(
        "GET", f"{served.url}/marketplace/api/events", params={"token": token_for(settings, mine)}
    ) as response:
        events = EventReader(response)
        assert (await events.next()).name == "snapshot"
        await broker.publish(qr_issued(other))
        await broker.publish(
            WhatsAppConnected(data=WhatsAppConnectedData(session_id=session_id_for(other), phone="79990001122"))
        )
        await broker.publish(CompanyEnriched(salon_id=mine, data=CompanyEnrichedData(salon_id=mine, title="Мой салон")))
        event, skipped = await events.until("registration.enriched")

    assert event.data == {**event.data, "salon_id": mine, "title": "Мой салон"}
    assert [e for e in skipped if e.name != "snapshot"] == []


async def test_a_multi_salon_token_gets_the_events_of_each_of_its_salons(
    served: ServedGateway, http: httpx.AsyncClient, broker: Broker, settings: Settings
) -> None:
    a, b = new_salon_id(), new_salon_id()
    async with http.stream(
        "GET", f"{served.url}/marketplace/api/events", params={"token": token_for(settings, a, b)}
    ) as response:
        events = EventReader(response)
        snapshot = await events.next()
        assert [s["salon_id"] for s in snapshot.data["salons"]] == [a, b]
        await broker.publish(qr_issued(b))
        await broker.publish(
            ActivationFailed(data=ActivationFailedData(salon_id=a, reason="HTTP 401", status_code=401, permanent=True))
        )
        qr, _ = await events.until("whatsapp.qr_issued")
        failed, _ = await events.until("activation.failed")

    assert qr.data["salon_id"] == b
    assert failed.data["salon_id"] == a and "ключ партнёра" in failed.data["error"]


async def test_heartbeats_and_a_refreshed_snapshot_keep_the_page_current(
    served: ServedGateway, http: httpx.AsyncClient, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id = new_salon_id()
    await put_company(sessionmaker, salon_id, title="Салон")
    async with http.stream(
        "GET", f"{served.url}/marketplace/api/events", params={"token": token_for(settings, salon_id)}
    ) as response:
        events = EventReader(response)
        assert (await events.next()).name == "snapshot"
        ping = await events.next(comments=True, timeout=3)
        assert ping == type(ping)(":", "ping")
        # A state with no event of its own (written by the worker only) still reaches the page.
        await put_session(sessionmaker, salon_id, state="engine_unreachable", last_error="dial failed")
        while True:
            snapshot, _ = await events.until("snapshot", timeout=5)
            if snapshot.data["salons"][0]["whatsapp"]["state"] == "engine_unreachable":
                break


async def test_the_stream_ends_with_an_expired_event_when_the_token_expires(
    served: ServedGateway, http: httpx.AsyncClient, settings: Settings
) -> None:
    token = token_for(settings, new_salon_id(), ttl_s=2)
    async with http.stream("GET", f"{served.url}/marketplace/api/events", params={"token": token}) as response:
        events = EventReader(response)
        assert (await events.next()).name == "snapshot"
        expired, _ = await events.until("expired", timeout=5)
        assert "YClients" in expired.data["detail"]
        assert await events.ended(timeout=5)


async def test_streams_per_token_are_limited(
    served: ServedGateway, http: httpx.AsyncClient, settings: Settings
) -> None:
    token = token_for(settings, new_salon_id())
    url = f"{served.url}/marketplace/api/events"
    hub: LiveHub = served.app.state.hub
    streams = [http.stream("GET", url, params={"token": token}) for _ in range(OPTIONS.max_streams_per_token)]
    opened = [await s.__aenter__() for s in streams]
    try:
        assert all(r.status_code == 200 for r in opened)
        refused = await http.get(url, params={"token": token})
        assert refused.status_code == 429
        assert refused.json()["error"] == "too_many_streams" and refused.headers["retry-after"]
        # Another admin (another token) is not affected (its 1-second token ends that stream by itself).
        other = await http.get(url, params={"token": token_for(settings, new_salon_id(), ttl_s=1)})
        assert other.status_code == 200

        # Closing one page frees its slot as soon as the server notices.
        await streams.pop().__aexit__(None, None, None)

        async def freed() -> bool:
            return hub.open_streams(token_key(token)) == OPTIONS.max_streams_per_token - 1

        await wait_for(freed, timeout=5, what="the closed stream released")
        async with http.stream("GET", url, params={"token": token}) as again:
            assert again.status_code == 200
    finally:
        for s in streams:
            await s.__aexit__(None, None, None)


async def test_no_token_no_stream(served: ServedGateway, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{served.url}/marketplace/api/events")
    assert response.status_code == 401 and response.json()["error"] == "token_missing"


def _close_connections(infra: Infra, connection_name: str) -> int:
    """Force-close our gateway's broker connections, as a broker restart would (other users' are untouched)."""
    listed = subprocess.run(
        # list_connections ignores -p: filter on the vhost column ourselves.
        ["rabbitmqctl", "-q", "list_connections", "pid", "vhost", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    closed = 0
    for line in listed.splitlines():
        pid, vhost, properties = [*line.split("\t", 2), "", ""][:3]
        if vhost == infra.vhost and f'{{"connection_name","{connection_name}"}}' in properties:
            subprocess.run(
                ["rabbitmqctl", "-q", "close_connection", pid, "test: broker restart"],
                check=True,
                capture_output=True,
                timeout=30,
            )
            closed += 1
    return closed


async def test_the_hub_rebinds_after_the_broker_connection_is_lost(
    settings: Settings, infra: Infra, broker: Broker, http: httpx.AsyncClient
) -> None:
    salon_id = new_salon_id()
    async with serving_gateway(settings, OPTIONS) as gateway:
        hub: LiveHub = gateway.app.state.hub
        async with http.stream(
            "GET", f"{gateway.url}/marketplace/api/events", params={"token": token_for(settings, salon_id)}
        ) as response:
            events = EventReader(response)
            assert (await events.next()).name == "snapshot"
            received = hub.received

            closed = await asyncio.to_thread(_close_connections, infra, "gateway")
            assert closed >= 1

            async def lost() -> bool:
                return not hub.is_consuming

            broker_of_gateway: Broker = gateway.app.state.broker

            async def back() -> bool:
                return hub.is_consuming and broker_of_gateway.is_connected

            await wait_for(lost, timeout=10, what="the gateway noticing the closed connection")
            await wait_for(back, timeout=30, what="the live-update consumer restored")

            # The exclusive queue is declared again and bound again: the same open page gets new events.
            async def delivered() -> bool:
                await broker.publish(qr_issued(salon_id))
                return hub.received > received

            await wait_for(delivered, timeout=15, interval=0.5, what="an event through the restored binding")
            event, _ = await events.until("whatsapp.qr_issued")
            assert event.data["salon_id"] == salon_id
