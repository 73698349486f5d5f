"""The real engine (neonize) offline: a pairing request ends in ``engine_unreachable`` with a retry scheduled,
the retries happen with backoff, and the worker keeps answering its probes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.messages import QrIssued, RequestPairing, WhatsAppDisconnected
from tests.integration.whatsapp.helpers import EventTap, event_tap, new_session, park_created, session_row
from tests.support.processes import ServiceProcess, running_stack
from tests.support.wait import wait_for

pytestmark = pytest.mark.e2e
neonize = pytest.importorskip("neonize", reason="the optional `neonize` extra is not installed")


@pytest.fixture(scope="module", autouse=True)
async def _park_sessions(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[None]:
    """After the module's workers stopped, park its sessions so other modules' workers don't resume them."""
    yield
    await park_created(sessionmaker)


@pytest.fixture(scope="module")
def worker(test_env: dict[str, str]) -> Iterator[ServiceProcess]:
    with running_stack(test_env, "whatsapp_neonize") as stack:
        yield stack.start(
            "whatsapp",
            WHATSAPP_ENGINE="neonize",
            WHATSAPP_BACKOFF_BASE_S="1",
            WHATSAPP_BACKOFF_CAP_S="4",
        )


@pytest.fixture(scope="module")
async def tap(publisher: Broker, worker: ServiceProcess) -> AsyncIterator[EventTap]:
    async with event_tap(publisher) as t:
        yield t


async def test_offline_pairing_is_engine_unreachable_retried_and_the_worker_stays_healthy(
    worker: ServiceProcess, publisher: Broker, tap: EventTap, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    salon_id, sid = new_session()
    await publisher.publish(RequestPairing(salon_id=salon_id, data={"session_id": sid, "mode": "qr"}))

    [first] = await tap.wait_for(WhatsAppDisconnected, sid, timeout=30)
    assert first.data.retrying is True and first.data.retry_in_s is not None
    assert "unreachable" in first.data.reason
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.state == "engine_unreachable"
    assert row.retry_at is not None and row.retry_at > first.occurred_at, "a retry is scheduled"
    assert row.last_error and "whatsapp" in row.last_error.lower()

    # The retry really happens, later each time (backoff), and the process is still alive and ready.
    events = await tap.wait_for(WhatsAppDisconnected, sid, count=3, timeout=30)
    delays = [e.data.retry_in_s for e in events]
    assert delays[2] > delays[0]
    assert not tap.of(QrIssued, sid)
    async with httpx.AsyncClient(base_url=worker.url, timeout=5) as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert (await client.post("/emulator/scan", json={"session_id": sid, "qr": "x"})).status_code == 404
    assert worker.proc.poll() is None

    async def still_retrying() -> bool:
        current = await session_row(sessionmaker, sid)
        return current is not None and current.state == "engine_unreachable" and current.failures >= 3

    await wait_for(still_retrying, timeout=10, what="the failure count to follow the retries")
