"""Replay of dead letters on the real broker: list without loss, dry run, filters, interruption, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

from shared.bus import topology as t
from shared.bus.broker import Broker
from shared.bus.errors import PermanentError
from shared.bus.replay import (
    H_REPLAY_COUNT,
    H_REPLAYED_AT,
    DeadMessage,
    DeadQueueMissing,
    list_dead,
    move_dead,
    selector,
)
from shared.bus.topology import WorkQueue
from shared.config import Settings
from shared.messages import EnrichmentRequested, Message, RegistrationRequested
from tests.integration.bus.bus_support import (
    RETRY_DELAYS_MS,
    Call,
    MakeQueue,
    Recorder,
    StartConsumer,
    is_empty,
    probe,
    publish,
    registration,
)
from tests.support.wait import wait_for

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Parked:
    """A work queue whose consumer parked three messages in `.dead`, and can be told to succeed from now on."""

    queue: WorkQueue
    recorder: Recorder
    messages: list[Message]
    failing: list[bool]

    @property
    def ids(self) -> list[str]:
        return [str(m.id) for m in self.messages]

    def heal(self) -> None:
        """From now on the handler succeeds."""
        self.failing[0] = False

    def handled_ok(self, msg: Message) -> list[Call]:
        return [c for c in self.recorder.succeeded if c.message_id == msg.id]


async def _dead_ids(broker: Broker, queue: WorkQueue) -> list[str | None]:
    return [d.message_id for d in await list_dead(broker, queue.name)]


@pytest.fixture
async def parked(broker: Broker, make_queue: MakeQueue, start_consumer: StartConsumer) -> Parked:
    """Salons 801 (registration), 802 (enrichment, its own routing key), 803 (registration), parked in that order."""
    queue = make_queue(keys=2)
    failing = [True]
    recorder = Recorder(lambda _: PermanentError("salon not found") if failing[0] else None)
    handlers = {RegistrationRequested: recorder.handle, EnrichmentRequested: recorder.handle}
    await start_consumer(queue, handlers)
    msgs: list[Message] = [
        registration(801),
        EnrichmentRequested(salon_id=802, data={"salon_id": 802}),
        registration(803),
    ]
    for parked_before, (msg, key) in enumerate(zip(msgs, (*queue.routing_keys, queue.routing_keys[0]), strict=True)):
        await publish(broker, msg, key)

        # One at a time, so the order in .dead is known.
        async def in_dead(expected: int = parked_before + 1) -> bool:
            return len(await list_dead(broker, queue.name)) == expected

        await wait_for(in_dead, timeout=10, what=f"{msg.salon_id} in .dead")
    return Parked(queue, recorder, msgs, failing)


async def test_list_shows_salon_type_reason_attempts_and_keeps_everything(broker: Broker, parked: Parked) -> None:
    items = await list_dead(broker, parked.queue.name)

    assert [d.message_id for d in items] == parked.ids
    assert [d.salon_id for d in items] == [801, 802, 803]
    assert [d.type for d in items] == [
        "registration.requested",
        "registration.enrichment_requested",
        "registration.requested",
    ]
    assert [d.routing_key for d in items] == [parked.queue.routing_keys[i] for i in (0, 1, 0)]
    assert all(d.attempts == 1 for d in items)
    assert all(d.reason == "permanent: PermanentError: salon not found" for d in items)
    assert all(d.replay_count == 0 for d in items)
    ages = [d.age_s() for d in items]
    assert all(a is not None and 0 <= a < 60 for a in ages)
    assert items[0].correlation_id == parked.messages[0].correlation_id

    # Each listing requeues: more listings than the work queues' delivery limit still lose and reorder nothing.
    for _ in range(t.DELIVERY_LIMIT + 2):
        assert await _dead_ids(broker, parked.queue) == parked.ids
    assert len(parked.recorder.calls) == 3


async def test_listing_a_queue_that_does_not_exist_says_so(broker: Broker) -> None:
    with pytest.raises(DeadQueueMissing, match=r"t_missing\.dead"):
        await list_dead(broker, "t_missing")
    # The broker closed only the reading channel; the publishing one is intact.
    assert broker.is_connected


async def test_a_dry_run_moves_nothing(broker: Broker, channel: AbstractChannel, parked: Parked) -> None:
    parked.heal()
    report = await move_dead(broker, parked.queue.name, select=selector(everything=True))

    assert report.dry_run
    assert [d.message_id for d in report.moved] == parked.ids
    assert report.summary() == "would move 3, kept 0 in .dead"
    assert await _dead_ids(broker, parked.queue) == parked.ids
    assert await is_empty(channel, parked.queue.name)
    assert parked.recorder.succeeded == []


async def test_move_by_salon_replays_only_that_salon_and_it_succeeds(broker: Broker, parked: Parked) -> None:
    parked.heal()
    report = await move_dead(broker, parked.queue.name, select=selector(salons=[802]), dry_run=False)

    assert [d.message_id for d in report.moved] == [parked.ids[1]]
    assert [d.message_id for d in report.kept] == [parked.ids[0], parked.ids[2]]
    assert report.failed == []
    enrich = parked.messages[1]
    await wait_for(probe(lambda: bool(parked.handled_ok(enrich))), timeout=10, what="the replayed message handled")
    [call] = parked.recorder.succeeded
    assert call.message_id == enrich.id
    assert call.attempt == 1
    assert call.headers[H_REPLAY_COUNT] == 1
    assert H_REPLAYED_AT in call.headers
    assert t.H_DEAD_REASON not in call.headers and t.H_LAST_ERROR not in call.headers
    assert await _dead_ids(broker, parked.queue) == [parked.ids[0], parked.ids[2]]

    report = await move_dead(
        broker, parked.queue.name, select=selector(types=["registration.requested"]), dry_run=False
    )
    assert [d.message_id for d in report.moved] == [parked.ids[0], parked.ids[2]]
    await wait_for(probe(lambda: len(parked.recorder.succeeded) == 3), timeout=10, what="all three handled")
    assert await _dead_ids(broker, parked.queue) == []


async def test_a_replayed_message_that_fails_again_is_parked_again_with_fresh_attempts(
    broker: Broker, parked: Parked
) -> None:
    first = parked.messages[0]
    report = await move_dead(broker, parked.queue.name, select=selector(salons=[801]), dry_run=False)
    assert len(report.moved) == 1
    await wait_for(probe(lambda: len(parked.recorder.calls_for(first.id)) == 2), timeout=10, what="the second try")

    async def back_in_dead() -> list[DeadMessage]:
        items = await list_dead(broker, parked.queue.name)
        return items if len(items) == 3 else []

    items = await wait_for(back_in_dead, timeout=10, what="the message back in .dead")
    # Where it lands relative to the requeued others depends on timing; what matters is that it is there.
    [again] = [d for d in items if d.message_id == str(first.id)]
    assert again.attempts == 1
    assert again.replay_count == 1
    assert parked.recorder.calls_for(first.id)[1].attempt == 1


async def test_limit_moves_at_most_n(broker: Broker, parked: Parked) -> None:
    parked.heal()
    report = await move_dead(broker, parked.queue.name, select=selector(everything=True), dry_run=False, limit=2)
    assert [d.message_id for d in report.moved] == parked.ids[:2]
    assert await _dead_ids(broker, parked.queue) == parked.ids[2:]


async def test_an_interrupted_move_loses_nothing(broker: Broker, parked: Parked) -> None:
    parked.heal()
    seen: list[DeadMessage] = []

    def select_then_crash(dead: DeadMessage) -> bool:
        seen.append(dead)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C while the second message was being moved
        return True

    with pytest.raises(KeyboardInterrupt):
        await move_dead(broker, parked.queue.name, select=select_then_crash, dry_run=False)

    first = parked.messages[0]
    await wait_for(probe(lambda: bool(parked.handled_ok(first))), timeout=10, what="the first message replayed")
    assert await _dead_ids(broker, parked.queue) == parked.ids[1:]


class ConnectionLostAfterFirst(Broker):
    """A real broker connection that goes away just before the second republication."""

    publishes = 0

    async def publish_raw(self, message: aio_pika.Message, *, routing_key: str, exchange: str = t.EXCHANGE) -> None:
        self.publishes += 1
        if self.publishes == 2:
            await self.connection.close()
        await super().publish_raw(message, routing_key=routing_key, exchange=exchange)


async def test_a_move_cut_off_by_a_lost_connection_loses_nothing(
    settings: Settings, broker: Broker, parked: Parked
) -> None:
    parked.heal()
    flaky = ConnectionLostAfterFirst(settings.RABBITMQ_URL, name="test-flaky", publish_timeout_s=3)
    await flaky.connect(attempts=3)

    report = await move_dead(flaky, parked.queue.name, select=selector(everything=True), dry_run=False)

    assert [d.message_id for d in report.moved] == parked.ids[:1]
    assert [d.message_id for d, _ in report.failed] == parked.ids[1:2]
    assert [d.message_id for d in report.kept] == parked.ids[2:]
    first = parked.messages[0]
    await wait_for(probe(lambda: bool(parked.handled_ok(first))), timeout=10, what="the first message replayed")
    # The broker put back what the lost connection held unacked.
    assert await _dead_ids(broker, parked.queue) == parked.ids[1:]


async def test_a_message_the_broker_cannot_route_stays_in_dead(
    broker: Broker, channel: AbstractChannel, parked: Parked
) -> None:
    parked.heal()
    work = await channel.declare_queue(parked.queue.name, passive=True)
    await work.unbind(t.EXCHANGE, routing_key=parked.queue.routing_keys[1])

    report = await move_dead(broker, parked.queue.name, select=selector(everything=True), dry_run=False)

    assert [d.message_id for d in report.moved] == [parked.ids[0], parked.ids[2]]
    assert [d.message_id for d, _ in report.failed] == [parked.ids[1]]
    assert "not confirmed" in report.failed[0][1]
    assert await _dead_ids(broker, parked.queue) == [parked.ids[1]]
    await wait_for(probe(lambda: len(parked.recorder.succeeded) == 2), timeout=10, what="the routable two handled")


async def test_a_message_parked_by_the_broker_delivery_limit_is_listed_and_replayed(
    broker: Broker, channel: AbstractChannel, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    await t.declare_work_queue(channel, queue, RETRY_DELAYS_MS)
    msg = registration(804)
    await publish(broker, msg, queue.routing_keys[0])
    # A poison message that kills its consumer before the ack, over and over: the broker parks it itself.
    work = await channel.declare_queue(queue.name, passive=True)
    for _ in range(t.DELIVERY_LIMIT + 1):
        incoming = await work.get(timeout=5)
        await incoming.nack(requeue=True)

    async def parked_by_broker() -> list[DeadMessage]:
        return await list_dead(broker, queue.name)

    [dead] = await wait_for(parked_by_broker, timeout=10, what="the broker to dead-letter it")
    assert dead.message_id == str(msg.id)
    assert dead.reason == f"dead-lettered by the broker: delivery_limit in {queue.name}"
    assert dead.routing_key == queue.routing_keys[0]
    assert dead.salon_id == 804
    assert dead.dead_at is not None

    recorder = Recorder()
    await start_consumer(queue, {RegistrationRequested: recorder.handle})
    report = await move_dead(broker, queue.name, select=selector(salons=[804]), dry_run=False)
    assert len(report.moved) == 1
    await wait_for(probe(lambda: bool(recorder.succeeded)), timeout=10, what="the replayed poison message")
    [call] = recorder.succeeded
    assert call.message_id == msg.id and call.attempt == 1
    assert "x-death" not in call.headers


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.bus.replay",
        *args,
        cwd=str(ROOT),
        env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_line_lists_and_moves(broker: Broker, test_env: dict[str, str], parked: Parked) -> None:
    parked.heal()
    name = parked.queue.name

    code, out, err = await _cli(test_env, "list", name, "--json")
    assert code == 0, err
    listed = json.loads(out)
    assert [(d["message_id"], d["salon_id"], d["attempts"]) for d in listed] == [
        (parked.ids[0], 801, 1),
        (parked.ids[1], 802, 1),
        (parked.ids[2], 803, 1),
    ]
    assert listed[1]["reason"] == "permanent: PermanentError: salon not found"

    code, out, err = await _cli(test_env, "move", name, "--salon", "803", "--no-dry-run")
    assert code == 0, err
    assert "moved 1, kept 2 in .dead" in out
    third = parked.messages[2]
    await wait_for(probe(lambda: bool(parked.handled_ok(third))), timeout=10, what="the message moved by the CLI")

    code, out, err = await _cli(test_env, "move", name)
    assert code == 2 and "--all" in err
    assert await _dead_ids(broker, parked.queue) == parked.ids[:2]
