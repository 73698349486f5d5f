"""Helpers for the whatsapp tests: in-process workers on the real database, and a tap on the broker's events."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.whatsapp import commands, ownership
from services.whatsapp.auth_store import PostgresAuthStore
from services.whatsapp.commands import SessionCommand, record_command
from services.whatsapp.db import IO_SLOTS, RUNNER_SLOTS
from services.whatsapp.emulator import server as emulator_server
from services.whatsapp.emulator.engine import EmulatorEngine, EmulatorTimings
from services.whatsapp.emulator.server import PostgresEmulatorServer
from services.whatsapp.notify import PgListener
from services.whatsapp.policy import Backoff, ConnectionPolicy
from services.whatsapp.pool import PoolConfig, SessionPool
from services.whatsapp.runner import RunnerDeps
from shared.bus.broker import Broker
from shared.bus.topology import EXCHANGE
from shared.db.models import OutboxMessage, WhatsAppAuth, WhatsAppSession
from shared.db.uow import UnitOfWork
from shared.messages import Message, decode, session_id_for

_salons = itertools.count(int(time.time()) % 100_000 * 10 + 7_000_000)


_created: set[str] = set()


def new_session() -> tuple[int, str]:
    """A salon id nobody else in this test session uses, and its WhatsApp session id."""
    salon_id = next(_salons)
    session_id = session_id_for(salon_id)
    _created.add(session_id)
    return salon_id, session_id


class Recorder:
    """Stands in for the broker in in-process workers: keeps what was committed, clears the outbox rows."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self.messages: list[Message] = []

    async def publish(self, uow: UnitOfWork) -> None:
        """Take the unit of work's committed messages (as ``publish_committed`` would after a confirm)."""
        msgs = uow.take_committed()
        if not msgs:
            return
        self.messages.extend(msgs)
        async with self._sessionmaker() as db, db.begin():
            await db.execute(delete(OutboxMessage).where(OutboxMessage.id.in_([m.id for m in msgs])))

    def of(self, kind: type[Message], session_id: str | None = None) -> list[Any]:
        """Messages of one type (for one session)."""
        return [
            m
            for m in self.messages
            if isinstance(m, kind) and (session_id is None or getattr(m.data, "session_id", None) == session_id)
        ]


FAST_TIMINGS = EmulatorTimings(qr_first_s=1.5, qr_next_s=0.6, qr_refs=3, code_ttl_s=3.0)
FAST_POLICY = ConnectionPolicy(Backoff(base_s=0.2, factor=2.0, cap_s=2.0, jitter=0.2), max_per_minute=5)


@dataclass
class InProcessWorker:
    """One whatsapp worker's moving parts (pool, emulator engine, listener) inside the test process."""

    worker_id: str
    pool: SessionPool
    engine: EmulatorEngine
    listener: PgListener
    recorder: Recorder
    sessionmaker: async_sessionmaker[AsyncSession]
    lease_s: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, *, lease_loop: bool = True) -> None:
        """Run the listener (and the lease loop unless told not to)."""
        self.tasks.append(asyncio.create_task(self.listener.run(self.stop)))
        if lease_loop:
            self.start_lease_loop()

    def start_lease_loop(self) -> None:
        """Run the lease loop (renew, claim)."""
        self.tasks.append(asyncio.create_task(self.pool.run(self.stop)))

    async def ready(self) -> None:
        """Wait until the listener is subscribed."""
        await asyncio.wait_for(self.listener.connected.wait(), timeout=10)

    async def command(self, cmd: SessionCommand) -> commands.CommandOutcome:
        """What the handler does with a command from the queue."""
        uow = UnitOfWork(self.sessionmaker, producer="whatsapp")
        outcome = await record_command(cmd, uow=uow, worker_id=self.worker_id, lease_s=self.lease_s)
        if outcome.recorded and outcome.owner == self.worker_id:
            self.pool.adopt(outcome.session_id)
        return outcome

    async def shutdown(self) -> None:
        """SIGTERM-like: release everything and stop."""
        self.stop.set()
        await self.pool.shutdown()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def stall(self) -> None:
        """A worker that stops renewing and listening (a long GC pause, a partition) but keeps its connections."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


def in_process_worker(
    sessionmaker: async_sessionmaker[AsyncSession],
    database_url: str,
    *,
    lease_s: float = 3.0,
    check_s: float = 0.5,
    timings: EmulatorTimings = FAST_TIMINGS,
    policy: ConnectionPolicy = FAST_POLICY,
    worker_id: str | None = None,
    lease_sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    auth: PostgresAuthStore | None = None,
) -> InProcessWorker:
    """A worker wired like ``services.whatsapp.__main__`` but publishing into a recorder."""
    wid = worker_id or f"test:{uuid.uuid4().hex[:8]}"
    io_slots = asyncio.Semaphore(IO_SLOTS)
    auth = auth or PostgresAuthStore(sessionmaker, slots=io_slots)
    server = PostgresEmulatorServer(sessionmaker, slots=io_slots)
    engine = EmulatorEngine(server, auth, timings, owner=wid)
    recorder = Recorder(sessionmaker)
    deps = RunnerDeps(
        worker_id=wid,
        engine=engine,
        auth=auth,
        policy=policy,
        uow=lambda: UnitOfWork(sessionmaker, producer="whatsapp"),
        publish=recorder.publish,
        rng=random.Random(3),
        clock=time.monotonic,
        slots=asyncio.Semaphore(RUNNER_SLOTS),
    )
    pool = SessionPool(
        deps, lease_sessionmaker or sessionmaker, PoolConfig(lease_s=lease_s, check_s=check_s, claim_batch=500)
    )
    listener = PgListener(database_url, ping_s=2.0)
    listener.subscribe(commands.NOTIFY_CHANNEL, pool.on_session_notify)
    listener.on_ready(pool.on_listener_ready)
    listener.subscribe(emulator_server.NOTIFY_CHANNEL, engine.notify)
    listener.on_ready(engine.notify_all)
    return InProcessWorker(wid, pool, engine, listener, recorder, sessionmaker, lease_s)


async def session_row(sessionmaker: async_sessionmaker[AsyncSession], session_id: str) -> WhatsAppSession | None:
    """The session's row as stored now."""
    async with sessionmaker() as db:
        return (await db.execute(select(WhatsAppSession).where(WhatsAppSession.session_id == session_id))).scalar()


async def auth_rows(sessionmaker: async_sessionmaker[AsyncSession], session_id: str) -> int:
    """How many credential rows the session has."""
    async with sessionmaker() as db:
        rows = await db.execute(select(WhatsAppAuth.kind).where(WhatsAppAuth.session_id == session_id))
        return len(rows.all())


async def release_everything(sessionmaker: async_sessionmaker[AsyncSession], owner: str) -> None:
    """Give up a crashed worker's leases (cleanup between tests)."""
    async with sessionmaker() as db, db.begin():
        await ownership.release_all(db, owner)


def has_created_sessions() -> bool:
    """Whether tests created sessions not parked yet."""
    return bool(_created)


async def park_created(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    """Pause every session the tests created so far (after their workers stopped), so that later tests'
    workers don't resume them: each test's workers deal with its own sessions only."""
    session_ids = set(_created)
    _created.clear()
    if not session_ids:
        return
    async with sessionmaker() as db, db.begin():
        await db.execute(
            update(WhatsAppSession)
            .where(WhatsAppSession.session_id.in_(session_ids))
            .values(state="paused", desired="paused", owner=None, lease_expires_at=None)
            .values(applied_seq=WhatsAppSession.command_seq)
        )


class EventTap:
    """An exclusive queue bound to the exchange: every ``whatsapp.*`` event published, decoded, in order."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._changed = asyncio.Event()

    def of(self, kind: type[Message], session_id: str | None = None) -> list[Any]:
        """Messages of one type (for one session)."""
        return [
            m
            for m in self.messages
            if isinstance(m, kind) and (session_id is None or getattr(m.data, "session_id", None) == session_id)
        ]

    async def wait_for(
        self,
        kind: type[Message],
        session_id: str,
        *,
        count: int = 1,
        timeout: float = 10.0,
        where: Callable[[Any], bool] = lambda _: True,
    ) -> list[Any]:
        """Wait until ``count`` matching messages arrived; returns them all."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.of(kind, session_id) if where(m)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(m.type, getattr(m.data, "session_id", None)) for m in self.messages[-10:]]
                raise AssertionError(f"timed out waiting for {count} {kind.__name__} of {session_id}; last: {seen}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.2))

    def _on(self, body: bytes) -> None:
        self.messages.append(decode(body))
        self._changed.set()


@contextlib.asynccontextmanager
async def event_tap(broker: Broker, keys: tuple[str, ...] = ("whatsapp.#",)) -> AsyncIterator[EventTap]:
    """Bind a private queue to ``keys`` for the duration of the block."""
    tap = EventTap()
    channel = await broker.open_channel(publisher_confirms=False)
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    for key in keys:
        await queue.bind(exchange, routing_key=key)

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            tap._on(message.body)

    tag = await queue.consume(on_message)
    try:
        yield tap
    finally:
        with contextlib.suppress(Exception):
            await queue.cancel(tag)
        with contextlib.suppress(Exception):
            await channel.close()
