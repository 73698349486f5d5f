"""The emulator engine: a WhatsApp Web client towards the emulated server, behaving as WhatsApp does.

- QR pairing: the client's keys are generated once per attempt; the server hands out refs one after another
  (the first lives ``qr_first_s``, each next ``qr_next_s``, ``qr_refs`` in all); each is reported as a QR event;
  when they run out the attempt ends with ``PairingExpiredEvent`` (WhatsApp's 408 "QR refs attempts ended").
- Phone pairing: one 8-character code for the phone number, valid ``code_ttl_s``.
- A phone accepting the QR/code: the client stores its credentials (creds + keys) and confirms the pairing to
  the server (only then is the device linked and the phone shown success); the stream ends with **515 restart
  required** and the session runner reconnects at once (``resume``) — success. When the server no longer
  accepts the confirmation (the phone's wait ran out), the client drops those credentials and goes on with
  the next ref (a code attempt ends expired).
- Resume connects with the stored credentials; the server refuses an unknown or removed device with 401.
  Like a real client, each connection updates keys (a fresh app-state key, the next pre-key) in the store.
- While connected, the server can end the stream (a drop requested through the control endpoint) with any
  code, and a newer connection of the same device (another worker) replaces this one: 440.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from services.whatsapp.auth_store import AuthStore
from services.whatsapp.emulator.protocol import (
    ClientKeys,
    b64,
    format_pairing_code,
    new_pairing_code,
    new_ref,
)
from services.whatsapp.emulator.server import EmulatorServer, Paired
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
from services.whatsapp.policy import FORBIDDEN, LOGGED_OUT, REPLACED, RESTART_REQUIRED, reason_for

log = logging.getLogger(__name__)
ENGINE = "emulator"
PRE_KEYS = 5


@dataclass(frozen=True)
class EmulatorTimings:
    """Ref lifetimes and count, and the pairing code's lifetime (WhatsApp: 60 s, 20 s, 6 refs)."""

    qr_first_s: float = 60.0
    qr_next_s: float = 20.0
    qr_refs: int = 6
    code_ttl_s: float = 160.0


@dataclass
class _Live:
    kind: str  # "pairing" | "connected"
    wake: asyncio.Event
    task: asyncio.Task[None] | None = None
    seq: int = 0


class EmulatorEngine(AbstractWhatsAppEngine):
    """Many sessions of one worker against the (shared) emulated server."""

    name = ENGINE

    def __init__(self, server: EmulatorServer, auth: AuthStore, timings: EmulatorTimings, *, owner: str) -> None:
        self.server = server
        self.auth = auth
        self.timings = timings
        self.owner = owner
        self._live: dict[str, _Live] = {}

    # -- notifications from the server (any worker's change) ---------------------------------------------
    def notify(self, session_id: str) -> None:
        """The server changed something about ``session_id``: its task re-checks."""
        live = self._live.get(session_id)
        if live is not None:
            live.wake.set()

    def notify_all(self) -> None:
        """Re-check every session (after the notification listener reconnected)."""
        for live in self._live.values():
            live.wake.set()

    # -- the interface -----------------------------------------------------------------------------------
    async def start_qr_pairing(self, session_id: str, attempt_id: str, sink: EventSink) -> None:
        """Start an attempt and report a QR per ref until scanned or expired."""
        await self.pause(session_id)
        keys = ClientKeys.generate()
        live = self._spawn_slot(session_id, "pairing")
        try:
            await self.server.begin_pairing(session_id, attempt_id, keys.identity_pub_b64)
        except Exception as exc:
            self._live.pop(session_id, None)
            sink(UnreachableEvent(f"emulated WhatsApp server unreachable: {exc!r}"))
            return
        self._run(live, session_id, sink, lambda: self._qr_flow(session_id, attempt_id, keys, sink, live))

    async def start_phone_pairing(self, session_id: str, attempt_id: str, phone: str, sink: EventSink) -> None:
        """Start an attempt and report one pairing code for ``phone``."""
        await self.pause(session_id)
        keys = ClientKeys.generate()
        live = self._spawn_slot(session_id, "pairing")
        try:
            await self.server.begin_pairing(session_id, attempt_id, keys.identity_pub_b64)
        except Exception as exc:
            self._live.pop(session_id, None)
            sink(UnreachableEvent(f"emulated WhatsApp server unreachable: {exc!r}"))
            return
        self._run(live, session_id, sink, lambda: self._code_flow(session_id, attempt_id, phone, keys, sink, live))

    async def resume(self, session_id: str, sink: EventSink) -> None:
        """Connect with the stored credentials; report connected, or 401 when the server refuses the device."""
        await self.pause(session_id)
        stored = await self.auth.load(session_id)
        if stored is None or stored.engine != ENGINE:
            raise NoCredentials(session_id)
        creds = json.loads(stored.creds)
        try:
            result = await self.server.connect(session_id, creds["identity_pub"], self.owner)
        except Exception as exc:
            sink(UnreachableEvent(f"emulated WhatsApp server unreachable: {exc!r}"))
            return
        if result.refused_code is not None:
            sink(LoggedOutEvent(result.refused_code, "the device is no longer linked"))
            return
        live = self._spawn_slot(session_id, "connected")
        live.seq = result.seq
        try:
            await self._rotate_keys(session_id, result.seq)
        except Exception as exc:
            self._live.pop(session_id, None)
            await self._close_quietly(session_id, result.seq)
            sink(UnreachableEvent(f"credential store unreachable: {exc!r}"))
            return
        sink(ConnectedEvent(result.phone or creds.get("phone")))
        self._run(live, session_id, sink, lambda: self._watch(session_id, live, sink))

    async def pause(self, session_id: str) -> None:
        """Close the session's connection or attempt; credentials stay."""
        live = self._live.pop(session_id, None)
        if live is None:
            return
        if live.task is not None and not live.task.done():
            live.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await live.task
        if live.kind == "connected":
            await self._close_quietly(session_id, live.seq)

    async def logout(self, session_id: str) -> None:
        """Close and unlink the device on the server."""
        await self.pause(session_id)
        await self.server.unlink(session_id)

    def is_live(self, session_id: str) -> bool:
        """True while connected in this process."""
        live = self._live.get(session_id)
        return live is not None and live.kind == "connected"

    async def close(self) -> None:
        """Close every connection of this process."""
        for session_id in list(self._live):
            await self.pause(session_id)

    @property
    def live_sessions(self) -> int:
        """Connections and attempts open in this process."""
        return len(self._live)

    # -- internals ---------------------------------------------------------------------------------------
    def _spawn_slot(self, session_id: str, kind: str) -> _Live:
        live = _Live(kind=kind, wake=asyncio.Event())
        self._live[session_id] = live
        return live

    def _run(
        self, live: _Live, session_id: str, sink: EventSink, flow: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        async def guarded() -> None:
            try:
                await flow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("emulator connection failed", extra={"session_id": session_id, "error": repr(exc)})
                if self._live.get(session_id) is live:
                    self._live.pop(session_id, None)
                    sink(UnreachableEvent(f"emulated WhatsApp server unreachable: {exc!r}"))
            else:
                if self._live.get(session_id) is live:
                    self._live.pop(session_id, None)

        live.task = asyncio.create_task(guarded(), name=f"emulator:{session_id}")

    async def _close_quietly(self, session_id: str, seq: int) -> None:
        try:
            await self.server.close_connection(session_id, seq)
        except Exception as exc:
            log.debug("closing emulator connection failed", extra={"session_id": session_id, "error": repr(exc)})

    async def _wait_paired(self, session_id: str, attempt_id: str, live: _Live, ttl_s: float) -> Paired | None:
        """Wait up to ``ttl_s`` for a phone to accept the attempt (the server's notification wakes us).

        The caller clears ``live.wake`` before issuing the ref or code, so a scan right after is not missed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ttl_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                await asyncio.wait_for(live.wake.wait(), timeout=remaining)
            except TimeoutError:
                return None
            live.wake.clear()
            outcome = await self.server.pairing_outcome(session_id, attempt_id)
            if outcome is not None:
                return outcome

    async def _qr_flow(self, session_id: str, attempt_id: str, keys: ClientKeys, sink: EventSink, live: _Live) -> None:
        t = self.timings
        for seq in range(1, t.qr_refs + 1):
            ttl = t.qr_first_s if seq == 1 else t.qr_next_s
            live.wake.clear()
            issued = await self.server.issue_ref(session_id, attempt_id, keys.qr_payload(new_ref()), ttl)
            if issued is None:
                break
            sink(QrEvent(attempt_id, issued.value, seq, t.qr_refs, issued.expires_at))
            paired = await self._wait_paired(session_id, attempt_id, live, ttl)
            if paired is not None and await self._linked(session_id, attempt_id, keys, paired, sink):
                return
        paired = await self.server.end_pairing(session_id, attempt_id)
        if paired is None or not await self._linked(session_id, attempt_id, keys, paired, sink):
            sink(PairingExpiredEvent(attempt_id))

    async def _code_flow(
        self, session_id: str, attempt_id: str, phone: str, keys: ClientKeys, sink: EventSink, live: _Live
    ) -> None:
        ttl = self.timings.code_ttl_s
        live.wake.clear()
        issued = await self.server.issue_code(session_id, attempt_id, new_pairing_code(), phone, ttl)
        if issued is not None:
            sink(PairingCodeEvent(attempt_id, format_pairing_code(issued.value), issued.expires_at))
            paired = await self._wait_paired(session_id, attempt_id, live, ttl)
        else:
            paired = None
        if paired is None:
            paired = await self.server.end_pairing(session_id, attempt_id)
        if paired is None or not await self._linked(session_id, attempt_id, keys, paired, sink):
            sink(PairingExpiredEvent(attempt_id))

    async def _linked(
        self, session_id: str, attempt_id: str, keys: ClientKeys, paired: Paired, sink: EventSink
    ) -> bool:
        """Store the new device's credentials and confirm the pairing, then end the stream with 515.

        False (credentials dropped again) when the server refused the confirmation: the scan was undone.
        """
        creds = {
            "noise_key": {"private": b64(keys.noise_priv), "public": b64(keys.noise_pub)},
            "signed_identity_key": {"private": b64(keys.identity_priv), "public": b64(keys.identity_pub)},
            "identity_pub": keys.identity_pub_b64,
            "adv_secret_key": b64(keys.adv_secret),
            "registration_id": secrets.randbelow(16380) + 1,
            "signed_pre_key": {"key_id": 1, "public": b64(secrets.token_bytes(32))},
            "me": {"id": f"{paired.phone}:{paired.device_id}@s.whatsapp.net"},
            "phone": paired.phone,
            "platform": "emulator",
        }
        pre_keys: dict[tuple[str, str], bytes | None] = {
            ("pre-key", str(i)): secrets.token_bytes(32) for i in range(1, PRE_KEYS + 1)
        }
        await self.auth.save(session_id, engine=ENGINE, creds=json.dumps(creds).encode(), keys=pre_keys)
        # Shielded: once sent, the confirmation's answer decides whether the stored credentials are kept, even
        # when this flow is cancelled meanwhile (a new attempt); otherwise a confirmed device could lose them.
        confirming = asyncio.ensure_future(self.server.confirm_pairing(session_id, attempt_id))
        try:
            confirmed = await asyncio.shield(confirming)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                if not await confirming:
                    await self.auth.wipe(session_id)
            raise
        # (When the confirmation itself fails, its outcome is unknown: the credentials stay; if the link was
        # undone, resume is refused with 401 and the runner reports the session logged out.)
        if not confirmed:
            log.info("pairing not confirmed: the phone stopped waiting", extra={"session_id": session_id})
            await self.auth.wipe(session_id)
            return False
        sink(DisconnectedEvent(RESTART_REQUIRED, reason_for(RESTART_REQUIRED)))
        return True

    async def _rotate_keys(self, session_id: str, seq: int) -> None:
        """What a real client writes on every connection: a fresh app-state key and the next pre-key."""
        await self.auth.save(
            session_id,
            engine=ENGINE,
            keys={
                ("app-state-sync-key", "current"): secrets.token_bytes(32),
                ("pre-key", str(PRE_KEYS + seq % PRE_KEYS + 1)): secrets.token_bytes(32),
            },
        )

    async def _watch(self, session_id: str, live: _Live, sink: EventSink) -> None:
        """Hold the connection until the server ends it (a drop) or a newer connection replaces it."""
        while True:
            live.wake.clear()
            state = await self.server.connection(session_id)
            if state is None or (state.revoked and state.pending_drop is None):
                sink(LoggedOutEvent(LOGGED_OUT, reason_for(LOGGED_OUT)))
                return
            if state.seq != live.seq:
                sink(DisconnectedEvent(REPLACED, reason_for(REPLACED)))
                return
            if state.pending_drop is not None:
                code = await self.server.take_drop(session_id, live.seq)
                if code is not None:
                    if code in (LOGGED_OUT, FORBIDDEN):
                        sink(LoggedOutEvent(code, reason_for(code)))
                    else:
                        sink(DisconnectedEvent(code, reason_for(code)))
                    return
            await live.wake.wait()
