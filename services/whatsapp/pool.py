"""The worker's session pool: the lease loop (renew, claim, fence) and one runner per session it owns.

See services/whatsapp/ownership.py for the lease and its takeover bound, services/whatsapp/commands.py for
how commands reach the owner, services/whatsapp/runner.py for what a runner does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp import ownership
from services.whatsapp.runner import RunnerDeps, SessionRunner, wait_done

log = logging.getLogger(__name__)

SESSIONS_OWNED = Gauge("whatsapp_sessions_owned", "WhatsApp sessions this worker owns (live runners)")


@dataclass(frozen=True)
class PoolConfig:
    """Lease length, how often it is renewed and free sessions are claimed, and the claim batch size."""

    lease_s: float = 10.0
    check_s: float = 2.0
    claim_batch: int = 200


class SessionPool:
    """Owns sessions through leases and runs each owned session in a :class:`SessionRunner`."""

    def __init__(self, deps: RunnerDeps, sessionmaker: async_sessionmaker[AsyncSession], config: PoolConfig) -> None:
        self.deps = deps
        self.config = config
        self._sessionmaker = sessionmaker
        self.runners: dict[str, SessionRunner] = {}
        self._kick = asyncio.Event()
        self._hints: set[str] = set()
        self._closing = False
        self._loop_exited = asyncio.Event()
        self._running = False
        self.last_renewed: float | None = None

    @property
    def worker_id(self) -> str:
        """This worker's id (the lease owner value)."""
        return self.deps.worker_id

    # -- entry points ------------------------------------------------------------------------------------
    def adopt(self, session_id: str) -> None:
        """This worker holds the session's lease (it just recorded a command): run it, or wake its runner."""
        runner, created = self._ensure(session_id)
        if runner is not None and not created:
            runner.wake()

    def on_session_notify(self, session_id: str) -> None:
        """A command was recorded for ``session_id`` somewhere: wake its runner, or try to claim it."""
        runner = self.runners.get(session_id)
        if runner is not None and not runner.done:
            runner.wake()
        else:
            self._hints.add(session_id)
            self._kick.set()

    def on_listener_ready(self) -> None:
        """The listener (re)connected: notifications may have been missed; re-check everything."""
        for runner in list(self.runners.values()):
            runner.wake()
        self._kick.set()

    def kick(self) -> None:
        """Run a lease pass now."""
        self._kick.set()

    # -- the lease loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Renew, claim and fence every ``check_s`` (or when kicked) until ``stop``."""
        self._running = True
        try:
            while not stop.is_set() and not self._closing:
                try:
                    await self.lease_pass()
                except Exception as exc:
                    log.warning("lease pass failed", extra={"error": repr(exc)})
                self._fence_if_stale()
                self._kick.clear()
                waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self._kick.wait())}
                await asyncio.wait(waiters, timeout=self.config.check_s, return_when=asyncio.FIRST_COMPLETED)
                for task in waiters:
                    task.cancel()
        finally:
            self._loop_exited.set()

    async def lease_pass(self) -> None:
        """One pass: renew what we hold, drop what we lost, adopt orphans, claim free sessions."""
        me, lease = self.worker_id, self.config.lease_s
        hints, self._hints = self._hints, set()
        renewing_since = time.monotonic()
        async with self._sessionmaker() as db, db.begin():
            owned = await ownership.renew(db, me, lease)
        self.last_renewed = time.monotonic()
        for session_id, runner in list(self.runners.items()):
            # A runner started during the renewal (a command just claimed it) is not in its result yet.
            if session_id not in owned and not runner.done and runner.created_at < renewing_since:
                log.warning("lease lost; closing the session here", extra={"session_id": session_id})
                runner.stop(release=False)
        for session_id in owned:
            self._ensure(session_id)
        claimed: list[str] = []
        for session_id in hints - owned:
            async with self._sessionmaker() as db, db.begin():
                if await ownership.claim_one(db, session_id, me, lease):
                    claimed.append(session_id)
        if not self._closing:
            async with self._sessionmaker() as db, db.begin():
                claimed += await ownership.claim_batch(db, me, lease, self.config.claim_batch)
        for session_id in claimed:
            log.info("session claimed", extra={"session_id": session_id})
            self._ensure(session_id)
        SESSIONS_OWNED.set(sum(1 for r in self.runners.values() if not r.done))

    def _fence_if_stale(self) -> None:
        """Not renewed for a whole lease: another worker may own our sessions now; close them all here."""
        if self.last_renewed is None:
            return
        if time.monotonic() - self.last_renewed > self.config.lease_s:
            live = [r for r in self.runners.values() if not r.done]
            if live:
                log.error("leases not renewed for a whole lease period; closing every session here")
            for runner in live:
                runner.stop(release=False)

    def _ensure(self, session_id: str) -> tuple[SessionRunner | None, bool]:
        runner = self.runners.get(session_id)
        if runner is not None and not runner.done:
            return runner, False
        if self._closing:
            return None, False
        runner = SessionRunner(self.deps, session_id, self._runner_done)
        self.runners[session_id] = runner
        runner.start()
        return runner, True

    def _runner_done(self, runner: SessionRunner) -> None:
        if self.runners.get(runner.session_id) is runner:
            del self.runners[runner.session_id]

    # -- shutdown ----------------------------------------------------------------------------------------
    async def shutdown(self, timeout_s: float = 8.0) -> None:
        """Close every connection and release every lease, so other workers take over at once."""
        self._closing = True
        self._kick.set()
        if self._running:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._loop_exited.wait(), timeout=timeout_s / 2)
        runners = list(self.runners.values())
        for runner in runners:
            runner.stop(release=True)
        await wait_done(runners, timeout_s)
        try:
            async with self._sessionmaker() as db, db.begin():
                await ownership.release_all(db, self.worker_id)
        except Exception as exc:
            log.warning("releasing leases failed; they will expire", extra={"error": repr(exc)})
        await self.deps.engine.close()
        log.info("session pool stopped", extra={"sessions": len(runners)})
