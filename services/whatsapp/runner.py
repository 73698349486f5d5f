"""One live session in its owner: applies commands, drives the engine, turns engine events into state and messages.

A runner handles one thing at a time from its inbox (a wake-up to re-read commands, an engine event, a retry
timer, a stop), so a session's transitions never interleave. Engine events carry the generation of the
engine start that produced them; events of an older start (a connection already closed) are ignored.

Reconnects follow services/whatsapp/policy.py. Every state write is fenced by the lease
(services/whatsapp/sessions.py): if the session was taken over, the runner closes its connection and ends
without writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from services.whatsapp import ownership, sessions
from services.whatsapp.auth_store import AuthStore
from services.whatsapp.engine import (
    AbstractWhatsAppEngine,
    ConnectedEvent,
    DisconnectedEvent,
    EngineEvent,
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
    UNREACHABLE_CODE,
    Action,
    ConnectionPolicy,
    classify,
)
from services.whatsapp.sessions import LostOwnership, SessionRow
from shared.db.uow import UnitOfWork
from shared.logging import log_context

log = logging.getLogger(__name__)
# A step that fails (database down) is tried this many times before the runner gives up its connection.
STEP_ATTEMPTS = 3


@dataclass(frozen=True)
class RunnerDeps:
    """What every runner of a worker shares."""

    worker_id: str
    engine: AbstractWhatsAppEngine
    auth: AuthStore
    policy: ConnectionPolicy
    uow: Callable[[], UnitOfWork]
    publish: Callable[[UnitOfWork], Awaitable[None]]
    rng: random.Random
    clock: Callable[[], float]
    # Runner steps in flight at once (services/whatsapp/db.py); None: unbounded (tests of a few sessions).
    slots: asyncio.Semaphore | None = None


@dataclass(frozen=True)
class _Wake:
    pass


@dataclass(frozen=True)
class _Engine:
    gen: int
    event: EngineEvent


@dataclass(frozen=True)
class _Retry:
    gen: int


@dataclass(frozen=True)
class _Stable:
    gen: int


@dataclass(frozen=True)
class _Stop:
    pass


_Item = _Wake | _Engine | _Retry | _Stable | _Stop


class SessionRunner:
    """The owner-side life of one session."""

    def __init__(self, deps: RunnerDeps, session_id: str, on_done: Callable[[SessionRunner], None]) -> None:
        self.d = deps
        self.session_id = session_id
        self._on_done = on_done
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._timers: list[asyncio.TimerHandle] = []
        self._stop_release: bool | None = None
        self.gen = 0
        self.failures = 0
        self.limiter = deps.policy.limiter(deps.clock)
        self.connected_gen: int | None = None
        self.seen_connection = False
        self.done = False
        self.task: asyncio.Task[None] | None = None
        self.created_at = time.monotonic()

    # -- control -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the session (it first reads its row and applies a pending command or resumes)."""
        # A fresh context: the runner outlives the command that created it, so it must not log that command's ids.
        self.task = asyncio.create_task(self._main(), name=f"session:{self.session_id}", context=contextvars.Context())

    def wake(self) -> None:
        """Re-read the row (a command was recorded)."""
        if not self.done:
            self._inbox.put_nowait(_Wake())

    def stop(self, *, release: bool) -> None:
        """Close the connection and end; ``release`` gives the lease up (shutdown), else the lease is gone."""
        if self._stop_release is None or release:
            self._stop_release = release
        self._inbox.put_nowait(_Stop())

    # -- the loop ----------------------------------------------------------------------------------------
    async def _main(self) -> None:
        with log_context(session_id=self.session_id):
            try:
                await self._step(self._start)
                while not self.done:
                    item = await self._inbox.get()
                    if self._stop_release is not None:
                        await self._halt(release=self._stop_release)
                        break
                    await self._step(functools.partial(self._handle, item))
            finally:
                self._cancel_timers()
                self.done = True
                self._on_done(self)

    async def _step(self, fn: Callable[[], Awaitable[None]]) -> None:
        for attempt in range(1, STEP_ATTEMPTS + 1):
            try:
                async with self.d.slots or contextlib.nullcontext():
                    await fn()
                return
            except LostOwnership:
                log.info("session taken over by another worker; closing here")
                await self._halt(release=False)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("session step failed", extra={"error": repr(exc), "attempt": attempt})
                if attempt == STEP_ATTEMPTS:
                    # The lease stays ours; the pool adopts the session again at its next pass and recovers it
                    # from the database.
                    await self._halt(release=False)
                    return
                await asyncio.sleep(0.5 * attempt)

    async def _handle(self, item: _Item) -> None:
        if isinstance(item, _Wake):
            row = await self._load()
            if row.command_pending:
                await self._apply(row)
        elif isinstance(item, _Engine):
            if item.gen == self.gen:
                await self._on_event(item.event)
            else:
                log.debug("stale engine event ignored", extra={"event": type(item.event).__name__})
        elif isinstance(item, _Retry):
            if item.gen == self.gen:
                await self._retry_now()
        elif isinstance(item, _Stable):
            if item.gen == self.gen and self.connected_gen == item.gen:
                self.failures = 0
                await sessions.record_stable(self.d.uow(), self.session_id, self.d.worker_id)

    # -- helpers -----------------------------------------------------------------------------------------
    def _sink(self, gen: int) -> EventSink:
        def sink(event: EngineEvent) -> None:
            self._inbox.put_nowait(_Engine(gen, event))

        return sink

    def _later(self, delay_s: float, item: _Item) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(max(0.0, delay_s), self._inbox.put_nowait, item))

    def _cancel_timers(self) -> None:
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()

    def _new_gen(self) -> int:
        self.gen += 1
        self.connected_gen = None
        self._cancel_timers()
        return self.gen

    async def _load(self) -> SessionRow:
        uow = self.d.uow()
        async with uow:
            row = await sessions.load(uow.session, self.session_id)
        if row is None or row.owner != self.d.worker_id:
            raise LostOwnership(self.session_id)
        return row

    async def _emit(self, write: Callable[[UnitOfWork], Awaitable[object]]) -> object:
        uow = self.d.uow()
        result = await write(uow)
        await self.d.publish(uow)
        return result

    async def _wipe(self, db: AsyncSession) -> None:
        await self.d.auth.wipe(self.session_id, db=db)
        await self.d.engine.forget(self.session_id, db)

    async def _engine_pause(self) -> None:
        try:
            await self.d.engine.pause(self.session_id)
        except Exception as exc:
            log.warning("engine pause failed", extra={"error": repr(exc)})

    def _finished(self, released: bool) -> None:
        """After a stop transition: end, or go on when a newer command kept the lease ours."""
        if released:
            self.done = True
        else:
            self.wake()

    async def _halt(self, *, release: bool) -> None:
        self._new_gen()
        await self._engine_pause()
        if release:
            try:
                async with self.d.uow() as uow:
                    await ownership.release_all(uow.session, self.d.worker_id, [self.session_id])
                    await uow.commit()
            except Exception as exc:
                log.warning("lease release failed; it will expire", extra={"error": repr(exc)})
        self.done = True

    # -- what to do --------------------------------------------------------------------------------------
    async def _start(self) -> None:
        row = await self._load()
        self.failures = row.failures
        if row.command_pending:
            await self._apply(row)
        else:
            await self._recover(row)

    async def _apply(self, row: SessionRow) -> None:
        seq = row.command_seq
        sid, me = self.session_id, self.d.worker_id
        log.info("applying command", extra={"desired": row.desired, "state": row.state, "seq": seq})
        if row.desired == "paused":
            self._new_gen()
            await self._engine_pause()
            released = await self._emit(
                lambda uow: sessions.record_stopped(uow, sid, me, state="paused", applied_seq=seq)
            )
            self._finished(bool(released))
        elif row.desired == "logged_out":
            had_session = row.state not in ("logged_out", "new") or await self.d.auth.exists(sid)
            self._new_gen()
            try:
                await self.d.engine.logout(sid)
            except Exception as exc:
                log.warning("engine logout failed; credentials are wiped anyway", extra={"error": repr(exc)})
            released = await self._emit(
                lambda uow: sessions.record_stopped(
                    uow,
                    sid,
                    me,
                    state="logged_out",
                    reason="logout requested",
                    wipe=self._wipe,
                    event="logged_out" if had_session else None,
                    applied_seq=seq,
                )
            )
            self._finished(bool(released))
        elif row.state == "connected" and self.d.engine.is_live(sid):
            await sessions.mark_applied(self.d.uow(), sid, me, seq)
        elif await self.d.auth.exists(sid):
            await self._connect(applied_seq=seq)
        else:
            await self._pair(row.pairing_mode or "qr", row.pairing_phone, applied_seq=seq)

    async def _recover(self, row: SessionRow) -> None:
        """Claimed without a pending command (takeover, restart): resume what the row says should be live."""
        if row.desired != "running" or row.state not in ownership.LIVE_STATES:
            released = await self._emit(lambda uow: sessions.release(uow, self.session_id, self.d.worker_id))
            self._finished(bool(released))
            return
        delay = 0.0
        if row.retry_at is not None:
            delay = max(0.0, (row.retry_at - datetime.now(UTC)).total_seconds())
        has_creds = await self.d.auth.exists(self.session_id)
        log.info("recovering session", extra={"state": row.state, "credentials": has_creds, "delay_s": delay})
        if not has_creds and row.state in ("connected", "connecting"):
            await self._logged_out(BAD_SESSION, "credentials are missing: pair again")
        elif delay > 0:
            self._later(delay, _Retry(self._new_gen()))
        elif has_creds:
            await self._connect()
        else:
            await self._pair(row.pairing_mode or "qr", row.pairing_phone)

    async def _pair(self, mode: str, phone: str | None, *, applied_seq: int | None = None) -> None:
        gen = self._new_gen()
        # The attempt being replaced may link its device while it stops: a phone that scanned its QR a moment
        # ago is confirmed by that flow (shielded), which stores the credentials. Stop it first and connect with
        # them rather than start a new attempt the phone will never scan (the link would sit unused).
        await self._engine_pause()
        if await self.d.auth.exists(self.session_id):
            log.info("the replaced attempt linked the device; connecting instead of pairing again")
            await self._connect(applied_seq=applied_seq)
            return
        attempt_id = uuid.uuid4().hex
        await sessions.begin_pairing(
            self.d.uow(),
            self.session_id,
            self.d.worker_id,
            attempt_id=attempt_id,
            mode=mode,
            phone=phone,
            applied_seq=applied_seq,
        )
        log.info("pairing started", extra={"mode": mode, "attempt_id": attempt_id})
        if mode == "phone" and phone:
            await self.d.engine.start_phone_pairing(self.session_id, attempt_id, phone, self._sink(gen))
        else:
            await self.d.engine.start_qr_pairing(self.session_id, attempt_id, self._sink(gen))

    async def _connect(self, *, applied_seq: int | None = None) -> None:
        gen = self._new_gen()
        await sessions.record_connecting(self.d.uow(), self.session_id, self.d.worker_id, applied_seq=applied_seq)
        wait = self.limiter.wait_s()
        if wait > 0:
            log.info("reconnect cap reached; waiting", extra={"wait_s": round(wait, 3)})
            self._later(wait, _Retry(gen))
            return
        self.limiter.record()
        try:
            await self.d.engine.resume(self.session_id, self._sink(gen))
        except NoCredentials:
            await self._logged_out(BAD_SESSION, "credentials are missing: pair again")

    async def _retry_now(self) -> None:
        if await self.d.auth.exists(self.session_id):
            await self._connect()
        else:
            row = await self._load()
            await self._pair(row.pairing_mode or "qr", row.pairing_phone)

    async def _on_event(self, event: EngineEvent) -> None:
        sid, me = self.session_id, self.d.worker_id
        if isinstance(event, QrEvent):
            await self._emit(lambda uow: sessions.record_qr(uow, sid, me, event))
        elif isinstance(event, PairingCodeEvent):
            await self._emit(lambda uow: sessions.record_pairing_code(uow, sid, me, event))
        elif isinstance(event, PairingExpiredEvent):
            self._new_gen()
            await self._engine_pause()
            released = await self._emit(lambda uow: sessions.record_pairing_expired(uow, sid, me, event.attempt_id))
            if released is not None:
                self._finished(bool(released))
        elif isinstance(event, ConnectedEvent):
            silently = not self.seen_connection
            self.seen_connection = True
            self.connected_gen = self.gen
            announced = await self._emit(
                lambda uow: sessions.record_connected(uow, sid, me, event.phone, resumed_silently=silently)
            )
            log.info("connected", extra={"announced": announced})
            self._later(self.d.policy.stable_after_s, _Stable(self.gen))
        elif isinstance(event, DisconnectedEvent):
            await self._on_disconnect(event.code, event.reason, unreachable=False)
        elif isinstance(event, LoggedOutEvent):
            await self._logged_out(event.code, event.reason)
        elif isinstance(event, UnreachableEvent):
            await self._on_disconnect(UNREACHABLE_CODE, f"engine unreachable: {event.reason}", unreachable=True)

    async def _on_disconnect(self, code: int, reason: str, *, unreachable: bool) -> None:
        action = Action.RETRY if unreachable else classify(code)
        sid, me = self.session_id, self.d.worker_id
        log.info("disconnected", extra={"code": code, "action": str(action), "reason": reason})
        if action is Action.RESTART:
            await self._connect()
        elif action is Action.RETRY:
            gen = self._new_gen()
            await self._engine_pause()
            self.failures += 1
            delay = self.d.policy.retry_delay(self.failures, self.limiter, self.d.rng)
            failures = self.failures
            await self._emit(
                lambda uow: sessions.record_disconnected(
                    uow,
                    sid,
                    me,
                    code=code,
                    reason=reason,
                    failures=failures,
                    retry_in_s=delay,
                    unreachable=unreachable,
                )
            )
            self._later(delay, _Retry(gen))
        elif action is Action.REPLACED:
            self._new_gen()
            await self._engine_pause()
            released = await self._emit(
                lambda uow: sessions.record_stopped(
                    uow, sid, me, state="replaced", code=code, reason=reason, event="disconnected"
                )
            )
            self._finished(bool(released))
        else:
            await self._logged_out(code, reason)

    async def _logged_out(self, code: int, reason: str) -> None:
        """Terminal (401, 403, 500 bad session): credentials wiped with the state, the salon told."""
        sid, me = self.session_id, self.d.worker_id
        self._new_gen()
        await self._engine_pause()
        released = await self._emit(
            lambda uow: sessions.record_stopped(
                uow, sid, me, state="logged_out", code=code, reason=reason, wipe=self._wipe, event="logged_out"
            )
        )
        self._finished(bool(released))


async def wait_done(runners: list[SessionRunner], timeout_s: float) -> None:
    """Wait for runners to end (bounded)."""
    tasks = [r.task for r in runners if r.task is not None and not r.task.done()]
    if tasks:
        with contextlib.suppress(Exception):
            await asyncio.wait(tasks, timeout=timeout_s)
