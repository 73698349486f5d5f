"""Where engines keep a session's credentials: ``creds`` plus many ``keys`` (pre-keys, sessions, app-state keys).

Losing an update corrupts a WhatsApp session ("Bad MAC" floods), so every save is one transaction and nothing
lives only in memory. Rows are ``whatsapp_auth(session_id, kind, key_id)``; ``creds`` is the row
``(kind="creds", key_id="")``. A wipe (logout, 401/403, bad session) deletes every row of the session, inside
the caller's transaction when one is given, so "state logged_out" and "credentials gone" commit together.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.db import open_db
from shared.db.models import WhatsAppAuth

CREDS = ("creds", "")
KeyRef = tuple[str, str]


@dataclass(frozen=True)
class StoredAuth:
    """A session's credentials as one engine wrote them."""

    engine: str
    creds: bytes
    keys: dict[KeyRef, bytes] = field(default_factory=dict)


class AuthStore(ABC):
    """Credentials of many sessions, per session; saves are atomic."""

    @abstractmethod
    async def load(self, session_id: str) -> StoredAuth | None:
        """The session's credentials, or None when it has none."""

    @abstractmethod
    async def save(
        self,
        session_id: str,
        *,
        engine: str,
        creds: bytes | None = None,
        keys: Mapping[KeyRef, bytes | None] | None = None,
    ) -> None:
        """Write ``creds`` (when given) and ``keys`` (None deletes that key) in one transaction."""

    @abstractmethod
    async def wipe(self, session_id: str, *, db: AsyncSession | None = None) -> int:
        """Delete every credential of the session (in ``db``'s transaction when given); returns rows deleted."""

    async def exists(self, session_id: str) -> bool:
        """True when the session has stored credentials."""
        return await self.load(session_id) is not None


class PostgresAuthStore(AuthStore):
    """``whatsapp_auth`` rows; the ``whatsapp_sessions`` row must exist (foreign key)."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], *, slots: asyncio.Semaphore | None = None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._slots = slots

    async def load(self, session_id: str) -> StoredAuth | None:
        """The session's credentials, or None when it has none."""
        async with open_db(self._sessionmaker, self._slots, begin=False) as db:
            rows = (await db.execute(select(WhatsAppAuth).where(WhatsAppAuth.session_id == session_id))).scalars()
            creds: bytes | None = None
            engine = ""
            keys: dict[KeyRef, bytes] = {}
            for row in rows:
                if (row.kind, row.key_id) == CREDS:
                    creds, engine = row.value, row.engine
                else:
                    keys[(row.kind, row.key_id)] = row.value
        if creds is None:
            return None
        return StoredAuth(engine=engine, creds=creds, keys=keys)

    async def exists(self, session_id: str) -> bool:
        """True when the session has a ``creds`` row."""
        async with open_db(self._sessionmaker, self._slots, begin=False) as db:
            found = await db.execute(
                select(WhatsAppAuth.session_id).where(
                    WhatsAppAuth.session_id == session_id, WhatsAppAuth.kind == CREDS[0], WhatsAppAuth.key_id == ""
                )
            )
            return found.first() is not None

    async def save(
        self,
        session_id: str,
        *,
        engine: str,
        creds: bytes | None = None,
        keys: Mapping[KeyRef, bytes | None] | None = None,
    ) -> None:
        """Write ``creds`` (when given) and ``keys`` (None deletes that key) in one transaction."""
        upserts: list[dict[str, object]] = []
        deletes: list[KeyRef] = []
        if creds is not None:
            upserts.append({"kind": CREDS[0], "key_id": CREDS[1], "value": creds})
        for (kind, key_id), value in (keys or {}).items():
            if value is None:
                deletes.append((kind, key_id))
            else:
                upserts.append({"kind": kind, "key_id": key_id, "value": value})
        async with open_db(self._sessionmaker, self._slots) as db:
            if upserts:
                stmt = insert(WhatsAppAuth).values([{"session_id": session_id, "engine": engine, **u} for u in upserts])
                await db.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[WhatsAppAuth.session_id, WhatsAppAuth.kind, WhatsAppAuth.key_id],
                        set_={"value": stmt.excluded.value, "engine": stmt.excluded.engine, "updated_at": func.now()},
                    )
                )
            if deletes:
                await db.execute(
                    delete(WhatsAppAuth).where(
                        WhatsAppAuth.session_id == session_id,
                        tuple_(WhatsAppAuth.kind, WhatsAppAuth.key_id).in_(deletes),
                    )
                )

    async def wipe(self, session_id: str, *, db: AsyncSession | None = None) -> int:
        """Delete every credential of the session (in ``db``'s transaction when given); returns rows deleted."""
        stmt = delete(WhatsAppAuth).where(WhatsAppAuth.session_id == session_id)
        if db is not None:
            return (await db.execute(stmt)).rowcount  # type: ignore[attr-defined, no-any-return]
        async with open_db(self._sessionmaker, self._slots) as own:
            return (await own.execute(stmt)).rowcount  # type: ignore[attr-defined, no-any-return]


class InMemoryAuthStore(AuthStore):
    """A dict-backed store for unit tests of engines (same contract, no database)."""

    def __init__(self) -> None:
        self.data: dict[str, StoredAuth] = {}
        self.saves = 0

    async def load(self, session_id: str) -> StoredAuth | None:
        """The session's credentials, or None when it has none."""
        return self.data.get(session_id)

    async def save(
        self,
        session_id: str,
        *,
        engine: str,
        creds: bytes | None = None,
        keys: Mapping[KeyRef, bytes | None] | None = None,
    ) -> None:
        """Write ``creds`` and ``keys`` at once (a save without creds needs existing creds)."""
        current = self.data.get(session_id)
        new_creds = creds if creds is not None else (current.creds if current else None)
        if new_creds is None:
            raise ValueError("keys saved before creds")
        merged = dict(current.keys) if current else {}
        for ref, value in (keys or {}).items():
            if value is None:
                merged.pop(ref, None)
            else:
                merged[ref] = value
        self.data[session_id] = StoredAuth(engine=engine, creds=new_creds, keys=merged)
        self.saves += 1

    async def wipe(self, session_id: str, *, db: AsyncSession | None = None) -> int:
        """Forget the session's credentials."""
        gone = self.data.pop(session_id, None)
        return 0 if gone is None else 1 + len(gone.keys)
