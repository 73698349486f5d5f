"""The real WhatsApp Web multi-device engine: PyPI ``neonize`` (Python over the Go library whatsmeow).

neonize is imported lazily, only when this engine is selected (``WHATSAPP_ENGINE=neonize``); install it with
the project's optional extra ``neonize``.

Credentials: whatsmeow keeps its own store (identity, pre-keys, sessions, app-state keys) in SQL and writes it
transactionally itself. We point it at our PostgreSQL, schema ``whatsmeow`` (created by the migration; override
with ``WHATSAPP_NEONIZE_DATABASE_URL``), so the keys survive restarts and are reachable from every worker.
``whatsapp_auth`` holds the session's ``creds`` row: the paired device's JID (protobuf, base64), its phone and
JID string — what a resume on any worker needs to find the device in the whatsmeow store. A wipe deletes that
row and (inside the same transaction, when the store is our database) the device in the whatsmeow store.

Events map to the engine interface: QR codes (counted: the first lives ~60 s, each next ~20 s, 6 in all, then
``PairingExpiredEvent``), ``PairStatus`` success (credentials saved), ``Connected``, ``LoggedOut`` (401),
``StreamReplaced`` (440), ``ConnectFailure`` / ``TemporaryBan`` / ``Disconnected`` (their codes), and a connect
that fails before any of these (no network, DNS: "failed to dial whatsapp web websocket") →
``UnreachableEvent``, which the runner retries with backoff (state ``engine_unreachable``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from services.whatsapp.auth_store import AuthStore
from services.whatsapp.emulator.protocol import format_pairing_code, normalize_pairing_code
from services.whatsapp.engine import (
    AbstractWhatsAppEngine,
    ConnectedEvent,
    DisconnectedEvent,
    EventSink,
    LoggedOutEvent,
    NoCredentials,
    PairingCodeEvent,
    PairingExpiredEvent,
    QrEvent,
    UnreachableEvent,
)
from services.whatsapp.policy import (
    BAD_SESSION,
    CONNECTION_CLOSED,
    FORBIDDEN,
    LOGGED_OUT,
    REPLACED,
    UNAVAILABLE,
    reason_for,
)

log = logging.getLogger(__name__)
ENGINE = "neonize"
STORE_SCHEMA = "whatsmeow"

# neonize's ConnectFailureReason names → WhatsApp disconnect codes our policy knows.
_CONNECT_FAILURE_CODES = {
    "LOGGED_OUT": LOGGED_OUT,
    "MAIN_DEVICE_GONE": LOGGED_OUT,
    "UNKNOWN_LOGOUT": LOGGED_OUT,
    "TEMP_BANNED": FORBIDDEN,
    "SERVICE_UNAVAILABLE": UNAVAILABLE,
    "INTERNAL_SERVER_ERROR": UNAVAILABLE,
}

# (store url, jid protobuf or None, uuid, new_device) → a neonize NewAClient (or a stand-in in tests).
ClientFactory = Callable[[str, Any, str, bool], Any]


def store_url_for(database_url: str, schema: str = STORE_SCHEMA) -> str:
    """whatsmeow's ``postgres://`` URL for our database with its tables in ``schema``."""
    url = make_url(database_url).set(drivername="postgres")
    query = dict(url.query)
    query.setdefault("sslmode", "disable")
    query["search_path"] = schema
    return url.set(query=query).render_as_string(hide_password=False)


def neonize_client_factory(store_url: str, jid: Any, uuid: str, new_device: bool) -> Any:
    """A real ``neonize.aioze.client.NewAClient`` (imported here, not at module import)."""
    from neonize.aioze.client import NewAClient

    return NewAClient(store_url, jid=jid, uuid=uuid, new_device=new_device)


class StoreUnavailable(Exception):
    """The whatsmeow store could not be asked whether a device exists."""


def _sqlite_has_device(path: str, jid: str) -> bool:
    path = path.removeprefix("file:").split("?", 1)[0]
    with contextlib.closing(sqlite3.connect(path)) as db:
        table = db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='whatsmeow_device'").fetchone()
        return (
            table is not None
            and db.execute("SELECT 1 FROM whatsmeow_device WHERE jid = ?", (jid,)).fetchone() is not None
        )


def _jid_string(jid: Any) -> str:
    user = str(jid.User)
    if getattr(jid, "RawAgent", 0):
        user += f".{jid.RawAgent}"
    if getattr(jid, "Device", 0):
        user += f":{jid.Device}"
    return f"{user}@{jid.Server}"


@dataclass
class _Client:
    client: Any
    sink: EventSink
    attempt_id: str | None = None
    phone_for_code: str | None = None
    qr_seen: int = 0
    phone: str | None = None
    connected: bool = False
    expiry: asyncio.TimerHandle | None = None


class NeonizeEngine(AbstractWhatsAppEngine):
    """Sessions as neonize clients sharing one whatsmeow store."""

    name = ENGINE

    def __init__(
        self,
        auth: AuthStore,
        *,
        store_url: str,
        store_in_our_database: bool = True,
        client_factory: ClientFactory | None = None,
        qr_refs: int = 6,
        qr_first_s: float = 60.0,
        qr_next_s: float = 20.0,
        code_ttl_s: float = 160.0,
        device_check: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self.auth = auth
        self.store_url = store_url
        self.store_in_our_database = store_in_our_database
        self._factory = client_factory or neonize_client_factory
        self.qr_refs, self.qr_first_s, self.qr_next_s, self.code_ttl_s = qr_refs, qr_first_s, qr_next_s, code_ttl_s
        self._clients: dict[str, _Client] = {}
        self._device_check = device_check or self.device_in_store
        self._stopping: set[asyncio.Future[None]] = set()

    # -- the interface -----------------------------------------------------------------------------------
    async def start_qr_pairing(self, session_id: str, attempt_id: str, sink: EventSink) -> None:
        """Connect as a new device and report each QR whatsmeow produces."""
        await self._open(session_id, sink, jid=None, new_device=True, attempt_id=attempt_id, phone_for_code=None)

    async def start_phone_pairing(self, session_id: str, attempt_id: str, phone: str, sink: EventSink) -> None:
        """Connect as a new device and ask for a pairing code as soon as the server waits for pairing."""
        await self._open(session_id, sink, jid=None, new_device=True, attempt_id=attempt_id, phone_for_code=phone)

    async def resume(self, session_id: str, sink: EventSink) -> None:
        """Connect the stored device (its keys are in the whatsmeow store)."""
        stored = await self.auth.load(session_id)
        if stored is None or stored.engine != ENGINE:
            raise NoCredentials(session_id)
        creds = json.loads(stored.creds)
        # whatsmeow dereferences a missing device and aborts the whole process: never resume one it lacks.
        try:
            present = bool(creds.get("jid_string")) and await self._device_check(creds["jid_string"])
        except StoreUnavailable as exc:
            sink(UnreachableEvent(f"whatsmeow store unreachable: {exc}"))
            return
        if not present:
            raise NoCredentials(f"{session_id}: the device is not in the whatsmeow store")
        jid = self._jid_from_bytes(base64.b64decode(creds["jid"]))
        await self._open(session_id, sink, jid=jid, new_device=False, attempt_id=None, phone_for_code=None)
        live = self._clients.get(session_id)
        if live is not None:
            live.phone = creds.get("phone")

    async def pause(self, session_id: str) -> None:
        """Stop the session's client; the whatsmeow store keeps the keys."""
        live = self._clients.pop(session_id, None)
        if live is None:
            return
        if live.expiry is not None:
            live.expiry.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.client.stop(), timeout=5)

    async def logout(self, session_id: str) -> None:
        """Log the device out on WhatsApp when connected, then stop the client."""
        live = self._clients.get(session_id)
        if live is not None and live.connected:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(live.client.logout(), timeout=10)
        await self.pause(session_id)

    async def forget(self, session_id: str, db: AsyncSession) -> None:
        """Delete the device from the whatsmeow store (when it lives in our database), in the wipe's transaction."""
        if not self.store_in_our_database:
            return
        creds = (
            await db.execute(
                text("SELECT value FROM whatsapp_auth WHERE session_id = :sid AND kind = 'creds' AND engine = :e"),
                {"sid": session_id, "e": ENGINE},
            )
        ).scalar_one_or_none()
        if creds is None:
            return
        jid = json.loads(creds).get("jid_string")
        if not jid:
            return
        async with db.begin_nested():
            exists = (await db.execute(text("SELECT to_regclass('whatsmeow.whatsmeow_device')"))).scalar_one_or_none()
            if exists is not None:
                # whatsmeow's other tables reference the device with ON DELETE CASCADE.
                await db.execute(text("DELETE FROM whatsmeow.whatsmeow_device WHERE jid = :jid"), {"jid": jid})

    def is_live(self, session_id: str) -> bool:
        """True while the client reported connected."""
        live = self._clients.get(session_id)
        return live is not None and live.connected

    async def close(self) -> None:
        """Stop every client."""
        for session_id in list(self._clients):
            await self.pause(session_id)

    async def device_in_store(self, jid: str) -> bool:
        """Whether whatsmeow's store has the device ``jid`` (PostgreSQL or SQLite store)."""
        try:
            if self.store_url.startswith(("postgres://", "postgresql://")):
                conn = await asyncpg.connect(self.store_url, timeout=5)
                try:
                    exists = await conn.fetchval(
                        "SELECT to_regclass('whatsmeow_device') IS NOT NULL", timeout=5
                    ) and await conn.fetchval("SELECT 1 FROM whatsmeow_device WHERE jid = $1", jid, timeout=5)
                finally:
                    await conn.close()
                return bool(exists)
            return await asyncio.to_thread(_sqlite_has_device, self.store_url, jid)
        except (OSError, TimeoutError, asyncpg.PostgresError, sqlite3.Error) as exc:
            # Can't tell: treat the store as unreachable rather than risk the abort.
            raise StoreUnavailable(str(exc)) from exc

    # -- internals ---------------------------------------------------------------------------------------
    @staticmethod
    def _jid_from_bytes(raw: bytes) -> Any:
        from neonize.proto.Neonize_pb2 import JID

        return JID.FromString(raw)

    async def _open(
        self,
        session_id: str,
        sink: EventSink,
        *,
        jid: Any,
        new_device: bool,
        attempt_id: str | None,
        phone_for_code: str | None,
    ) -> None:
        await self.pause(session_id)
        try:
            client = self._factory(self.store_url, jid, session_id, new_device)
        except Exception as exc:
            sink(UnreachableEvent(f"neonize client could not be created: {exc!r}"))
            return
        live = _Client(client=client, sink=sink, attempt_id=attempt_id, phone_for_code=phone_for_code)
        self._clients[session_id] = live
        self._subscribe(session_id, live)
        try:
            task = await client.connect()
        except Exception as exc:
            self._failed(session_id, live, exc)
            return
        if isinstance(task, asyncio.Future):
            task.add_done_callback(lambda t: self._connect_finished(session_id, live, t))

    def _connect_finished(self, session_id: str, live: _Client, task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._failed(session_id, live, exc)
        elif self._clients.get(session_id) is live and not live.connected:
            # The Go side returned without an error and without ever connecting: treat it as a closed stream.
            self._clients.pop(session_id, None)
            live.sink(DisconnectedEvent(CONNECTION_CLOSED, "the neonize client stopped"))

    def _failed(self, session_id: str, live: _Client, exc: BaseException) -> None:
        if self._clients.get(session_id) is not live:
            return
        self._clients.pop(session_id, None)
        log.warning("neonize connect failed", extra={"session_id": session_id, "error": str(exc)[:300]})
        self._stop_later(live)
        live.sink(UnreachableEvent(str(exc)[:500] or type(exc).__name__))

    def _stop_later(self, live: _Client) -> None:
        """Release the Go client of a connection that ended on its own (kept referenced until done)."""
        task = asyncio.ensure_future(self._stop_quietly(live))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    def _current(self, session_id: str, live: _Client) -> bool:
        return self._clients.get(session_id) is live

    def _subscribe(self, session_id: str, live: _Client) -> None:
        from neonize.aioze.events import (
            ConnectedEv,
            ConnectFailureEv,
            DisconnectedEv,
            LoggedOutEv,
            PairStatusEv,
            StreamReplacedEv,
            TemporaryBanEv,
        )

        client = live.client

        async def on_qr(_: Any, data: bytes) -> None:
            if not self._current(session_id, live) or live.attempt_id is None:
                return
            live.qr_seen += 1
            seq = live.qr_seen
            ttl = self.qr_first_s if seq == 1 else self.qr_next_s
            if live.phone_for_code is not None:
                if seq == 1:
                    await self._request_code(session_id, live)
                return
            expires = datetime.now(UTC) + timedelta(seconds=ttl)
            live.sink(QrEvent(live.attempt_id, data.decode(), min(seq, self.qr_refs), self.qr_refs, expires))
            if seq >= self.qr_refs:
                self._expire_after(session_id, live, ttl)

        async def on_pair_status(_: Any, ev: Any) -> None:
            if not self._current(session_id, live):
                return
            if getattr(ev, "Error", ""):
                log.warning("pairing failed", extra={"session_id": session_id, "error": ev.Error})
                return
            jid = ev.ID
            live.phone = str(jid.User)
            creds = {
                "jid": base64.b64encode(jid.SerializeToString()).decode(),
                "jid_string": _jid_string(jid),
                "phone": live.phone,
                "platform": getattr(ev, "Platform", ""),
            }
            await self.auth.save(session_id, engine=ENGINE, creds=json.dumps(creds).encode())
            if live.expiry is not None:
                live.expiry.cancel()

        async def on_connected(_: Any, __: Any) -> None:
            if self._current(session_id, live):
                live.connected = True
                live.sink(ConnectedEvent(live.phone))

        async def on_disconnected(_: Any, __: Any) -> None:
            if self._current(session_id, live):
                live.connected = False
                self._clients.pop(session_id, None)
                live.sink(DisconnectedEvent(CONNECTION_CLOSED, reason_for(CONNECTION_CLOSED)))

        async def on_logged_out(_: Any, __: Any) -> None:
            if self._current(session_id, live):
                self._clients.pop(session_id, None)
                live.sink(LoggedOutEvent(LOGGED_OUT, reason_for(LOGGED_OUT)))

        async def on_replaced(_: Any, __: Any) -> None:
            if self._current(session_id, live):
                self._clients.pop(session_id, None)
                live.sink(DisconnectedEvent(REPLACED, reason_for(REPLACED)))

        async def on_connect_failure(_: Any, ev: Any) -> None:
            if not self._current(session_id, live):
                return
            self._clients.pop(session_id, None)
            try:
                from neonize.proto.Neonize_pb2 import ConnectFailureReason

                name = ConnectFailureReason.Name(ev.Reason)
            except Exception:
                name = "GENERIC"
            code = _CONNECT_FAILURE_CODES.get(name, UNAVAILABLE)
            message = f"connect failure {name}: {getattr(ev, 'Message', '')}".strip()
            if code in (LOGGED_OUT, FORBIDDEN):
                live.sink(LoggedOutEvent(code, message))
            else:
                live.sink(DisconnectedEvent(code, message))

        async def on_temporary_ban(_: Any, __: Any) -> None:
            if self._current(session_id, live):
                self._clients.pop(session_id, None)
                live.sink(LoggedOutEvent(FORBIDDEN, reason_for(FORBIDDEN)))

        client.event.qr(on_qr)
        client.event(PairStatusEv)(on_pair_status)
        client.event(ConnectedEv)(on_connected)
        client.event(DisconnectedEv)(on_disconnected)
        client.event(LoggedOutEv)(on_logged_out)
        client.event(StreamReplacedEv)(on_replaced)
        client.event(ConnectFailureEv)(on_connect_failure)
        client.event(TemporaryBanEv)(on_temporary_ban)

    async def _request_code(self, session_id: str, live: _Client) -> None:
        assert live.phone_for_code is not None and live.attempt_id is not None
        try:
            raw = await live.client.PairPhone(live.phone_for_code, True)
        except Exception as exc:
            if self._current(session_id, live):
                self._clients.pop(session_id, None)
                live.sink(UnreachableEvent(f"pairing code request failed: {exc!r}"))
            return
        code = normalize_pairing_code(str(raw))
        if code is None:
            live.sink(DisconnectedEvent(BAD_SESSION, f"unexpected pairing code from WhatsApp: {raw!r}"))
            return
        expires = datetime.now(UTC) + timedelta(seconds=self.code_ttl_s)
        live.sink(PairingCodeEvent(live.attempt_id, format_pairing_code(code), expires))
        self._expire_after(session_id, live, self.code_ttl_s)

    def _expire_after(self, session_id: str, live: _Client, ttl_s: float) -> None:
        if live.expiry is not None:
            live.expiry.cancel()

        def expire() -> None:
            if self._current(session_id, live) and not live.connected and live.attempt_id is not None:
                self._clients.pop(session_id, None)
                self._stop_later(live)
                live.sink(PairingExpiredEvent(live.attempt_id))

        live.expiry = asyncio.get_running_loop().call_later(ttl_s, expire)

    @staticmethod
    async def _stop_quietly(live: _Client) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(live.client.stop(), timeout=5)
