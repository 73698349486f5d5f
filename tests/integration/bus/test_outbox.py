"""The transactional outbox: publish after commit, and the relay for rows a crash left behind (SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.bus import topology as t
from shared.bus.broker import Broker
from shared.bus.outbox import PublishedRows, notify_outbox, publish_committed, relay_once, run_relay
from shared.config import Settings
from shared.db.models import OutboxMessage
from shared.db.uow import UnitOfWork
from shared.messages import YClientsDataChanged, decode, encode
from tests.integration.bus.bus_support import data_changed
from tests.support.wait import wait_for

Sessions = async_sessionmaker[AsyncSession]
NO_GRACE = timedelta(0)


@pytest.fixture
async def data_changed_queue(channel: AbstractChannel) -> AsyncIterator[AbstractQueue]:
    """A private queue bound to `yclients.data_changed`, a type no work queue consumes (nobody else is disturbed)."""
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(t.EXCHANGE, routing_key=YClientsDataChanged.ROUTING_KEY)
    yield queue
    await queue.unbind(t.EXCHANGE, routing_key=YClientsDataChanged.ROUTING_KEY)


async def _drain(queue: AbstractQueue) -> Counter[str]:
    """Message ids now in the queue, with how often each arrived (everything confirmed is already routed)."""
    seen: Counter[str] = Counter()
    while (incoming := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        seen[str(incoming.message_id)] += 1
    return seen


async def _rows(sessionmaker: Sessions, ids: list[uuid.UUID]) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).where(OutboxMessage.id.in_(ids)))).scalar_one())


async def _commit_without_publishing(sessionmaker: Sessions, count: int) -> list[YClientsDataChanged]:
    """What a worker that crashed right after its commit leaves behind."""
    msgs = [data_changed(700 + i) for i in range(count)]
    uow = UnitOfWork(sessionmaker, producer="test")
    async with uow:
        for msg in msgs:
            uow.emit(msg)
        await uow.commit()
    return msgs


async def test_publish_committed_delivers_and_deletes_the_rows(
    broker: Broker, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    msg = data_changed(701)
    uow = UnitOfWork(sessionmaker, producer="test")
    async with uow:
        uow.emit(msg)
        assert await _rows(sessionmaker, [msg.id]) == 0  # not visible before the commit
        await uow.commit()
    assert await _rows(sessionmaker, [msg.id]) == 1

    await publish_committed(uow, broker, sessionmaker)

    incoming = await data_changed_queue.get(timeout=5)
    assert incoming.message_id == str(msg.id)
    assert decode(incoming.body) == msg
    assert await _rows(sessionmaker, [msg.id]) == 0
    assert uow.take_committed() == []


async def test_published_rows_are_deleted_in_one_batch_at_the_next_flush(
    broker: Broker, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    msgs = [data_changed(720 + i) for i in range(3)]
    published = PublishedRows(sessionmaker)
    for msg in msgs:
        uow = UnitOfWork(sessionmaker, producer="test")
        async with uow:
            uow.emit(msg)
            await uow.commit()
        await publish_committed(uow, broker, sessionmaker, published=published)
    ids = [m.id for m in msgs]

    assert set(await _drain(data_changed_queue)) == {str(i) for i in ids}
    assert await _rows(sessionmaker, ids) == 3  # published, not yet cleaned up
    assert await published.flush() == 3
    assert await _rows(sessionmaker, ids) == 0


async def test_a_rolled_back_unit_of_work_emits_nothing(
    broker: Broker, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    msg = data_changed(702)
    uow = UnitOfWork(sessionmaker, producer="test")
    async with uow:
        uow.emit(msg)
    await publish_committed(uow, broker, sessionmaker)
    assert await _rows(sessionmaker, [msg.id]) == 0
    assert await _drain(data_changed_queue) == Counter()


async def test_the_relay_skips_rows_another_relay_holds(
    broker: Broker, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    msgs = await _commit_without_publishing(sessionmaker, 4)
    held, free = [m.id for m in msgs[:2]], [m.id for m in msgs[2:]]
    await relay_once(broker, sessionmaker)
    assert await _rows(sessionmaker, held + free) == 4  # younger than the grace: their writer may still publish

    async with sessionmaker() as other_relay:
        await other_relay.execute(select(OutboxMessage).where(OutboxMessage.id.in_(held)).with_for_update())
        # Without SKIP LOCKED this would wait for the other relay's transaction.
        await asyncio.wait_for(relay_once(broker, sessionmaker, grace=NO_GRACE), timeout=10)
        assert await _rows(sessionmaker, free) == 0
        assert await _rows(sessionmaker, held) == 2
        await other_relay.rollback()

    await relay_once(broker, sessionmaker, grace=NO_GRACE)
    assert await _rows(sessionmaker, held) == 0
    assert await _drain(data_changed_queue) == Counter({str(m.id): 1 for m in msgs})


async def test_two_relays_at_once_publish_each_left_behind_row_exactly_once(
    broker: Broker, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    msgs = await _commit_without_publishing(sessionmaker, 30)
    ids = [m.id for m in msgs]

    async def relay_until_empty() -> None:
        while await relay_once(broker, sessionmaker, batch=4, grace=NO_GRACE) > 0:
            pass

    await asyncio.wait_for(asyncio.gather(relay_until_empty(), relay_until_empty()), timeout=30)

    assert await _rows(sessionmaker, ids) == 0
    delivered = await _drain(data_changed_queue)
    assert delivered == Counter({str(i): 1 for i in ids})


async def test_a_row_the_broker_refuses_stays_with_its_attempt_counted(
    settings: Settings, sessionmaker: Sessions
) -> None:
    row_id = uuid.uuid4()
    # A broker that never connected refuses every publish, as one that is down would.
    broker = Broker(settings.RABBITMQ_URL, name="test-down")
    async with sessionmaker() as session:
        session.add(
            OutboxMessage(
                id=row_id,
                routing_key=data_changed(703).type,
                body=encode(data_changed(703)),
                producer="test",
                attempts=0,
            )
        )
        await session.commit()
    try:
        await relay_once(broker, sessionmaker, grace=NO_GRACE)
        async with sessionmaker() as session:
            row = await session.get(OutboxMessage, row_id)
            assert row is not None and row.attempts == 1
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(OutboxMessage).where(OutboxMessage.id == row_id))
            await session.commit()


async def test_rows_that_keep_failing_do_not_hold_back_newer_ones(
    broker: Broker, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    # Four older rows that already failed a few times (a broker that refused them, say).
    stuck = [uuid.uuid4() for _ in range(4)]
    async with sessionmaker() as session:
        for row_id in stuck:
            session.add(OutboxMessage(id=row_id, routing_key="test.nobody.k0", body=b"{}", producer="test", attempts=3))
        await session.commit()
    try:
        [fresh] = await _commit_without_publishing(sessionmaker, 1)
        # A batch of one: the fresh row must come first although it is the newest.
        assert await relay_once(broker, sessionmaker, batch=1, grace=NO_GRACE) == 1
        assert await _drain(data_changed_queue) == Counter({str(fresh.id): 1})
    finally:
        async with sessionmaker() as session:
            await session.execute(delete(OutboxMessage).where(OutboxMessage.id.in_(stuck)))
            await session.commit()


async def test_a_relay_wakes_on_notify_for_a_row_whose_publish_already_failed(
    broker: Broker, settings: Settings, sessionmaker: Sessions, data_changed_queue: AbstractQueue
) -> None:
    stop = asyncio.Event()
    # Polling alone would take 60 s: only the NOTIFY can deliver the row within the deadline below.
    relay = asyncio.create_task(
        run_relay(broker, sessionmaker, interval_s=60, stop=stop, database_url=settings.DATABASE_URL)
    )
    try:
        # The relay's first pass (and LISTEN) happens at start; our row comes after it.
        await wait_for(_relay_listening(settings), timeout=10, what="the relay listening")
        msg = data_changed(740)
        async with sessionmaker() as session:
            session.add(OutboxMessage(id=msg.id, routing_key=msg.type, body=encode(msg), producer="gw", attempts=1))
            await notify_outbox(session)
            await session.commit()

        async def delivered() -> AbstractIncomingMessage | None:
            return await data_changed_queue.get(no_ack=True, fail=False)

        incoming = await wait_for(delivered, timeout=10, what="the row published after NOTIFY")
        assert incoming.message_id == str(msg.id)

        async def row_gone() -> bool:
            return await _rows(sessionmaker, [msg.id]) == 0

        await wait_for(row_gone, timeout=5, what="the relayed row deleted")
    finally:
        stop.set()
        await asyncio.wait_for(relay, timeout=10)


def _relay_listening(settings: Settings) -> Callable[[], Awaitable[bool]]:
    """A probe: some session of this database has issued LISTEN (the relay's listener)."""

    async def probe() -> bool:
        dsn = make_url(settings.DATABASE_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
            )
            return bool(listening)
        finally:
            await conn.close()

    return probe
