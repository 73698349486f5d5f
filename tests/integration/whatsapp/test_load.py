"""A light load check: 1,000 emulator sessions pairing at once in one worker (run with ``-m slow``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.whatsapp.emulator.engine import EmulatorTimings
from services.whatsapp.emulator.server import PostgresEmulatorServer
from shared.config import Settings
from shared.db.models import WhatsAppSession
from shared.db.session import make_engine, make_sessionmaker
from shared.messages import QrIssued, RequestPairing, WhatsAppConnected
from tests.integration.whatsapp.helpers import in_process_worker, new_session
from tests.support.wait import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SESSIONS = int(os.environ.get("WHATSAPP_LOAD_SESSIONS", "1000"))


@pytest.fixture
async def production_pool(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """A database engine sized as a worker's (``make_engine`` defaults), not the tests' small one."""
    engine = make_engine(settings.DATABASE_URL)
    yield engine
    await engine.dispose()


async def test_a_thousand_sessions_pair_at_once_in_one_worker(
    production_pool: AsyncEngine, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    sm: async_sessionmaker[AsyncSession] = make_sessionmaker(production_pool)
    lease_engine = make_engine(settings.DATABASE_URL, pool_size=1)
    worker = in_process_worker(
        sm,
        settings.DATABASE_URL,
        lease_s=10,
        check_s=2,
        timings=EmulatorTimings(60, 20, 6, 160),
        lease_sessionmaker=make_sessionmaker(lease_engine),
    )
    # The broker's prefetch (32) bounds how many commands a worker handles at once.
    prefetch = asyncio.Semaphore(32)

    async def command(salon_id: int, session_id: str) -> None:
        async with prefetch:
            await worker.command(RequestPairing(salon_id=salon_id, data={"session_id": session_id}))

    worker.start()
    await worker.ready()
    sessions = [new_session() for _ in range(SESSIONS)]
    started = time.monotonic()
    try:
        await asyncio.gather(*(command(salon, sid) for salon, sid in sessions))

        async def all_qrs() -> bool:
            return len(worker.recorder.of(QrIssued)) >= SESSIONS

        await wait_for(all_qrs, timeout=120, interval=0.5, what=f"{SESSIONS} QR codes")
        qr_time = time.monotonic() - started
        server = PostgresEmulatorServer(sm)
        scans = await asyncio.gather(
            *(server.scan(q.data.session_id, q.data.payload, "79990000000") for q in worker.recorder.of(QrIssued))
        )
        assert all(scans)

        async def all_connected() -> bool:
            return len(worker.recorder.of(WhatsAppConnected)) >= SESSIONS

        await wait_for(all_connected, timeout=180, interval=0.5, what=f"{SESSIONS} connections")
        total = time.monotonic() - started
        async with sm() as db:
            connected = (
                await db.execute(
                    select(func.count()).where(
                        WhatsAppSession.session_id.in_([sid for _, sid in sessions]),
                        WhatsAppSession.state == "connected",
                        WhatsAppSession.owner == worker.worker_id,
                    )
                )
            ).scalar_one()
        assert connected == SESSIONS
        assert len(worker.recorder.of(QrIssued)) == SESSIONS, "one QR each, no duplicates"
        print(f"\n{SESSIONS} sessions: QR shown for all in {qr_time:.1f}s, all connected in {total:.1f}s")
        assert total < 120
        assert "leases not renewed" not in caplog.text and "session step failed" not in caplog.text
    finally:
        await worker.shutdown()
        await lease_engine.dispose()
