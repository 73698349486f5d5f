"""Publishing what a unit of work committed, and the relay that publishes what was left behind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import aio_pika
import asyncpg
from sqlalchemy import func, or_, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus.broker import Broker
from shared.bus.errors import PublishError
from shared.bus.topology import requires_consumer
from shared.db.models import OutboxMessage
from shared.db.uow import UnitOfWork, delete_outbox

log = logging.getLogger(__name__)

# A row younger than this is probably still being published by the process that wrote it.
RELAY_GRACE = timedelta(seconds=5)


class PublishedRows:
    """Outbox rows already published, deleted in batches: one statement every `interval_s` instead of one
    transaction per message. A crash before the delete only lets the relay publish them again after its
    grace period, which idempotent consumers absorb."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, interval_s: float = 0.1) -> None:
        self._sessionmaker = sessionmaker
        self._interval_s = interval_s
        self._ids: list[uuid.UUID] = []

    def add(self, ids: list[uuid.UUID]) -> None:
        """Remember rows to delete at the next flush."""
        self._ids.extend(ids)

    async def flush(self) -> int:
        """Delete every remembered row now; returns how many."""
        ids, self._ids = self._ids, []
        if ids:
            try:
                async with self._sessionmaker() as session:
                    await delete_outbox(session, ids)
            except Exception:
                self._ids.extend(ids)
                raise
        return len(ids)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush periodically until `stop`, then once more."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass
            try:
                await self.flush()
            except Exception as exc:
                log.warning("outbox cleanup failed; will retry", extra={"error": repr(exc)})


async def publish_committed(
    uow: UnitOfWork,
    broker: Broker,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    published: PublishedRows | None = None,
) -> None:
    """Publish the messages `uow` committed, then delete their outbox rows (at once, or in `published`'s batch).

    The relay covers a crash between the publish and the delete.
    """
    msgs = uow.take_committed()
    if not msgs:
        return
    await broker.publish_many(msgs)
    ids = [m.id for m in msgs]
    if published is not None:
        published.add(ids)
        return
    async with sessionmaker() as session:
        await delete_outbox(session, ids)


async def relay_once(
    broker: Broker, sessionmaker: async_sessionmaker[AsyncSession], *, batch: int = 200, grace: timedelta = RELAY_GRACE
) -> int:
    """Publish outbox rows older than `grace`, each row claimed with SKIP LOCKED; returns how many were sent."""
    async with sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    select(OutboxMessage)
                    # A row whose publish already failed once (the gateway's fallback) is due at once.
                    .where(or_(OutboxMessage.created_at < func.now() - grace, OutboxMessage.attempts > 0))
                    # Rows that failed before go behind the others: one unroutable row must not hold back the
                    # batch behind it forever.
                    .order_by(OutboxMessage.attempts, OutboxMessage.created_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        if not rows:
            return 0
        sent: list[uuid.UUID] = []

        async def _send(row: OutboxMessage) -> None:
            msg = aio_pika.Message(
                body=row.body,
                message_id=str(row.id),
                type=row.routing_key,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            try:
                await broker.publish_raw(msg, routing_key=row.routing_key, mandatory=requires_consumer(row.routing_key))
                sent.append(row.id)
            except PublishError as exc:
                log.warning("outbox publish failed", extra={"outbox_id": str(row.id), "error": str(exc)})

        await asyncio.gather(*(_send(r) for r in rows))
        failed = [r.id for r in rows if r.id not in set(sent)]
        if failed:
            await session.execute(
                update(OutboxMessage).where(OutboxMessage.id.in_(failed)).values(attempts=OutboxMessage.attempts + 1)
            )
        await delete_outbox(session, sent)
        # delete_outbox commits only when something was sent; the attempt counts must be kept either way.
        await session.commit()
        return len(sent)


OUTBOX_CHANNEL = "outbox"


async def notify_outbox(session: AsyncSession) -> None:
    """Wake every relay when this transaction commits (PostgreSQL delivers NOTIFY on commit only)."""
    await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": OUTBOX_CHANNEL})


async def run_relay(
    broker: Broker,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    interval_s: float,
    stop: asyncio.Event,
    database_url: str | None = None,
) -> None:
    """Relay left-behind outbox rows until `stop` is set: every `interval_s`, and at once on NOTIFY outbox."""
    wake = asyncio.Event()
    listener = await _listen(database_url, wake) if database_url else None
    try:
        while not stop.is_set():
            wake.clear()
            try:
                if broker.is_connected:
                    while await relay_once(broker, sessionmaker) > 0:
                        pass
            except Exception as exc:
                log.warning("outbox relay pass failed", extra={"error": repr(exc)})
            if listener is None and database_url:
                listener = await _listen(database_url, wake)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(stop.wait(), wake.wait()), timeout=interval_s)
    finally:
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)


async def _first(*waits: Coroutine[Any, Any, Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


async def _listen(database_url: str, wake: asyncio.Event) -> asyncpg.Connection | None:
    """A dedicated connection LISTENing on the outbox channel (None while PostgreSQL is down: polling goes on)."""
    try:
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn, timeout=5)
        await conn.add_listener(OUTBOX_CHANNEL, lambda *_: wake.set())
        return conn
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.debug("outbox listener unavailable; polling", extra={"error": repr(exc)})
        return None
