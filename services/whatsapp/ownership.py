"""One live owner per WhatsApp session across any number of worker processes: a lease in PostgreSQL.

The lease is two columns of ``whatsapp_sessions``: ``owner`` (the worker id: host, pid and a random suffix)
and ``lease_expires_at``. All times are the database's ``now()``, so worker clocks don't matter.

- **Claim**: a session that *needs an owner* and has none (``owner IS NULL`` or the lease expired) is taken
  with ``UPDATE ... WHERE session_id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)``: two workers never
  claim the same row, and a busy worker doesn't block the others. A session needs an owner while a command
  waits to be applied (``command_seq > applied_seq``) or while it should be live (``desired = 'running'`` and
  state pairing / connecting / connected / disconnected / engine_unreachable). Paused, logged-out, expired
  and replaced sessions hold no lease, so they cost nothing.
- **Renew**: every ``LEASE_CHECK_S`` each worker extends all its leases in one statement; a session missing
  from the result was lost (taken over after a stall): the worker closes its connection without touching
  the row. A worker that could not renew for ``LEASE_S`` closes all its connections (it can no longer know
  it is the owner).
- **Fencing**: every write a session runner makes is ``... WHERE session_id = :id AND owner = :me``; zero rows
  means ownership was lost, and the runner stops. A stale owner therefore can't overwrite the new owner's
  state; and in the emulator (as in WhatsApp) the new owner's connection replaces the old one (440), which
  the old one obeys.
- **Release**: a session that no longer needs a live connection (paused, logged out, pairing expired,
  replaced) is released in the same transaction that records it; on SIGTERM a worker releases everything it
  holds, so the others take over at their next pass instead of waiting for the lease to run out.

**Takeover bound.** If the owner dies without releasing (SIGKILL, host loss), its last renewal set
``lease_expires_at <= death + LEASE_S``; every other worker runs a claim pass at least every
``LEASE_CHECK_S``; so another worker claims the session within ``LEASE_S + LEASE_CHECK_S`` of the death
(defaults 10 s + 2 s = 12 s) and resumes it from the credentials in ``whatsapp_auth`` — no new scan. The
connection itself is back a few milliseconds (emulator) to seconds (WhatsApp) later.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import WhatsAppSession as WS

# States in which a session with desired = running is live and must have an owner.
LIVE_STATES = ("pairing", "connecting", "connected", "disconnected", "engine_unreachable")


def make_worker_id() -> str:
    """A worker id unique across hosts, processes and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def needs_owner() -> ColumnElement[bool]:
    """Sessions that need a live owner: a pending command, or desired running in a live state."""
    return or_(WS.command_seq > WS.applied_seq, and_(WS.desired == "running", WS.state.in_(LIVE_STATES)))


def lease_free() -> ColumnElement[bool]:
    """Sessions nobody holds: no owner or an expired lease."""
    return or_(WS.owner.is_(None), WS.lease_expires_at < func.now())


def _until(lease_s: float) -> ColumnElement[datetime]:
    return func.now() + timedelta(seconds=lease_s)


async def renew(db: AsyncSession, owner: str, lease_s: float) -> set[str]:
    """Extend every lease ``owner`` holds; returns the sessions it still owns."""
    rows = await db.execute(
        update(WS)
        .where(WS.owner == owner)
        .values(lease_expires_at=_until(lease_s))
        .returning(WS.session_id)
        .execution_options(synchronize_session=False)
    )
    return set(rows.scalars())


async def claim_batch(db: AsyncSession, owner: str, lease_s: float, limit: int) -> list[str]:
    """Claim up to ``limit`` sessions that need an owner and have none (SKIP LOCKED: no two workers collide)."""
    candidates = (
        select(WS.session_id)
        .where(needs_owner(), lease_free())
        .order_by(WS.lease_expires_at.asc().nulls_first())
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = await db.execute(
        update(WS)
        .where(WS.session_id.in_(candidates.scalar_subquery()), lease_free())
        .values(owner=owner, lease_expires_at=_until(lease_s))
        .returning(WS.session_id)
        .execution_options(synchronize_session=False)
    )
    return list(rows.scalars())


async def claim_one(db: AsyncSession, session_id: str, owner: str, lease_s: float) -> bool:
    """Claim one session if it needs an owner and is free (or already ours)."""
    row = await db.execute(
        update(WS)
        .where(WS.session_id == session_id, needs_owner(), or_(lease_free(), WS.owner == owner))
        .values(owner=owner, lease_expires_at=_until(lease_s))
        .returning(WS.session_id)
        .execution_options(synchronize_session=False)
    )
    return row.first() is not None


async def release_all(db: AsyncSession, owner: str, session_ids: Sequence[str] | None = None) -> int:
    """Give up leases (all of ``owner``'s, or the listed ones) without touching the sessions' state."""
    stmt = update(WS).where(WS.owner == owner)
    if session_ids is not None:
        stmt = stmt.where(WS.session_id.in_(list(session_ids)))
    result = await db.execute(
        stmt.values(owner=None, lease_expires_at=None).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
