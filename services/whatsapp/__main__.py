"""`python -m services.whatsapp` — the WhatsApp session worker."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from services.whatsapp import commands
from services.whatsapp.auth_store import PostgresAuthStore
from services.whatsapp.commands import record_command
from services.whatsapp.db import IO_SLOTS, RUNNER_SLOTS
from services.whatsapp.emulator import server as emulator_server
from services.whatsapp.emulator.engine import EmulatorEngine
from services.whatsapp.emulator.routes import emulator_router
from services.whatsapp.engines import build_engine
from services.whatsapp.notify import PgListener
from services.whatsapp.ownership import make_worker_id
from services.whatsapp.policy import Backoff, ConnectionPolicy
from services.whatsapp.pool import PoolConfig, SessionPool
from services.whatsapp.runner import RunnerDeps
from services.whatsapp.settings import WhatsAppSettings
from shared.bus.consumer import Delivery
from shared.bus.topology import WHATSAPP
from shared.db.session import make_engine, make_sessionmaker
from shared.db.uow import UnitOfWork
from shared.messages import Message, RequestLogout, RequestPairing, RequestPause
from shared.worker import WorkerContext, WorkerParts, worker_main

log = logging.getLogger(__name__)
NAME = "whatsapp"


def policy_from(wa: WhatsAppSettings) -> ConnectionPolicy:
    """The reconnect policy from settings."""
    return ConnectionPolicy(
        backoff=Backoff(
            base_s=wa.BACKOFF_BASE_S, factor=wa.BACKOFF_FACTOR, cap_s=wa.BACKOFF_CAP_S, jitter=wa.BACKOFF_JITTER
        ),
        max_per_minute=wa.MAX_CONNECTS_PER_MINUTE,
        stable_after_s=wa.STABLE_AFTER_S,
    )


async def setup(ctx: WorkerContext) -> WorkerParts:
    """Wire the engine, the session pool, the listener and the command handlers."""
    wa = WhatsAppSettings()
    worker_id = make_worker_id()
    io_slots = asyncio.Semaphore(IO_SLOTS)
    auth = PostgresAuthStore(ctx.sessionmaker, slots=io_slots)
    built = build_engine(
        ctx.settings.WHATSAPP_ENGINE,
        wa=wa,
        database_url=ctx.settings.DATABASE_URL,
        sessionmaker=ctx.sessionmaker,
        auth=auth,
        worker_id=worker_id,
        io_slots=io_slots,
    )
    # The lease loop gets connections of its own: thousands of busy sessions must never delay renewals.
    lease_engine = make_engine(ctx.settings.DATABASE_URL, pool_size=1)

    async def publish(uow: UnitOfWork) -> None:
        try:
            await ctx.publish_committed(uow)
        except Exception as exc:
            # Committed in the outbox: the relay publishes it when the broker is back.
            log.warning("events not confirmed yet; the outbox relay will publish them", extra={"error": repr(exc)})

    deps = RunnerDeps(
        worker_id=worker_id,
        engine=built.engine,
        auth=auth,
        policy=policy_from(wa),
        uow=ctx.uow,
        publish=publish,
        rng=random.Random(),
        clock=time.monotonic,
        slots=asyncio.Semaphore(RUNNER_SLOTS),
    )
    pool = SessionPool(
        deps,
        make_sessionmaker(lease_engine),
        PoolConfig(lease_s=wa.LEASE_S, check_s=wa.LEASE_CHECK_S, claim_batch=wa.CLAIM_BATCH),
    )
    listener = PgListener(ctx.settings.DATABASE_URL)
    listener.subscribe(commands.NOTIFY_CHANNEL, pool.on_session_notify)
    listener.on_ready(pool.on_listener_ready)
    if isinstance(built.engine, EmulatorEngine):
        listener.subscribe(emulator_server.NOTIFY_CHANNEL, built.engine.notify)
        listener.on_ready(built.engine.notify_all)

    async def on_command(msg: Message, _: Delivery) -> None:
        assert isinstance(msg, RequestPairing | RequestPause | RequestLogout)
        uow = ctx.uow()
        outcome = await record_command(msg, uow=uow, worker_id=worker_id, lease_s=wa.LEASE_S)
        await ctx.publish_committed(uow)
        if outcome.recorded and outcome.owner == worker_id:
            pool.adopt(outcome.session_id)

    log.info(
        "whatsapp worker set up",
        extra={"worker_id": worker_id, "engine": built.engine.name, "lease_s": wa.LEASE_S, "check_s": wa.LEASE_CHECK_S},
    )
    return WorkerParts(
        handlers={RequestPairing: on_command, RequestPause: on_command, RequestLogout: on_command},
        router=emulator_router(built.server) if built.server is not None else None,
        background=[listener.run, pool.run],
        on_stop=[pool.shutdown, lease_engine.dispose],
    )


def main() -> None:
    """Run the whatsapp worker until SIGTERM."""
    worker_main(NAME, WHATSAPP, lambda s: s.WHATSAPP_PORT, setup)


if __name__ == "__main__":
    main()
