"""The lease: concurrent claims never double-claim, renewals keep, expiry frees, release hands over."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp import ownership
from shared.db.models import WhatsAppSession as WS
from tests.integration.whatsapp.helpers import new_session

pytestmark = pytest.mark.integration


async def _sessions(sessionmaker: async_sessionmaker[AsyncSession], n: int, **values: object) -> list[str]:
    ids = []
    async with sessionmaker() as db, db.begin():
        for _ in range(n):
            salon_id, sid = new_session()
            ids.append(sid)
            row = {"session_id": sid, "salon_id": salon_id, "state": "connected", "desired": "running", "failures": 0}
            await db.execute(insert(WS).values(**{**row, **values}))
    return ids


async def _owners(sessionmaker: async_sessionmaker[AsyncSession], ids: list[str]) -> dict[str, str | None]:
    async with sessionmaker() as db:
        rows = await db.execute(select(WS.session_id, WS.owner).where(WS.session_id.in_(ids)))
        return {sid: owner for sid, owner in rows.all()}


async def _claim(sessionmaker: async_sessionmaker[AsyncSession], owner: str, limit: int) -> list[str]:
    async with sessionmaker() as db, db.begin():
        return await ownership.claim_batch(db, owner, 5.0, limit)


async def test_concurrent_claims_give_each_session_exactly_one_owner(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ids = await _sessions(sessionmaker, 60)
    claims = await asyncio.gather(*(_claim(sessionmaker, f"w{i}", 10_000) for i in range(4)))
    mine = [set(c) & set(ids) for c in claims]
    claimed = [sid for c in mine for sid in c]
    assert sorted(claimed) == sorted(set(claimed)), "no session claimed twice"
    assert set(claimed) == set(ids)
    owners = await _owners(sessionmaker, ids)
    for i, c in enumerate(mine):
        assert all(owners[sid] == f"w{i}" for sid in c)
    assert not set(await _claim(sessionmaker, "late", 10_000)) & set(ids), "held leases are not claimable"


async def test_what_needs_an_owner(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    live = await _sessions(sessionmaker, 1, state="pairing")
    idle = await _sessions(sessionmaker, 1, state="paused", desired="paused")
    expired = await _sessions(sessionmaker, 1, state="pairing_expired")
    pending = await _sessions(sessionmaker, 1, state="paused", desired="logged_out", command_seq=3, applied_seq=2)
    claimed = set(await _claim(sessionmaker, "w", 10_000))
    assert live[0] in claimed and pending[0] in claimed
    assert idle[0] not in claimed and expired[0] not in claimed


async def test_renew_keeps_an_expired_lease_frees_and_release_hands_over(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    [sid] = await _sessions(sessionmaker, 1)
    async with sessionmaker() as db, db.begin():
        assert await ownership.claim_one(db, sid, "a", 5.0)
        assert not await ownership.claim_one(db, sid, "b", 5.0), "held"
        assert sid in await ownership.renew(db, "a", 5.0)
        await db.execute(
            update(WS).where(WS.session_id == sid).values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        assert await ownership.claim_one(db, sid, "b", 5.0), "an expired lease is free"
        assert sid not in await ownership.renew(db, "a", 5.0), "the old owner learns it lost the session"
        assert await ownership.release_all(db, "b", [sid]) == 1
    assert (await _owners(sessionmaker, [sid]))[sid] is None
