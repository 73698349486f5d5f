"""The gateway's webhook and activation routes, with the real broker and database (the app in-process)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractQueue
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.errors import install_error_handlers
from services.gateway.routes import webhooks
from shared.bus import topology as t
from shared.bus.broker import Broker
from shared.config import Settings
from shared.db.models import OutboxMessage, ProcessedMessage
from shared.db.session import make_engine, make_sessionmaker
from shared.messages import Message, RequestActivation, YClientsDataChanged, YClientsWebhookReceived, decode
from shared.tokens import issue_onboarding_token
from tests.unit.activation.support import new_salon_id

Sessions = async_sessionmaker[AsyncSession]
KEYS = (YClientsWebhookReceived.ROUTING_KEY, YClientsDataChanged.ROUTING_KEY, RequestActivation.ROUTING_KEY)
DEAD_DATABASE = "postgresql+asyncpg://postgres@127.0.0.1:1/nowhere"


def gateway_app(settings: Settings, broker: Broker, sessionmaker: Sessions) -> FastAPI:
    """Only what these routes need from the gateway: state, error handlers, the router."""
    app = FastAPI()
    app.state.settings = settings
    app.state.broker = broker
    app.state.sessionmaker = sessionmaker
    install_error_handlers(app)
    app.include_router(webhooks.router)
    return app


@pytest.fixture
async def tap(broker: Broker) -> AsyncIterator[AbstractQueue]:
    """A private queue that sees every message these routes publish."""
    channel: AbstractChannel = await broker.open_channel(publisher_confirms=False)
    await t.declare_exchange(channel)
    queue = await channel.declare_queue(exclusive=True)
    for key in KEYS:
        await queue.bind(t.EXCHANGE, routing_key=key)
    yield queue
    await channel.close()


async def drained(queue: AbstractQueue) -> list[Message]:
    """The messages now in the queue (a confirmed publish is already routed)."""
    found: list[Message] = []
    while (incoming := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        found.append(decode(incoming.body))
    return found


@pytest.fixture
async def gateway(settings: Settings, broker: Broker, sessionmaker: Sessions) -> AsyncIterator[httpx.AsyncClient]:
    app = gateway_app(settings, broker, sessionmaker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        yield http


def lifecycle(settings: Settings, salon_id: int, event: str = "uninstall", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "salon_id": salon_id,
        "application_id": settings.YCLIENTS_APP_ID,
        "event": event,
        "partner_token": settings.YCLIENTS_PARTNER_TOKEN.get_secret_value(),
    }
    body.update(overrides)
    return body


def record_change(company_id: int, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "company_id": company_id,
        "resource": "record",
        "resource_id": 456,
        "status": "update",
        "data": {"id": 456, "services": [{"title": "Стрижка"}], "datetime": "2026-11-26T10:00:00+03:00"},
    }
    body.update(overrides)
    return body


# ---- lifecycle webhook ------------------------------------------------------------------------------------


async def test_a_lifecycle_webhook_is_published_without_the_token(
    gateway: httpx.AsyncClient, tap: AbstractQueue, settings: Settings
) -> None:
    salon = new_salon_id()

    response = await gateway.post("/webhook/yclients", json=lifecycle(settings, salon, extra_field="kept"))

    assert response.status_code == 200, response.text
    [msg] = await drained(tap)
    assert isinstance(msg, YClientsWebhookReceived)
    assert str(msg.id) == response.json()["message_id"]
    assert (msg.salon_id, msg.data.salon_id, msg.data.event) == (salon, salon, "uninstall")
    assert msg.data.application_id == settings.YCLIENTS_APP_ID
    assert msg.data.body == {
        "salon_id": salon,
        "application_id": settings.YCLIENTS_APP_ID,
        "event": "uninstall",
        "extra_field": "kept",
    }
    assert settings.YCLIENTS_PARTNER_TOKEN.get_secret_value() not in msg.model_dump_json()


@pytest.mark.parametrize(
    "overrides",
    [
        {"partner_token": "wrong-token"},
        {"partner_token": ""},
        {"application_id": 1},
    ],
)
async def test_a_webhook_not_from_yclients_is_refused_without_effect(
    overrides: dict[str, Any], gateway: httpx.AsyncClient, tap: AbstractQueue, settings: Settings
) -> None:
    response = await gateway.post("/webhook/yclients", json=lifecycle(settings, new_salon_id(), **overrides))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert await drained(tap) == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"not json", "JSON"),
        (b"", "JSON"),
        (b"[1, 2]", "JSON"),
        (json.dumps({"application_id": 1, "event": "uninstall", "partner_token": "x"}).encode(), "salon_id"),
        (json.dumps({"salon_id": -5, "application_id": 1, "event": "x", "partner_token": "x"}).encode(), "salon_id"),
        (json.dumps({"salon_id": 5, "application_id": 1, "event": "", "partner_token": "x"}).encode(), "event"),
    ],
)
async def test_a_malformed_webhook_gets_422_with_the_reason(
    content: bytes, reason: str, gateway: httpx.AsyncClient, tap: AbstractQueue
) -> None:
    response = await gateway.post("/webhook/yclients", content=content, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert reason in response.json()["detail"]
    assert await drained(tap) == []


async def test_every_delivery_of_a_repeated_webhook_is_its_own_message(
    gateway: httpx.AsyncClient, tap: AbstractQueue, settings: Settings
) -> None:
    body = lifecycle(settings, new_salon_id())
    statuses = [(await gateway.post("/webhook/yclients", json=body)).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
    msgs = await drained(tap)
    assert len({m.id for m in msgs}) == 3


async def test_broker_down_keeps_the_webhook_in_the_outbox_and_both_down_is_503(
    settings: Settings, sessionmaker: Sessions
) -> None:
    down = Broker(settings.RABBITMQ_URL, name="never-connected")
    salon = new_salon_id()
    app = gateway_app(settings, down, sessionmaker)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as http:
        stored = await http.post("/webhook/yclients", json=lifecycle(settings, salon))
    assert stored.status_code == 200
    async with sessionmaker() as s:
        row = await s.get(OutboxMessage, uuid.UUID(stored.json()["message_id"]))
        assert row is not None and row.routing_key == YClientsWebhookReceived.ROUTING_KEY
        await s.delete(row)
        await s.commit()

    dead_engine = make_engine(DEAD_DATABASE, pool_size=1)
    try:
        app = gateway_app(settings, down, make_sessionmaker(dead_engine))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            lost = await http.post("/webhook/yclients", json=lifecycle(settings, salon))
            data = await http.post("/webhook/yclients/data", json=record_change(salon))
    finally:
        await dead_engine.dispose()
    assert lost.status_code == data.status_code == 503
    assert lost.headers["retry-after"]


# ---- data webhooks ----------------------------------------------------------------------------------------


async def test_a_data_webhook_is_published_once_within_the_window(
    gateway: httpx.AsyncClient, tap: AbstractQueue, sessionmaker: Sessions
) -> None:
    company_id = new_salon_id()
    body = record_change(company_id)

    first = await gateway.post("/webhook/yclients/data", json=body)
    retry = await gateway.post("/webhook/yclients/data", json=body)
    changed = await gateway.post("/webhook/yclients/data", json=record_change(company_id, status="delete"))

    assert [r.status_code for r in (first, retry, changed)] == [200, 200, 200]
    assert retry.json()["status"] == "duplicate"
    msgs = await drained(tap)
    assert [m.data.status for m in msgs if isinstance(m, YClientsDataChanged)] == ["update", "delete"]
    published = msgs[0]
    assert isinstance(published, YClientsDataChanged)
    assert (published.salon_id, published.data.company_id, published.data.resource_id) == (company_id, company_id, 456)
    assert published.data.payload == body and len(published.data.dedup_key) == 64

    # Past the window the same content is a new change again (e.g. a record edited back and forth).
    async with sessionmaker() as s:
        await s.execute(
            update(ProcessedMessage)
            .where(ProcessedMessage.message_id == published.id)
            .values(processed_at=datetime.now(UTC) - timedelta(minutes=10))
        )
        await s.commit()
    later = await gateway.post("/webhook/yclients/data", json=body)
    assert later.json()["status"] == "accepted"
    assert len(await drained(tap)) == 1


async def test_concurrent_copies_of_a_data_webhook_publish_once(gateway: httpx.AsyncClient, tap: AbstractQueue) -> None:
    body = record_change(new_salon_id(), resource="client", resource_id="c-77", data={"name": "Анна"})

    responses = await asyncio.gather(*(gateway.post("/webhook/yclients/data", json=body) for _ in range(5)))

    assert all(r.status_code == 200 for r in responses)
    assert sorted(r.json()["status"] for r in responses) == ["accepted"] + ["duplicate"] * 4
    assert len(await drained(tap)) == 1


async def test_a_data_webhook_with_the_dedup_store_down_is_still_published(
    settings: Settings, broker: Broker, tap: AbstractQueue
) -> None:
    dead_engine = make_engine(DEAD_DATABASE, pool_size=1)
    try:
        app = gateway_app(settings, broker, make_sessionmaker(dead_engine))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            response = await http.post("/webhook/yclients/data", json=record_change(new_salon_id()))
    finally:
        await dead_engine.dispose()
    assert response.status_code == 200
    assert len(await drained(tap)) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"resource": "record", "resource_id": 1},
        {"company_id": "abc", "resource": "record"},
        {"company_id": 5, "resource": ""},
    ],
)
async def test_a_malformed_data_webhook_gets_422(
    body: dict[str, Any], gateway: httpx.AsyncClient, tap: AbstractQueue, sessionmaker: Sessions
) -> None:
    response = await gateway.post("/webhook/yclients/data", json=body)
    assert response.status_code == 422
    assert await drained(tap) == []


# ---- manual activation ------------------------------------------------------------------------------------


async def test_activation_is_requested_for_every_salon_of_the_token(
    gateway: httpx.AsyncClient, tap: AbstractQueue, settings: Settings
) -> None:
    salons = [new_salon_id(), new_salon_id()]
    token = issue_onboarding_token(salons, secret=settings.JWT_SECRET)

    response = await gateway.post("/marketplace/activate", json={"token": token})

    assert response.status_code == 202
    assert response.json() == {"success": True, "status": "activation_requested", "salon_ids": salons}
    msgs = await drained(tap)
    assert sorted((m.salon_id, m.data.reason) for m in msgs if isinstance(m, RequestActivation)) == [
        (s, "manual") for s in salons
    ]


async def test_activation_of_one_salon_of_the_token(
    gateway: httpx.AsyncClient, tap: AbstractQueue, settings: Settings
) -> None:
    salons = [new_salon_id(), new_salon_id()]
    token = issue_onboarding_token(salons, secret=settings.JWT_SECRET)

    response = await gateway.post(
        "/marketplace/activate", json={"salon_id": salons[1]}, headers={"Authorization": f"Bearer {token}"}
    )
    foreign = await gateway.post("/marketplace/activate", json={"token": token, "salon_id": new_salon_id()})

    assert response.status_code == 202 and response.json()["salon_ids"] == [salons[1]]
    assert foreign.status_code == 403
    assert [m.salon_id for m in await drained(tap)] == [salons[1]]


async def test_activation_needs_a_valid_token(
    gateway: httpx.AsyncClient, tap: AbstractQueue, settings: Settings
) -> None:
    salon = new_salon_id()
    expired = issue_onboarding_token(
        [salon], secret=settings.JWT_SECRET, now=datetime.now(UTC) - timedelta(hours=2), ttl_s=60
    )
    cases = {
        "missing": await gateway.post("/marketplace/activate", json={}),
        "forged": await gateway.post("/marketplace/activate", json={"token": "a.b.c"}),
        "expired": await gateway.post("/marketplace/activate", json={"token": expired}),
    }

    assert {k: r.status_code for k, r in cases.items()} == {"missing": 401, "forged": 401, "expired": 401}
    assert cases["expired"].json()["error"] == "token_expired"
    assert "YClients" in cases["missing"].json()["detail"]
    assert await drained(tap) == []
