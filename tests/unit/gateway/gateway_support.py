"""Helpers for the gateway tests: the app in-process on the session's broker and database, spies, rows."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from fastapi import FastAPI
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.app import create_app
from services.gateway.options import GatewayOptions
from shared.bus.topology import declare_exchange
from shared.config import Settings
from shared.db.models import Company, WhatsAppSession
from shared.messages import Message, decode, session_id_for
from tests.support.processes import free_port
from tests.support.wait import wait_for

# Salon ids unique across the test session (and unlikely to meet other suites' ids in the shared database).
_salon_ids = itertools.count(random.randint(10_000_000, 90_000_000) * 10)


def new_salon_id() -> int:
    """A salon id no other test uses."""
    return next(_salon_ids)


def closed_port() -> int:
    """A local port nothing listens on (connections are refused at once)."""
    return free_port()


def with_broker_down(settings: Settings) -> Settings:
    """The same settings with RabbitMQ pointing at a closed port."""
    return settings.model_copy(update={"RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}/"})


def with_database_down(settings: Settings) -> Settings:
    """The same settings with PostgreSQL pointing at a closed port."""
    return settings.model_copy(
        update={"DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nowhere"}
    )


async def is_ready(app: FastAPI) -> bool:
    """The app's broker is connected and its live-update hub consumes."""
    return bool(app.state.broker.is_connected and app.state.hub.is_consuming)


@asynccontextmanager
async def running_gateway(
    settings: Settings, options: GatewayOptions | None = None, *, wait_ready: bool = True
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The gateway app with its lifespan running, and an httpx client talking to it in-process."""
    app = create_app(settings, options)
    async with app.router.lifespan_context(app):
        if wait_ready:
            await wait_for(lambda: is_ready(app), timeout=20, what="gateway connected to the broker")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=15) as client:
            yield app, client


def token_from_location(location: str) -> str:
    """The onboarding token in a redirect's Location."""
    parts = urlsplit(location)
    assert parts.path == "/marketplace/onboarding", location
    return parse_qs(parts.query)["token"][0]


class Spy:
    """An exclusive queue bound to some routing keys: sees a copy of every matching message published."""

    def __init__(self, queue: AbstractQueue) -> None:
        self.queue = queue

    @classmethod
    async def bind(cls, channel: AbstractChannel, *routing_keys: str) -> Spy:
        """Declare the spy queue and bind it."""
        exchange = await declare_exchange(channel)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in routing_keys:
            await queue.bind(exchange, routing_key=key)
        return cls(queue)

    async def expect(self, match: Callable[[Message], bool], *, timeout: float = 10.0) -> Message:
        """The first message that matches (others are skipped), or AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            incoming = await self.queue.get(fail=False, no_ack=True)
            if incoming is None:
                await asyncio.sleep(0.05)
                continue
            msg = decode(incoming.body)
            if match(msg):
                return msg
        raise AssertionError(f"no matching message within {timeout}s")

    async def drain_until(self, marker: Message, *, timeout: float = 10.0) -> list[Message]:
        """Every message before `marker` (published after the request under test), to assert what was not sent."""
        seen: list[Message] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            incoming = await self.queue.get(fail=False, no_ack=True)
            if incoming is None:
                await asyncio.sleep(0.05)
                continue
            msg = decode(incoming.body)
            if msg.id == marker.id:
                return seen
            seen.append(msg)
        raise AssertionError(f"marker not seen within {timeout}s")


async def take_from_queue(
    channel: AbstractChannel, queue_name: str, match: Callable[[Message], bool], *, timeout: float = 10.0
) -> Message:
    """Find a message in a work queue and ack it; messages of other tests are put back untouched."""
    queue = await channel.declare_queue(queue_name, passive=True)
    others: list[AbstractIncomingMessage] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            incoming = await queue.get(fail=False, no_ack=False)
            if incoming is None:
                await asyncio.sleep(0.05)
                continue
            msg = decode(incoming.body)
            if match(msg):
                await incoming.ack()
                return msg
            others.append(incoming)
        raise AssertionError(f"no matching message in {queue_name} within {timeout}s")
    finally:
        for incoming in others:
            await incoming.nack(requeue=True)


async def put_company(
    sessionmaker: async_sessionmaker[AsyncSession],
    salon_id: int,
    *,
    title: str,
    status: str = "pending_whatsapp",
    **columns: Any,
) -> None:
    """Insert or update the companies row of a salon (as the registration worker would)."""
    values = {"yclients_id": salon_id, "title": title, "integration_status": status, **columns}
    async with sessionmaker() as session:
        await session.execute(
            insert(Company).values(**values).on_conflict_do_update(index_elements=["yclients_id"], set_=values)
        )
        await session.commit()


async def put_session(
    sessionmaker: async_sessionmaker[AsyncSession], salon_id: int, *, state: str, **columns: Any
) -> None:
    """Insert or update the whatsapp_sessions row of a salon (as the whatsapp worker would)."""
    values = {"session_id": session_id_for(salon_id), "salon_id": salon_id, "state": state, **columns}
    async with sessionmaker() as session:
        await session.execute(
            insert(WhatsAppSession).values(**values).on_conflict_do_update(index_elements=["session_id"], set_=values)
        )
        await session.commit()
