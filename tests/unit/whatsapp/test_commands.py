"""Recording commands (the handler's service function) against the real database, without a broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.commands import NOTIFY_CHANNEL, record_command
from services.whatsapp.notify import asyncpg_dsn
from shared.bus.errors import PermanentError
from shared.config import Settings
from shared.db.models import WhatsAppSession
from shared.db.uow import UnitOfWork
from shared.messages import RequestLogout, RequestPairing, RequestPause
from tests.integration.whatsapp.helpers import new_session, session_row

LEASE_S = 10.0


def uow(sessionmaker: async_sessionmaker[AsyncSession]) -> UnitOfWork:
    return UnitOfWork(sessionmaker, producer="whatsapp")


async def test_a_pairing_request_creates_the_session_and_takes_the_free_lease(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    salon_id, sid = new_session()
    cmd = RequestPairing(salon_id=salon_id, data={"session_id": sid, "mode": "phone", "phone": "+7 916 123-45-67"})
    outcome = await record_command(cmd, uow=uow(sessionmaker), worker_id="w1", lease_s=LEASE_S)
    assert outcome.recorded and outcome.owner == "w1"
    row = await session_row(sessionmaker, sid)
    assert row is not None
    assert (row.salon_id, row.state, row.desired) == (salon_id, "new", "running")
    assert (row.command_seq, row.applied_seq) == (1, 0)
    assert (row.pairing_mode, row.pairing_phone) == ("phone", "79161234567")
    assert row.correlation_id == cmd.correlation_id
    assert row.lease_expires_at is not None and row.lease_expires_at > datetime.now(UTC) + timedelta(seconds=5)


async def test_a_redelivered_command_changes_nothing(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    salon_id, sid = new_session()
    cmd = RequestPairing(salon_id=salon_id, data={"session_id": sid})
    assert (await record_command(cmd, uow=uow(sessionmaker), worker_id="w1", lease_s=LEASE_S)).recorded
    again = await record_command(cmd, uow=uow(sessionmaker), worker_id="w2", lease_s=LEASE_S)
    assert not again.recorded
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.command_seq == 1 and row.owner == "w1"


async def test_a_command_for_a_session_another_worker_holds_leaves_the_lease_and_notifies(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    salon_id, sid = new_session()
    await record_command(
        RequestPairing(salon_id=salon_id, data={"session_id": sid}),
        uow=uow(sessionmaker),
        worker_id="owner",
        lease_s=LEASE_S,
    )
    notified: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(asyncpg_dsn(settings.DATABASE_URL))
    await conn.add_listener(NOTIFY_CHANNEL, lambda *args: notified.put_nowait(args[3]))
    try:
        outcome = await record_command(
            RequestPause(salon_id=salon_id, data={"session_id": sid}),
            uow=uow(sessionmaker),
            worker_id="other",
            lease_s=LEASE_S,
        )
        assert outcome.recorded and outcome.owner == "owner"
        seen = [await asyncio.wait_for(notified.get(), timeout=5)]
        while seen[-1] != sid:
            seen.append(await asyncio.wait_for(notified.get(), timeout=5))
    finally:
        await conn.close()
    row = await session_row(sessionmaker, sid)
    assert row is not None and (row.desired, row.command_seq, row.owner) == ("paused", 2, "owner")


async def test_an_expired_lease_is_taken_by_the_worker_recording_the_command(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    salon_id, sid = new_session()
    await record_command(
        RequestPairing(salon_id=salon_id, data={"session_id": sid}),
        uow=uow(sessionmaker),
        worker_id="dead",
        lease_s=LEASE_S,
    )
    async with sessionmaker() as db, db.begin():
        await db.execute(
            update(WhatsAppSession)
            .where(WhatsAppSession.session_id == sid)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    outcome = await record_command(
        RequestLogout(salon_id=salon_id, data={"session_id": sid}),
        uow=uow(sessionmaker),
        worker_id="alive",
        lease_s=LEASE_S,
    )
    assert outcome.owner == "alive"
    row = await session_row(sessionmaker, sid)
    assert row is not None and row.desired == "logged_out"


async def test_pause_or_logout_of_a_salon_without_a_session_is_a_no_op(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    salon_id, sid = new_session()
    outcome = await record_command(
        RequestLogout(salon_id=salon_id, data={"session_id": sid}),
        uow=uow(sessionmaker),
        worker_id="w",
        lease_s=LEASE_S,
    )
    assert not outcome.recorded
    assert await session_row(sessionmaker, sid) is None


@pytest.mark.parametrize(
    "cmd",
    [
        RequestPairing(data={"session_id": "salon_1"}),
        RequestPairing(salon_id=5, data={"session_id": "company_6"}),
        RequestPairing(data={"session_id": "company_7", "mode": "phone"}),
        RequestPairing(data={"session_id": "company_7", "mode": "phone", "phone": "12"}),
        RequestPause(data={"session_id": "company_x"}),
    ],
)
async def test_bad_commands_are_permanent_errors(
    cmd: RequestPairing | RequestPause, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    with pytest.raises(PermanentError):
        await record_command(cmd, uow=uow(sessionmaker), worker_id="w", lease_s=LEASE_S)
