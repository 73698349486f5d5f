"""Credentials in ``whatsapp_auth``: per session, every save one transaction, wiped with the caller's state."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.auth_store import AuthStore, InMemoryAuthStore, PostgresAuthStore
from shared.db.models import WhatsAppAuth, WhatsAppSession
from tests.integration.whatsapp.helpers import new_session


async def _session(sessionmaker: async_sessionmaker[AsyncSession]) -> str:
    salon_id, sid = new_session()
    async with sessionmaker() as db, db.begin():
        await db.execute(
            insert(WhatsAppSession).values(
                session_id=sid, salon_id=salon_id, state="new", desired="running", failures=0
            )
        )
    return sid


@pytest.fixture(params=["postgres", "memory"])
async def store(request: pytest.FixtureRequest, sessionmaker: async_sessionmaker[AsyncSession]) -> AuthStore:
    if request.param == "postgres":
        return PostgresAuthStore(sessionmaker)
    return InMemoryAuthStore()


async def test_save_load_update_delete_keys_and_wipe(
    store: AuthStore, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    sid = await _session(sessionmaker)
    other = await _session(sessionmaker)
    assert await store.load(sid) is None and not await store.exists(sid)
    await store.save(sid, engine="emulator", creds=b'{"v":1}', keys={("pre-key", "1"): b"a", ("pre-key", "2"): b"b"})
    await store.save(other, engine="emulator", creds=b"other")
    await store.save(sid, engine="emulator", keys={("pre-key", "1"): None, ("session", "x"): b"s"})
    loaded = await store.load(sid)
    assert loaded is not None and loaded.engine == "emulator" and loaded.creds == b'{"v":1}'
    assert loaded.keys == {("pre-key", "2"): b"b", ("session", "x"): b"s"}
    assert await store.exists(sid)
    assert await store.wipe(sid) == 3
    assert await store.load(sid) is None
    assert (await store.load(other)) is not None, "per session"


async def test_a_failed_save_writes_nothing(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    store = PostgresAuthStore(sessionmaker)
    sid = await _session(sessionmaker)
    await store.save(sid, engine="emulator", creds=b"v1", keys={("pre-key", "1"): b"old"})
    with pytest.raises(DBAPIError):
        # A key too long for its column fails the whole save: the creds in it are not written either.
        await store.save(sid, engine="emulator", creds=b"v2", keys={("pre-key", "x" * 300): b"new"})
    loaded = await store.load(sid)
    assert loaded is not None and loaded.creds == b"v1" and loaded.keys == {("pre-key", "1"): b"old"}


async def test_a_wipe_in_the_callers_transaction_is_rolled_back_with_it(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    store = PostgresAuthStore(sessionmaker)
    sid = await _session(sessionmaker)
    await store.save(sid, engine="emulator", creds=b"v1")
    async with sessionmaker() as db:
        await db.begin()
        assert await store.wipe(sid, db=db) == 1
        await db.rollback()
    assert await store.exists(sid)
    async with sessionmaker() as db, db.begin():
        await store.wipe(sid, db=db)
    async with sessionmaker() as db:
        assert (await db.execute(select(WhatsAppAuth).where(WhatsAppAuth.session_id == sid))).first() is None
