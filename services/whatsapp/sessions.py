"""State transitions of ``whatsapp_sessions``, each one transaction with the message it causes (outbox).

Every write is fenced by the lease (``WHERE owner = :me``): a worker that lost a session can't change it
(services/whatsapp/ownership.py). Guards in the same ``WHERE`` make the events exactly-once: a QR event per
(attempt, ref), one ``WhatsAppConnected`` per connection, one ``WhatsAppDisconnected`` per failure.

A transition that leaves the session without a live connection (paused, logged out, expired, replaced)
releases the lease in the same statement — unless a newer command arrived meanwhile, which the caller then
applies.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.whatsapp.engine import PairingCodeEvent, QrEvent
from shared.db.models import WhatsAppSession as WS
from shared.db.uow import UnitOfWork
from shared.messages import (
    Message,
    PairingCodeIssued,
    PairingExpired,
    QrIssued,
    WhatsAppConnected,
    WhatsAppDisconnected,
    WhatsAppLoggedOut,
)

Wipe = Callable[[AsyncSession], Awaitable[None]]

_NO_PAIRING: dict[str, Any] = {
    "qr_payload": None,
    "qr_seq": None,
    "qr_max": None,
    "qr_expires_at": None,
    "pairing_code": None,
    "pairing_code_expires_at": None,
}


class LostOwnership(Exception):
    """The session is no longer this worker's (its lease was taken over): stop without writing."""


@dataclass(frozen=True)
class SessionRow:
    """What a runner needs to know about its session."""

    session_id: str
    salon_id: int
    state: str
    desired: str
    owner: str | None
    attempt_id: str | None
    pairing_mode: str | None
    pairing_phone: str | None
    phone: str | None
    failures: int
    retry_at: datetime | None
    command_seq: int
    applied_seq: int
    correlation_id: str | None

    @classmethod
    def of(cls, row: WS) -> SessionRow:
        """Snapshot of an ORM row."""
        return cls(
            session_id=row.session_id,
            salon_id=row.salon_id,
            state=row.state,
            desired=row.desired,
            owner=row.owner,
            attempt_id=row.attempt_id,
            pairing_mode=row.pairing_mode,
            pairing_phone=row.pairing_phone,
            phone=row.phone,
            failures=row.failures,
            retry_at=row.retry_at,
            command_seq=row.command_seq,
            applied_seq=row.applied_seq,
            correlation_id=row.correlation_id,
        )

    @property
    def command_pending(self) -> bool:
        """A command was recorded after the last one applied."""
        return self.command_seq > self.applied_seq


def _follow(row: WS) -> dict[str, Any]:
    return {"correlation_id": row.correlation_id or str(uuid.uuid4()), "salon_id": row.salon_id}


async def load(db: AsyncSession, session_id: str) -> SessionRow | None:
    """The session's row, or None."""
    row = (await db.execute(select(WS).where(WS.session_id == session_id))).scalar_one_or_none()
    return None if row is None else SessionRow.of(row)


async def _fenced(
    db: AsyncSession, session_id: str, owner: str, values: dict[str, Any], *guards: ColumnElement[bool]
) -> WS | None:
    """UPDATE the owner's row; None when a guard failed; LostOwnership when the row isn't ``owner``'s."""
    row = (
        await db.execute(
            update(WS)
            .where(WS.session_id == session_id, WS.owner == owner, *guards)
            .values(**values)
            .returning(WS)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one_or_none()
    if row is None:
        current = (await db.execute(select(WS.owner).where(WS.session_id == session_id))).scalar_one_or_none()
        if current != owner:
            raise LostOwnership(session_id)
    return row


def _release(applied_seq: int | None) -> dict[str, Any]:
    """Give the lease up unless a command newer than the one applied is waiting."""
    done = WS.command_seq == (applied_seq if applied_seq is not None else WS.applied_seq)
    return {
        "owner": case((done, None), else_=WS.owner),
        "lease_expires_at": case((done, None), else_=WS.lease_expires_at),
    }


def _applied(applied_seq: int | None) -> dict[str, Any]:
    return {} if applied_seq is None else {"applied_seq": applied_seq}


async def mark_applied(uow: UnitOfWork, session_id: str, owner: str, applied_seq: int) -> None:
    """The command ``applied_seq`` needed nothing more (e.g. pairing asked while connected)."""
    async with uow:
        await _fenced(uow.session, session_id, owner, {"applied_seq": applied_seq})
        await uow.commit()


async def begin_pairing(
    uow: UnitOfWork,
    session_id: str,
    owner: str,
    *,
    attempt_id: str,
    mode: str,
    phone: str | None,
    applied_seq: int | None = None,
) -> None:
    """A new pairing attempt starts: state ``pairing``, no QR yet."""
    async with uow:
        await _fenced(
            uow.session,
            session_id,
            owner,
            {
                "state": "pairing",
                "attempt_id": attempt_id,
                "pairing_mode": mode,
                "pairing_phone": phone,
                "phone": None,
                "last_error": None,
                "retry_at": None,
                **_NO_PAIRING,
                **_applied(applied_seq),
            },
        )
        await uow.commit()


async def record_qr(uow: UnitOfWork, session_id: str, owner: str, ev: QrEvent) -> bool:
    """Store the QR of ref ``ev.seq`` and emit ``QrIssued`` — once per (attempt, ref)."""
    async with uow:
        row = await _fenced(
            uow.session,
            session_id,
            owner,
            {"qr_payload": ev.payload, "qr_seq": ev.seq, "qr_max": ev.max, "qr_expires_at": ev.expires_at},
            WS.state == "pairing",
            WS.attempt_id == ev.attempt_id,
            (WS.qr_seq.is_(None)) | (WS.qr_seq < ev.seq),
        )
        if row is None:
            return False
        uow.emit(
            QrIssued(
                **_follow(row),
                data={
                    "session_id": session_id,
                    "attempt_id": ev.attempt_id,
                    "payload": ev.payload,
                    "seq": ev.seq,
                    "max": ev.max,
                    "expires_at": ev.expires_at,
                },
            )
        )
        await uow.commit()
        return True


async def record_pairing_code(uow: UnitOfWork, session_id: str, owner: str, ev: PairingCodeEvent) -> bool:
    """Store the pairing code and emit ``PairingCodeIssued`` — once per code."""
    async with uow:
        row = await _fenced(
            uow.session,
            session_id,
            owner,
            {"pairing_code": ev.code, "pairing_code_expires_at": ev.expires_at},
            WS.state == "pairing",
            WS.attempt_id == ev.attempt_id,
            WS.pairing_code.is_distinct_from(ev.code),
        )
        if row is None:
            return False
        uow.emit(
            PairingCodeIssued(
                **_follow(row),
                data={
                    "session_id": session_id,
                    "attempt_id": ev.attempt_id,
                    "code": ev.code,
                    "expires_at": ev.expires_at,
                },
            )
        )
        await uow.commit()
        return True


async def record_pairing_expired(uow: UnitOfWork, session_id: str, owner: str, attempt_id: str) -> bool | None:
    """The attempt ran out: ``pairing_expired``, ``PairingExpired``; returns whether the lease was released.

    None when the attempt was no longer current (nothing written).
    """
    async with uow:
        row = await _fenced(
            uow.session,
            session_id,
            owner,
            {"state": "pairing_expired", "last_error": None, "retry_at": None, **_NO_PAIRING, **_release(None)},
            WS.state == "pairing",
            WS.attempt_id == attempt_id,
        )
        if row is None:
            return None
        uow.emit(PairingExpired(**_follow(row), data={"session_id": session_id, "attempt_id": attempt_id}))
        await uow.commit()
        return row.owner is None


async def record_connecting(
    uow: UnitOfWork, session_id: str, owner: str, *, applied_seq: int | None = None
) -> SessionRow:
    """A connection attempt with credentials starts (a session seen connected stays so until proven otherwise)."""
    async with uow:
        row = await _fenced(
            uow.session,
            session_id,
            owner,
            {
                "state": case((WS.state == "connected", "connected"), else_="connecting"),
                **_NO_PAIRING,
                **_applied(applied_seq),
            },
        )
        assert row is not None
        await uow.commit()
        return SessionRow.of(row)


async def record_connected(
    uow: UnitOfWork, session_id: str, owner: str, phone: str | None, *, resumed_silently: bool
) -> bool:
    """The session is online; emits ``WhatsAppConnected`` unless it only resumed a connection others saw as live.

    ``resumed_silently`` is the runner's first connection (a takeover or a restart): when the row already says
    connected with the same phone, nobody saw it drop, so no event (one ``connected`` per connection).
    """
    async with uow:
        db = uow.session
        current = (
            await db.execute(select(WS.owner, WS.state, WS.phone).where(WS.session_id == session_id).with_for_update())
        ).first()
        if current is None or current.owner != owner:
            raise LostOwnership(session_id)
        announce = not (resumed_silently and current.state == "connected" and current.phone == phone)
        values: dict[str, Any] = {
            "state": "connected",
            "phone": phone,
            "last_error": None,
            "retry_at": None,
            **_NO_PAIRING,
        }
        if announce:
            values["connected_at"] = func.now()
        row = await _fenced(db, session_id, owner, values)
        assert row is not None
        if announce:
            uow.emit(WhatsAppConnected(**_follow(row), data={"session_id": session_id, "phone": phone}))
        await uow.commit()
        return announce


async def record_stable(uow: UnitOfWork, session_id: str, owner: str) -> None:
    """The connection held long enough: the backoff starts over."""
    async with uow:
        await _fenced(uow.session, session_id, owner, {"failures": 0}, WS.state == "connected")
        await uow.commit()


async def record_disconnected(
    uow: UnitOfWork,
    session_id: str,
    owner: str,
    *,
    code: int,
    reason: str,
    failures: int,
    retry_in_s: float,
    unreachable: bool,
) -> None:
    """A transient failure: ``disconnected`` (or ``engine_unreachable``), retry scheduled, one event per step."""
    async with uow:
        row = await _fenced(
            uow.session,
            session_id,
            owner,
            {
                "state": "engine_unreachable" if unreachable else "disconnected",
                "last_disconnect_code": code,
                "last_error": reason,
                "failures": failures,
                "retry_at": func.now() + timedelta(seconds=retry_in_s),
                **_NO_PAIRING,
            },
        )
        assert row is not None
        uow.emit(
            WhatsAppDisconnected(
                **_follow(row),
                data={
                    "session_id": session_id,
                    "code": code,
                    "reason": reason,
                    "retrying": True,
                    "retry_in_s": round(retry_in_s, 3),
                },
            )
        )
        await uow.commit()


async def record_stopped(
    uow: UnitOfWork,
    session_id: str,
    owner: str,
    *,
    state: str,
    code: int | None = None,
    reason: str | None = None,
    wipe: Wipe | None = None,
    event: str | None = None,
    applied_seq: int | None = None,
) -> bool:
    """The session has no live connection any more (paused, logged out, replaced); returns whether released.

    ``wipe`` deletes the credentials in the same transaction; ``event`` is ``"logged_out"`` or
    ``"disconnected"`` (not retrying) or None.
    """
    async with uow:
        values: dict[str, Any] = {
            "state": state,
            "last_error": reason,
            "retry_at": None,
            "failures": 0,
            **_NO_PAIRING,
            **_applied(applied_seq),
            **_release(applied_seq),
        }
        if code is not None:
            values["last_disconnect_code"] = code
        if state == "logged_out":
            values["phone"] = None
        row = await _fenced(uow.session, session_id, owner, values)
        assert row is not None
        if wipe is not None:
            await wipe(uow.session)
        message: Message | None = None
        if event == "logged_out":
            message = WhatsAppLoggedOut(
                **_follow(row), data={"session_id": session_id, "code": code, "reason": reason or ""}
            )
        elif event == "disconnected":
            message = WhatsAppDisconnected(
                **_follow(row),
                data={
                    "session_id": session_id,
                    "code": code if code is not None else 0,
                    "reason": reason or "",
                    "retrying": False,
                },
            )
        if message is not None:
            uow.emit(message)
        await uow.commit()
        return row.owner is None


async def release(uow: UnitOfWork, session_id: str, owner: str) -> bool:
    """Give the lease up with the state untouched, unless a command is pending; returns whether released."""
    async with uow:
        row = await _fenced(uow.session, session_id, owner, _release(None))
        assert row is not None
        await uow.commit()
        return row.owner is None
