"""`GET /marketplace/health` in the seed's shape, and the probes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from shared.bus.topology import WORK_QUEUES
from shared.config import Settings
from shared.tokens import issue_onboarding_token
from tests.unit.gateway.gateway_support import new_salon_id, running_gateway, with_broker_down, with_database_down


@pytest.fixture
async def consumers(channel: AbstractChannel) -> AsyncIterator[None]:
    """One consumer on every work queue, as if every worker were running.

    It holds at most one message per queue unacknowledged; closing the channel afterwards puts it back.
    """
    tags: list[tuple[str, str]] = []

    async def hold(message: AbstractIncomingMessage) -> None:
        return None

    await channel.set_qos(prefetch_count=1)
    for queue in WORK_QUEUES:
        declared = await channel.declare_queue(queue.name, passive=True)
        tags.append((queue.name, await declared.consume(hold)))
    yield
    for name, tag in tags:
        declared = await channel.declare_queue(name, passive=True)
        await declared.cancel(tag)


def assert_seed_shape(body: dict[str, object]) -> None:
    assert set(body) == {"status", "service", "timestamp", "environment", "dependencies", "workers"}
    assert body["environment"] == {"partner_token": True, "app_id": True, "jwt_secret": True, "base_url": True}
    assert body["service"] == "gateway"


async def test_health_is_degraded_while_a_worker_queue_has_no_consumer(client: httpx.AsyncClient) -> None:
    # No worker runs in these tests: the work queues exist (declared) but nobody consumes them.
    response = await client.get("/marketplace/health")
    body = response.json()
    assert response.status_code == 503
    assert_seed_shape(body)
    assert body["status"] == "degraded"
    assert body["dependencies"] == {"database": True, "broker": True}
    assert body["workers"] == {"registration": False, "whatsapp": False, "activation": False}


async def test_health_is_ok_when_every_worker_consumes(
    client: httpx.AsyncClient, consumers: None, settings: Settings
) -> None:
    response = await client.get("/marketplace/health")
    body = response.json()
    assert response.status_code == 200, body
    assert_seed_shape(body)
    assert body["status"] == "ok"
    assert body["workers"] == {"registration": True, "whatsapp": True, "activation": True}
    # Booleans only: no configured value appears in the answer.
    for secret in (settings.YCLIENTS_PARTNER_TOKEN.get_secret_value(), settings.JWT_SECRET.get_secret_value()):
        assert secret not in response.text


async def test_health_reports_the_broker_down(settings: Settings) -> None:
    async with running_gateway(with_broker_down(settings), wait_ready=False) as (_, client):
        response = await client.get("/marketplace/health")
    body = response.json()
    assert response.status_code == 503
    assert body["dependencies"] == {"database": True, "broker": False}
    assert body["workers"] == {"registration": False, "whatsapp": False, "activation": False}


async def test_probes(client: httpx.AsyncClient) -> None:
    healthz = await client.get("/healthz")
    readyz = await client.get("/readyz")
    metrics = await client.get("/metrics")
    assert healthz.json() == {"status": "ok", "service": "gateway"}
    assert readyz.status_code == 200
    assert readyz.json()["checks"] == {"database": True, "broker": True, "live_hub": True}
    assert metrics.status_code == 200
    assert 'marketplace_http_requests_total{route="/healthz",status="200"}' in metrics.text


async def test_with_the_database_down_reads_answer_503_and_the_page_still_opens(settings: Settings) -> None:
    token = issue_onboarding_token([new_salon_id()], secret=settings.JWT_SECRET)
    auth = {"Authorization": f"Bearer {token}"}
    async with running_gateway(with_database_down(settings)) as (_, client):
        status = await client.get("/marketplace/api/status/company_5")
        state = await client.get("/marketplace/api/state", headers=auth)
        events = await client.get("/marketplace/api/events", headers=auth)
        page = await client.get("/marketplace/onboarding", params={"token": token})
        health = await client.get("/marketplace/health")
        ready = await client.get("/readyz")

    assert status.status_code == 503 and status.json()["error"] == "unavailable"
    assert state.status_code == 503 and state.headers["retry-after"]
    assert events.status_code == 503
    # The page renders from the token alone; its script keeps asking for the state.
    assert page.status_code == 200 and "Регистрируем" in page.text
    assert health.status_code == 503 and health.json()["dependencies"] == {"database": False, "broker": True}
    assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
