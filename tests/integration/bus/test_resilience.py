"""No loss when a consumer dies before its ack, and consuming resumes after the broker drops the connection."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.bus.broker import Broker
from shared.bus.errors import PublishError
from shared.config import Settings
from shared.messages import RegistrationRequested
from tests.integration.bus.bus_support import MakeQueue, Recorder, StartConsumer, probe, publish, registration
from tests.support.infra import Infra
from tests.support.wait import wait_for

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


async def _line(proc: asyncio.subprocess.Process, timeout: float = 20) -> str:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), timeout=timeout)
    if not raw:
        await proc.wait()
        raise AssertionError(f"blocking consumer exited with {proc.returncode}")
    return raw.decode().strip()


async def test_a_consumer_killed_before_its_ack_loses_nothing(
    settings: Settings, broker: Broker, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    queue = make_queue()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "blocking_consumer.py"),
        settings.RABBITMQ_URL,
        queue.name,
        queue.routing_keys[0],
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert await _line(proc) == "ready"
        msg = registration(601)
        await publish(broker, msg, queue.routing_keys[0])
        assert await _line(proc) == f"received {msg.id}"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    recorder = Recorder()
    await start_consumer(queue, {RegistrationRequested: recorder.handle})
    await wait_for(probe(lambda: bool(recorder.succeeded)), timeout=10, what="the redelivery")

    [call] = recorder.calls
    assert call.message_id == msg.id
    assert call.redelivered
    assert call.attempt == 1  # a crash is not a handler failure: the attempt counter is untouched
    assert call.headers.get("x-delivery-count") == 1


@pytest.fixture
async def reconnecting_broker(settings: Settings) -> AsyncIterator[Broker]:
    """A broker that retries its connection every 0.3 s instead of aio-pika's default 5 s."""
    b = Broker(settings.RABBITMQ_URL + "?reconnect_interval=0.3", name="test", publish_timeout_s=3)
    await asyncio.wait_for(b.connect(attempts=3), timeout=30)
    yield b
    await b.close()


async def _close_connections_of_this_session(vhost: str) -> None:
    # Only this test session's vhost: other engineers' tests share the broker.
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "test", stdout=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(proc.wait(), timeout=30) == 0


async def test_consuming_resumes_after_the_broker_closes_the_connection(
    infra: Infra, reconnecting_broker: Broker, make_queue: MakeQueue, start_consumer: StartConsumer
) -> None:
    broker = reconnecting_broker
    queue = make_queue()
    recorder = Recorder()
    consumer = await start_consumer(queue, {RegistrationRequested: recorder.handle}, on=broker)
    reconnects: list[object] = []
    broker.connection.reconnect_callbacks.add(lambda *args: reconnects.append(args))

    before = registration(611)
    await publish(broker, before, queue.routing_keys[0])
    await wait_for(probe(lambda: len(recorder.succeeded) == 1), timeout=10, what="the message before")

    await _close_connections_of_this_session(infra.vhost)
    await wait_for(probe(lambda: bool(reconnects)), timeout=20, what="the reconnect")
    await wait_for(probe(lambda: consumer.is_consuming and broker.is_connected), timeout=20, what="consuming again")

    after = registration(612)

    async def _published() -> bool:
        # The caller resends what failed while the connection was down (aio-pika does not).
        try:
            await publish(broker, after, queue.routing_keys[0])
        except PublishError:
            return False
        return True

    await wait_for(_published, timeout=20, what="a publish after the reconnect")
    await wait_for(probe(lambda: len(recorder.succeeded) == 2), timeout=20, what="the message after")
    assert [c.message_id for c in recorder.succeeded] == [before.id, after.id]
    assert consumer.is_consuming
