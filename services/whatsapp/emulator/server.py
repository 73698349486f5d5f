"""The emulated WhatsApp server: pairing attempts, linked devices, and the one connection per device.

Every whatsapp worker process shares it, because it lives in PostgreSQL (schema ``whatsapp_emulator``): a scan
received by any worker's "phone" endpoint completes the pairing the owner's engine is waiting for, and a
session resumed on another worker after a failover is accepted because its device is linked here.

Who is told what: each mutation a client may be waiting for (a scan, a code typed, a drop, a new connection
replacing an old one) commits together with ``pg_notify('whatsapp_emulator', session_id)``; every worker's
listener hands it to its emulator engine, and only the engine holding that session acts. After a listener
(re)connect every live session re-checks, so a lost notification only delays, never loses.

The server keeps, like WhatsApp:
- per pairing attempt the payload of the ref valid *now* (older refs are refused) and the code, until paired;
- per linked device its identity key; a connect with another identity, or after the device was removed on the
  phone (401) or banned (403), is refused with 401;
- one connection per device: a new connect supersedes the previous one, whose holder gets 440 (replaced).

A scan (or a typed code) is a handshake, as in WhatsApp: the server marks the attempt scanned and wakes its
client, which stores its new credentials and confirms (``confirm_pairing``); only then is the device linked
and the phone told so. Unconfirmed within ``confirm_s`` (the client died, or a new attempt replaced its flow),
the scan is undone and refused, so a phone never sees success for a link no client holds.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp.db import open_db
from services.whatsapp.emulator.protocol import new_device_id
from services.whatsapp.emulator.tables import devices, pairings

NOTIFY_CHANNEL = "whatsapp_emulator"
# Codes a test may make the server send to a connected client.
DROP_CODES = frozenset({401, 403, 408, 428, 440, 500, 503, 515})
# How long a scan waits for the attempt's client to confirm (settings: WHATSAPP_EMULATOR_CONFIRM_S).
DEFAULT_CONFIRM_S = 5.0


class LinkOutcome(Enum):
    """What the phone is told after a scan or a typed code."""

    LINKED = "linked"
    INVALID = "invalid"  # not the currently valid QR/code (stale, expired, wrong, or no attempt waiting)
    UNCONFIRMED = "unconfirmed"  # valid, but the attempt's client did not confirm in time


@dataclass(frozen=True)
class Issued:
    """A ref or code the server now accepts, until ``expires_at``."""

    value: str
    expires_at: datetime


@dataclass(frozen=True)
class Paired:
    """A phone accepted the attempt: the device is linked as ``phone``."""

    phone: str
    device_id: int


@dataclass(frozen=True)
class Connection:
    """The server's view of a device's connection."""

    seq: int
    owner: str | None
    pending_drop: int | None
    revoked: bool


@dataclass(frozen=True)
class ConnectResult:
    """Accepted (with the connection's ``seq`` and the account's phone) or refused with ``refused_code``."""

    seq: int = 0
    phone: str = ""
    device_id: int = 0
    refused_code: int | None = None


def _utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class EmulatorServer(ABC):
    """What the emulator engine (the client side) and the phone/control endpoints ask of the server."""

    # -- client side: pairing --------------------------------------------------------------------------
    @abstractmethod
    async def begin_pairing(self, session_id: str, attempt_id: str, identity_pub: str) -> None:
        """Start a pairing attempt (ends any earlier one of the session; a linked device stays linked)."""

    @abstractmethod
    async def issue_ref(self, session_id: str, attempt_id: str, payload: str, ttl_s: float) -> Issued | None:
        """Make ``payload`` the one valid QR of the attempt; None when the attempt is over (paired or replaced)."""

    @abstractmethod
    async def issue_code(self, session_id: str, attempt_id: str, code: str, phone: str, ttl_s: float) -> Issued | None:
        """Make ``code`` the valid pairing code for ``phone``; None when the attempt is over."""

    @abstractmethod
    async def pairing_outcome(self, session_id: str, attempt_id: str) -> Paired | None:
        """The device a phone accepted this attempt as (linked once the client confirms it)."""

    @abstractmethod
    async def end_pairing(self, session_id: str, attempt_id: str) -> Paired | None:
        """Expire the attempt's ref/code; returns the outcome if a phone got in first."""

    @abstractmethod
    async def confirm_pairing(self, session_id: str, attempt_id: str) -> bool:
        """The client stored its credentials: link the device; False when the scan was undone or replaced."""

    # -- client side: connection -----------------------------------------------------------------------
    @abstractmethod
    async def connect(self, session_id: str, identity_pub: str, owner: str) -> ConnectResult:
        """Open the device's connection (superseding any other), or refuse with 401 when not linked."""

    @abstractmethod
    async def connection(self, session_id: str) -> Connection | None:
        """The device's connection state (None when no device is linked)."""

    @abstractmethod
    async def take_drop(self, session_id: str, seq: int) -> int | None:
        """The disconnect code the server sends to connection ``seq`` (clears it and closes the connection)."""

    @abstractmethod
    async def close_connection(self, session_id: str, seq: int) -> None:
        """The client closed connection ``seq``."""

    @abstractmethod
    async def unlink(self, session_id: str) -> None:
        """The client logged out: forget the device and any attempt."""

    # -- the phone and the test controls ---------------------------------------------------------------
    @abstractmethod
    async def link_by_qr(self, session_id: str, payload: str, phone: str) -> LinkOutcome:
        """A phone scanned ``payload``: linked when it is the currently valid QR and the client confirmed."""

    @abstractmethod
    async def link_by_code(self, session_id: str, code: str) -> LinkOutcome:
        """A phone typed ``code``: linked when it is the valid pairing code and the client confirmed."""

    async def scan(self, session_id: str, payload: str, phone: str) -> bool:
        """A phone scanned ``payload``: True only when the device got linked (the client confirmed)."""
        return await self.link_by_qr(session_id, payload, phone) is LinkOutcome.LINKED

    async def enter_code(self, session_id: str, code: str) -> bool:
        """A phone typed ``code``: True only when the device got linked (the client confirmed)."""
        return await self.link_by_code(session_id, code) is LinkOutcome.LINKED

    @abstractmethod
    async def request_drop(self, session_id: str, code: int) -> bool:
        """Make the server end the open connection with ``code``; False when nothing is connected."""

    @abstractmethod
    async def describe(self, session_id: str) -> dict[str, Any]:
        """The server's record of the session (for tests and operators)."""


class PostgresEmulatorServer(EmulatorServer):
    """The server in PostgreSQL; every change a client may wait for is notified on ``whatsapp_emulator``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        slots: asyncio.Semaphore | None = None,
        confirm_s: float = DEFAULT_CONFIRM_S,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._slots = slots
        self.confirm_s = confirm_s

    @staticmethod
    async def _notify(db: AsyncSession, session_id: str) -> None:
        await db.execute(select(func.pg_notify(NOTIFY_CHANNEL, session_id)))

    async def begin_pairing(self, session_id: str, attempt_id: str, identity_pub: str) -> None:
        """Start a pairing attempt (ends any earlier one of the session; a linked device stays linked)."""
        stmt = insert(pairings).values(session_id=session_id, attempt_id=attempt_id, identity_pub=identity_pub)
        cleared = {c: None for c in ("qr_payload", "qr_expires_at", "code", "code_phone", "code_expires_at")}
        # Only the attempt's record is reset: the ``devices`` row of a confirmed link is never touched here.
        cleared.update(paired_at=None, paired_phone=None, device_id=None, confirmed_at=None)
        async with open_db(self._sessionmaker, self._slots) as db:
            await db.execute(
                stmt.on_conflict_do_update(
                    index_elements=[pairings.c.session_id],
                    set_={"attempt_id": attempt_id, "identity_pub": identity_pub, **cleared},
                )
            )

    async def _issue(self, session_id: str, attempt_id: str, values: dict[str, Any]) -> datetime | None:
        async with open_db(self._sessionmaker, self._slots) as db:
            row = (
                await db.execute(
                    update(pairings)
                    .where(
                        pairings.c.session_id == session_id,
                        pairings.c.attempt_id == attempt_id,
                        pairings.c.paired_at.is_(None),
                    )
                    .values(**values)
                    .returning(pairings.c.qr_expires_at, pairings.c.code_expires_at)
                )
            ).first()
        if row is None:
            return None
        expires = row.qr_expires_at if "qr_payload" in values else row.code_expires_at
        return _utc(expires)

    async def issue_ref(self, session_id: str, attempt_id: str, payload: str, ttl_s: float) -> Issued | None:
        """Make ``payload`` the one valid QR of the attempt; None when the attempt is over."""
        expires = await self._issue(
            session_id,
            attempt_id,
            {"qr_payload": payload, "qr_expires_at": func.now() + timedelta(seconds=ttl_s)},
        )
        return None if expires is None else Issued(payload, expires)

    async def issue_code(self, session_id: str, attempt_id: str, code: str, phone: str, ttl_s: float) -> Issued | None:
        """Make ``code`` the valid pairing code for ``phone``; None when the attempt is over."""
        expires = await self._issue(
            session_id,
            attempt_id,
            {"code": code, "code_phone": phone, "code_expires_at": func.now() + timedelta(seconds=ttl_s)},
        )
        return None if expires is None else Issued(code, expires)

    async def pairing_outcome(self, session_id: str, attempt_id: str) -> Paired | None:
        """The device a phone accepted this attempt as (linked once the client confirms it)."""
        async with open_db(self._sessionmaker, self._slots, begin=False) as db:
            row = (
                await db.execute(
                    select(pairings.c.paired_phone, pairings.c.device_id).where(
                        pairings.c.session_id == session_id,
                        pairings.c.attempt_id == attempt_id,
                        pairings.c.paired_at.is_not(None),
                    )
                )
            ).first()
        return None if row is None else Paired(row.paired_phone, row.device_id)

    async def end_pairing(self, session_id: str, attempt_id: str) -> Paired | None:
        """Expire the attempt's ref/code; returns the outcome if a phone got in first."""
        async with open_db(self._sessionmaker, self._slots) as db:
            await db.execute(
                update(pairings)
                .where(
                    pairings.c.session_id == session_id,
                    pairings.c.attempt_id == attempt_id,
                    pairings.c.paired_at.is_(None),
                )
                .values(qr_payload=None, qr_expires_at=None, code=None, code_expires_at=None)
            )
        return await self.pairing_outcome(session_id, attempt_id)

    async def _scanned(self, session_id: str, match: Any, phone: str | None) -> LinkOutcome:
        """Mark the attempt scanned and wake its client, then wait for the client to confirm."""
        async with open_db(self._sessionmaker, self._slots) as db:
            row = (
                await db.execute(
                    update(pairings)
                    .where(pairings.c.session_id == session_id, pairings.c.paired_at.is_(None), match)
                    .values(
                        paired_at=func.now(),
                        paired_phone=func.coalesce(phone, pairings.c.code_phone),
                        device_id=new_device_id(),
                        confirmed_at=None,
                        qr_payload=None,
                        qr_expires_at=None,
                        code=None,
                        code_expires_at=None,
                    )
                    .returning(pairings.c.attempt_id, pairings.c.device_id)
                )
            ).first()
            if row is None:
                return LinkOutcome.INVALID
            await self._notify(db, session_id)
        confirmed = await self._await_confirm(session_id, row.attempt_id, row.device_id)
        return LinkOutcome.LINKED if confirmed else LinkOutcome.UNCONFIRMED

    async def _confirm_state(self, session_id: str, attempt_id: str, device_id: int) -> bool | None:
        """True when this scan was confirmed, False when it was replaced or undone, None while it waits."""
        async with open_db(self._sessionmaker, self._slots, begin=False) as db:
            row = (
                await db.execute(
                    select(pairings.c.attempt_id, pairings.c.device_id, pairings.c.confirmed_at).where(
                        pairings.c.session_id == session_id
                    )
                )
            ).first()
        if row is None or row.attempt_id != attempt_id or row.device_id != device_id:
            return False
        return True if row.confirmed_at is not None else None

    async def _await_confirm(self, session_id: str, attempt_id: str, device_id: int) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.confirm_s
        pause = 0.02
        while True:
            state = await self._confirm_state(session_id, attempt_id, device_id)
            if state is not None:
                return state
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 1.5, 0.25)
        # Undo the scan unless the client confirmed meanwhile: row locks order the two updates, so exactly one wins.
        async with open_db(self._sessionmaker, self._slots) as db:
            undone = (
                await db.execute(
                    update(pairings)
                    .where(
                        pairings.c.session_id == session_id,
                        pairings.c.attempt_id == attempt_id,
                        pairings.c.device_id == device_id,
                        pairings.c.confirmed_at.is_(None),
                    )
                    .values(paired_at=None, paired_phone=None, device_id=None)
                    .returning(pairings.c.session_id)
                )
            ).first()
        if undone is not None:
            return False
        return await self._confirm_state(session_id, attempt_id, device_id) is True

    async def confirm_pairing(self, session_id: str, attempt_id: str) -> bool:
        """The client stored its credentials: link the device; False when the scan was undone or replaced."""
        async with open_db(self._sessionmaker, self._slots) as db:
            row = (
                await db.execute(
                    update(pairings)
                    .where(
                        pairings.c.session_id == session_id,
                        pairings.c.attempt_id == attempt_id,
                        pairings.c.paired_at.is_not(None),
                        pairings.c.confirmed_at.is_(None),
                    )
                    .values(confirmed_at=func.now())
                    .returning(pairings.c.identity_pub, pairings.c.paired_phone, pairings.c.device_id)
                )
            ).first()
            if row is None:
                # A repeated confirm of a link already confirmed is still a yes.
                again = (
                    await db.execute(
                        select(pairings.c.session_id).where(
                            pairings.c.session_id == session_id,
                            pairings.c.attempt_id == attempt_id,
                            pairings.c.confirmed_at.is_not(None),
                        )
                    )
                ).first()
                return again is not None
            stmt = insert(devices).values(
                session_id=session_id,
                identity_pub=row.identity_pub,
                phone=row.paired_phone,
                device_id=row.device_id,
                linked_at=func.now(),
                connection_seq=0,
                connections=0,
            )
            # A re-link keeps the connection sequence growing, so a stale holder still sees it superseded.
            await db.execute(
                stmt.on_conflict_do_update(
                    index_elements=[devices.c.session_id],
                    set_={
                        "identity_pub": row.identity_pub,
                        "phone": row.paired_phone,
                        "device_id": row.device_id,
                        "linked_at": func.now(),
                        "revoked_at": None,
                        "connection_owner": None,
                        "pending_drop": None,
                    },
                )
            )
            await self._notify(db, session_id)
        return True

    async def link_by_qr(self, session_id: str, payload: str, phone: str) -> LinkOutcome:
        """A phone scanned ``payload``: linked when it is the currently valid QR and the client confirmed."""
        match = (pairings.c.qr_payload == payload) & (pairings.c.qr_expires_at > func.now())
        return await self._scanned(session_id, match, phone)

    async def link_by_code(self, session_id: str, code: str) -> LinkOutcome:
        """A phone typed ``code``: linked when it is the valid pairing code and the client confirmed."""
        match = (pairings.c.code == code) & (pairings.c.code_expires_at > func.now())
        return await self._scanned(session_id, match, None)

    async def connect(self, session_id: str, identity_pub: str, owner: str) -> ConnectResult:
        """Open the device's connection (superseding any other), or refuse with 401 when not linked."""
        async with open_db(self._sessionmaker, self._slots) as db:
            row = (
                await db.execute(
                    update(devices)
                    .where(
                        devices.c.session_id == session_id,
                        devices.c.identity_pub == identity_pub,
                        devices.c.revoked_at.is_(None),
                    )
                    .values(
                        connection_seq=devices.c.connection_seq + 1,
                        connection_owner=owner,
                        connections=devices.c.connections + 1,
                        connected_at=func.now(),
                        pending_drop=None,
                    )
                    .returning(devices.c.connection_seq, devices.c.phone, devices.c.device_id)
                )
            ).first()
            if row is None:
                return ConnectResult(refused_code=401)
            await self._notify(db, session_id)
        return ConnectResult(seq=row.connection_seq, phone=row.phone, device_id=row.device_id)

    async def connection(self, session_id: str) -> Connection | None:
        """The device's connection state (None when no device is linked)."""
        async with open_db(self._sessionmaker, self._slots, begin=False) as db:
            row = (
                await db.execute(
                    select(
                        devices.c.connection_seq,
                        devices.c.connection_owner,
                        devices.c.pending_drop,
                        devices.c.revoked_at,
                    ).where(devices.c.session_id == session_id)
                )
            ).first()
        if row is None:
            return None
        return Connection(row.connection_seq, row.connection_owner, row.pending_drop, row.revoked_at is not None)

    async def take_drop(self, session_id: str, seq: int) -> int | None:
        """The disconnect code the server sends to connection ``seq`` (clears it and closes the connection)."""
        async with open_db(self._sessionmaker, self._slots) as db:
            row = (
                await db.execute(
                    select(devices.c.pending_drop)
                    .where(
                        devices.c.session_id == session_id,
                        devices.c.connection_seq == seq,
                        devices.c.pending_drop.is_not(None),
                    )
                    .with_for_update()
                )
            ).first()
            if row is None:
                return None
            await db.execute(
                update(devices)
                .where(devices.c.session_id == session_id)
                .values(pending_drop=None, connection_owner=None)
            )
            return int(row.pending_drop)

    async def close_connection(self, session_id: str, seq: int) -> None:
        """The client closed connection ``seq``."""
        async with open_db(self._sessionmaker, self._slots) as db:
            await db.execute(
                update(devices)
                .where(devices.c.session_id == session_id, devices.c.connection_seq == seq)
                .values(connection_owner=None, pending_drop=None)
            )

    async def unlink(self, session_id: str) -> None:
        """The client logged out: forget the device and any attempt."""
        async with open_db(self._sessionmaker, self._slots) as db:
            await db.execute(delete(devices).where(devices.c.session_id == session_id))
            await db.execute(delete(pairings).where(pairings.c.session_id == session_id))

    async def request_drop(self, session_id: str, code: int) -> bool:
        """Make the server end the open connection with ``code``; False when nothing is connected (or ending)."""
        values: dict[str, Any] = {"pending_drop": code}
        if code in (401, 403):
            # The phone removed the device (or the account was banned): it can't connect again.
            values["revoked_at"] = func.now()
        async with open_db(self._sessionmaker, self._slots) as db:
            row = (
                await db.execute(
                    update(devices)
                    .where(
                        devices.c.session_id == session_id,
                        devices.c.connection_owner.is_not(None),
                        devices.c.pending_drop.is_(None),
                    )
                    .values(**values)
                    .returning(devices.c.session_id)
                )
            ).first()
            if row is None:
                return False
            await self._notify(db, session_id)
        return True

    async def describe(self, session_id: str) -> dict[str, Any]:
        """The server's record of the session (for tests and operators)."""
        async with open_db(self._sessionmaker, self._slots, begin=False) as db:
            device = (await db.execute(select(devices).where(devices.c.session_id == session_id))).mappings().first()
            pairing = (await db.execute(select(pairings).where(pairings.c.session_id == session_id))).mappings().first()
        return _describe(dict(device) if device is not None else None, dict(pairing) if pairing is not None else None)


def _describe(device: dict[str, Any] | None, pairing: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"linked": device is not None and device.get("revoked_at") is None}
    if device is not None:
        out["device"] = {
            "phone": device["phone"],
            "device_id": device["device_id"],
            "connected": device["connection_owner"] is not None,
            "connection_owner": device["connection_owner"],
            "connection_seq": device["connection_seq"],
            "connections": device["connections"],
            "revoked": device.get("revoked_at") is not None,
        }
    if pairing is not None:
        out["pairing"] = {
            "attempt_id": pairing["attempt_id"],
            "waiting_for_scan": pairing["qr_payload"] is not None,
            "waiting_for_code": pairing["code"] is not None,
            "paired": pairing["paired_at"] is not None,
            "confirmed": pairing.get("confirmed_at") is not None,
        }
    return out


@dataclass
class _MemPairing:
    attempt_id: str
    identity_pub: str
    qr_payload: str | None = None
    qr_expires_at: datetime | None = None
    code: str | None = None
    code_phone: str | None = None
    code_expires_at: datetime | None = None
    paired: Paired | None = None
    confirmed: bool = False
    # Set when the scan is settled for the waiting phone: confirmed, or the attempt replaced or forgotten.
    settled: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _MemDevice:
    identity_pub: str
    phone: str
    device_id: int
    revoked: bool = False
    connection_owner: str | None = None
    connection_seq: int = 0
    connections: int = 0
    pending_drop: int | None = None


class InMemoryEmulatorServer(EmulatorServer):
    """The same server in one process's memory (unit tests); ``listeners`` get the notifications."""

    def __init__(
        self, clock: Callable[[], datetime] = lambda: datetime.now(UTC), *, confirm_s: float = DEFAULT_CONFIRM_S
    ) -> None:
        self.clock = clock
        self.confirm_s = confirm_s
        self.pairings: dict[str, _MemPairing] = {}
        self.devices: dict[str, _MemDevice] = {}
        self.listeners: list[Callable[[str], None]] = []

    def _notify(self, session_id: str) -> None:
        for listener in self.listeners:
            listener(session_id)

    async def _tick(self) -> None:
        # Like a database round trip: let other tasks run between operations.
        await asyncio.sleep(0)

    def _open(self, session_id: str, attempt_id: str) -> _MemPairing | None:
        p = self.pairings.get(session_id)
        return p if p is not None and p.attempt_id == attempt_id and p.paired is None else None

    async def begin_pairing(self, session_id: str, attempt_id: str, identity_pub: str) -> None:
        """Start a pairing attempt (ends any earlier one of the session; a linked device stays linked)."""
        await self._tick()
        old = self.pairings.get(session_id)
        if old is not None:
            old.settled.set()
        self.pairings[session_id] = _MemPairing(attempt_id, identity_pub)

    async def issue_ref(self, session_id: str, attempt_id: str, payload: str, ttl_s: float) -> Issued | None:
        """Make ``payload`` the one valid QR of the attempt; None when the attempt is over."""
        await self._tick()
        p = self._open(session_id, attempt_id)
        if p is None:
            return None
        p.qr_payload, p.qr_expires_at = payload, self.clock() + timedelta(seconds=ttl_s)
        return Issued(payload, p.qr_expires_at)

    async def issue_code(self, session_id: str, attempt_id: str, code: str, phone: str, ttl_s: float) -> Issued | None:
        """Make ``code`` the valid pairing code for ``phone``; None when the attempt is over."""
        await self._tick()
        p = self._open(session_id, attempt_id)
        if p is None:
            return None
        p.code, p.code_phone, p.code_expires_at = code, phone, self.clock() + timedelta(seconds=ttl_s)
        return Issued(code, p.code_expires_at)

    async def pairing_outcome(self, session_id: str, attempt_id: str) -> Paired | None:
        """The device a phone accepted this attempt as (linked once the client confirms it)."""
        await self._tick()
        p = self.pairings.get(session_id)
        return p.paired if p is not None and p.attempt_id == attempt_id else None

    async def end_pairing(self, session_id: str, attempt_id: str) -> Paired | None:
        """Expire the attempt's ref/code; returns the outcome if a phone got in first."""
        p = self._open(session_id, attempt_id)
        if p is not None:
            p.qr_payload = p.code = None
        return await self.pairing_outcome(session_id, attempt_id)

    async def _scanned(self, session_id: str, p: _MemPairing, phone: str) -> LinkOutcome:
        paired = Paired(phone, new_device_id())
        p.paired = paired
        p.qr_payload = p.code = None
        self._notify(session_id)
        try:
            await asyncio.wait_for(p.settled.wait(), timeout=self.confirm_s)
        except TimeoutError:
            pass
        if self.pairings.get(session_id) is not p or p.paired is not paired:
            return LinkOutcome.UNCONFIRMED
        if p.confirmed:
            return LinkOutcome.LINKED
        p.paired = None
        return LinkOutcome.UNCONFIRMED

    async def confirm_pairing(self, session_id: str, attempt_id: str) -> bool:
        """The client stored its credentials: link the device; False when the scan was undone or replaced."""
        await self._tick()
        p = self.pairings.get(session_id)
        if p is None or p.attempt_id != attempt_id or p.paired is None:
            return False
        if p.confirmed:
            return True
        p.confirmed = True
        old = self.devices.get(session_id)
        self.devices[session_id] = _MemDevice(
            p.identity_pub, p.paired.phone, p.paired.device_id, connection_seq=old.connection_seq if old else 0
        )
        p.settled.set()
        self._notify(session_id)
        return True

    async def link_by_qr(self, session_id: str, payload: str, phone: str) -> LinkOutcome:
        """A phone scanned ``payload``: linked when it is the currently valid QR and the client confirmed."""
        await self._tick()
        p = self.pairings.get(session_id)
        if p is None or p.paired is not None or p.qr_payload != payload or p.qr_expires_at is None:
            return LinkOutcome.INVALID
        if p.qr_expires_at <= self.clock():
            return LinkOutcome.INVALID
        return await self._scanned(session_id, p, phone)

    async def link_by_code(self, session_id: str, code: str) -> LinkOutcome:
        """A phone typed ``code``: linked when it is the valid pairing code and the client confirmed."""
        await self._tick()
        p = self.pairings.get(session_id)
        if p is None or p.paired is not None or p.code != code or p.code_expires_at is None:
            return LinkOutcome.INVALID
        if p.code_expires_at <= self.clock() or p.code_phone is None:
            return LinkOutcome.INVALID
        return await self._scanned(session_id, p, p.code_phone)

    async def connect(self, session_id: str, identity_pub: str, owner: str) -> ConnectResult:
        """Open the device's connection (superseding any other), or refuse with 401 when not linked."""
        await self._tick()
        d = self.devices.get(session_id)
        if d is None or d.revoked or d.identity_pub != identity_pub:
            return ConnectResult(refused_code=401)
        d.connection_seq += 1
        d.connections += 1
        d.connection_owner, d.pending_drop = owner, None
        self._notify(session_id)
        return ConnectResult(seq=d.connection_seq, phone=d.phone, device_id=d.device_id)

    async def connection(self, session_id: str) -> Connection | None:
        """The device's connection state (None when no device is linked)."""
        await self._tick()
        d = self.devices.get(session_id)
        return None if d is None else Connection(d.connection_seq, d.connection_owner, d.pending_drop, d.revoked)

    async def take_drop(self, session_id: str, seq: int) -> int | None:
        """The disconnect code the server sends to connection ``seq``."""
        await self._tick()
        d = self.devices.get(session_id)
        if d is None or d.connection_seq != seq or d.pending_drop is None:
            return None
        code, d.pending_drop, d.connection_owner = d.pending_drop, None, None
        return code

    async def close_connection(self, session_id: str, seq: int) -> None:
        """The client closed connection ``seq``."""
        await self._tick()
        d = self.devices.get(session_id)
        if d is not None and d.connection_seq == seq:
            d.connection_owner, d.pending_drop = None, None

    async def unlink(self, session_id: str) -> None:
        """The client logged out: forget the device and any attempt."""
        await self._tick()
        self.devices.pop(session_id, None)
        forgotten = self.pairings.pop(session_id, None)
        if forgotten is not None:
            forgotten.settled.set()

    async def request_drop(self, session_id: str, code: int) -> bool:
        """Make the server end the open connection with ``code``; False when nothing is connected."""
        await self._tick()
        d = self.devices.get(session_id)
        if d is None or d.connection_owner is None or d.pending_drop is not None:
            return False
        d.pending_drop = code
        if code in (401, 403):
            d.revoked = True
        self._notify(session_id)
        return True

    async def describe(self, session_id: str) -> dict[str, Any]:
        """The server's record of the session."""
        d = self.devices.get(session_id)
        p = self.pairings.get(session_id)
        device = None
        if d is not None:
            device = {
                "phone": d.phone,
                "device_id": d.device_id,
                "connection_owner": d.connection_owner,
                "connection_seq": d.connection_seq,
                "connections": d.connections,
                "revoked_at": self.clock() if d.revoked else None,
            }
        pairing = None
        if p is not None:
            pairing = {
                "attempt_id": p.attempt_id,
                "qr_payload": p.qr_payload,
                "code": p.code,
                "paired_at": self.clock() if p.paired else None,
                "confirmed_at": self.clock() if p.confirmed else None,
            }
        return _describe(device, pairing)
