"""The skeleton of a worker process: settings, logging, database, broker, consumer, relay, probes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.bus.batching import BatchHandler, BatchPolicy
from shared.bus.broker import Broker
from shared.bus.consumer import Consumer, GiveUpHook, Handler
from shared.bus.outbox import PublishedRows, publish_committed, run_relay
from shared.bus.topology import WorkQueue, declare_all
from shared.config import Settings
from shared.db.session import make_engine, make_sessionmaker
from shared.db.uow import UnitOfWork
from shared.health import Check, probes_app, standard_checks
from shared.logging import setup_logging
from shared.messages import Message
from shared.ratelimit import PostgresRateLimiter
from shared.runtime import http_server, run_until_signalled, serve_until
from shared.yclients import YClientsClient

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """App-lifetime objects a worker's handlers are built from."""

    name: str
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    broker: Broker
    http: httpx.AsyncClient
    published: PublishedRows

    def uow(self) -> UnitOfWork:
        """A fresh unit of work whose emitted messages are produced by this worker."""
        return UnitOfWork(self.sessionmaker, producer=self.name)

    def yclients(self) -> YClientsClient:
        """A YClients client whose calls share the platform's rate limit with every other process."""
        return YClientsClient(
            self.http,
            base_url=self.settings.YCLIENTS_API_URL,
            partner_token=self.settings.YCLIENTS_PARTNER_TOKEN,
            application_id=self.settings.YCLIENTS_APP_ID,
            limiter=PostgresRateLimiter.for_yclients(self.engine, self.settings),
            timeout_s=self.settings.YCLIENTS_TIMEOUT_S,
        )

    async def publish_committed(self, uow: UnitOfWork) -> None:
        """Publish what `uow` committed and clear it from the outbox (in batches)."""
        await publish_committed(uow, self.broker, self.sessionmaker, published=self.published)


@dataclass
class ConsumerSpec:
    """One more queue a worker consumes, with its own handlers and prefetch."""

    queue: WorkQueue
    handlers: Mapping[type[Message], Handler]
    prefetch: int
    on_give_up: GiveUpHook | None = None
    batch_handlers: Mapping[type[Message], BatchHandler] = field(default_factory=dict)


@dataclass
class WorkerParts:
    """What a service plugs into the skeleton."""

    handlers: Mapping[type[Message], Handler]
    on_give_up: GiveUpHook | None = None
    # Types also applied in batches when several wait at once (each keeps its one-message handler).
    batch_handlers: Mapping[type[Message], BatchHandler] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)
    router: APIRouter | None = None
    background: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = field(default_factory=list)
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    queue: WorkQueue | None = None
    extra_consumers: list[ConsumerSpec] = field(default_factory=list)


Setup = Callable[[WorkerContext], Awaitable[WorkerParts]]


async def run_worker(
    name: str, queue: WorkQueue, port: int, setup: Setup, settings: Settings, stop: asyncio.Event
) -> None:
    """Serve probes at once, connect (retrying), consume until `stop`, then drain and close."""
    engine = make_engine(settings.DATABASE_URL)
    broker = Broker(settings.RABBITMQ_URL, name=name, publish_timeout_s=settings.PUBLISH_TIMEOUT_S)
    http = httpx.AsyncClient(follow_redirects=False)
    sessionmaker = make_sessionmaker(engine)
    ctx = WorkerContext(name, settings, engine, sessionmaker, broker, http, PublishedRows(sessionmaker))
    consumers: list[Consumer] = []

    async def consumer_ok() -> bool:
        return bool(consumers) and all(c.is_consuming for c in consumers)

    checks: dict[str, Check] = {**standard_checks(engine, broker), "consumer": consumer_ok}
    parts_holder: list[WorkerParts] = []
    app = probes_app(name, checks)
    server = http_server(app, host=settings.BIND_HOST, port=port)
    server_task = asyncio.create_task(serve_until(server, stop))
    tasks: list[asyncio.Task[None]] = []
    try:
        connect = asyncio.create_task(broker.connect())
        await asyncio.wait({connect, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            connect.cancel()
            return
        # Every work queue exists before anything is published, whichever service started first, so a message
        # a worker must receive is never unroutable (DESIGN §3: declared idempotently by every service).
        channel = await broker.open_channel()
        await declare_all(channel, settings.RETRY_DELAYS_MS)
        await channel.close()
        parts = await setup(ctx)
        parts_holder.append(parts)
        checks.update(parts.checks)
        if parts.router is not None:
            app.include_router(parts.router)
        prefetch = settings.batch_prefetch if parts.batch_handlers else settings.PREFETCH
        specs = [ConsumerSpec(parts.queue or queue, parts.handlers, prefetch, parts.on_give_up, parts.batch_handlers)]
        for spec in [*specs, *parts.extra_consumers]:
            consumer = Consumer(
                broker,
                spec.queue,
                spec.handlers,
                retry_delays_ms=settings.RETRY_DELAYS_MS,
                prefetch=spec.prefetch,
                on_give_up=spec.on_give_up,
                batch_handlers=spec.batch_handlers,
                batch_policy=BatchPolicy(settings.BATCH_MAX_SIZE, settings.BATCH_CONCURRENCY),
            )
            await consumer.start()
            consumers.append(consumer)
        tasks.append(
            asyncio.create_task(
                run_relay(
                    broker,
                    ctx.sessionmaker,
                    interval_s=settings.OUTBOX_RELAY_INTERVAL_S,
                    stop=stop,
                    database_url=settings.DATABASE_URL,
                )
            )
        )
        tasks.append(asyncio.create_task(ctx.published.run(stop)))
        tasks.extend(asyncio.create_task(bg(stop)) for bg in parts.background)
        log.info("worker started", extra={"queue": queue.name, "port": port})
        await stop.wait()
        log.info("worker stopping")
    finally:
        for c in consumers:
            await c.stop()
        for parts in parts_holder:
            for hook in parts.on_stop:
                await hook()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        stop.set()
        await server_task
        await broker.close()
        await http.aclose()
        await engine.dispose()
        log.info("worker stopped")


def worker_main(name: str, queue: WorkQueue, port_of: Callable[[Settings], int], setup: Setup) -> None:
    """Entry point of `python -m services.<name>`."""
    settings = Settings(SERVICE_NAME=name)
    setup_logging(name, level=settings.LOG_LEVEL, secrets=settings.secret_values())
    run_until_signalled(lambda stop: run_worker(name, queue, port_of(settings), setup, settings, stop))
