"""The gateway application: routes, error handling, and the lifespan that connects in the background."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.gateway.errors import install_error_handlers
from services.gateway.livehub import LiveHub
from services.gateway.middleware import GatewayMiddleware
from services.gateway.openapi import install_openapi
from services.gateway.options import GatewayOptions
from services.gateway.pages import STATIC_DIR, STATIC_PREFIX, make_templates
from services.gateway.routes import health, install, live, onboarding, webhooks, whatsapp_api
from shared.bus.broker import Broker
from shared.bus.outbox import run_relay
from shared.bus.topology import declare_all
from shared.config import Settings
from shared.db.session import make_engine, make_sessionmaker

log = logging.getLogger(__name__)
SERVICE = "gateway"
# In matching order: the routes YClients calls at volume (the install redirect, the webhooks) first.
ROUTERS = (install, webhooks, onboarding, whatsapp_api, live, health)


async def declare_topology(broker: Broker, retry_delays_ms: list[int]) -> None:
    """Declare the work queues, so what the gateway publishes is routable even before any worker started."""
    channel = await broker.open_channel(publisher_confirms=False)
    try:
        await declare_all(channel, retry_delays_ms)
    finally:
        await channel.close()


async def connect_and_listen(broker: Broker, hub: LiveHub, retry_delays_ms: list[int], stop: asyncio.Event) -> None:
    """Connect to RabbitMQ (retrying forever), declare the topology, start the live-update consumer.

    The app answers requests meanwhile: publishes fall back to the outbox, `/readyz` says 503.
    """
    await broker.connect()
    delay = 0.5
    declared = False
    while not stop.is_set():
        try:
            if not declared:
                await declare_topology(broker, retry_delays_ms)
                declared = True
            await hub.start(broker)
            return
        except Exception as exc:
            log.warning("live updates not consuming yet, retrying", extra={"error": repr(exc), "retry_in_s": delay})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay + random.uniform(0, delay / 2))
            delay = min(delay * 2, 10.0)


def create_app(settings: Settings, options: GatewayOptions | None = None) -> FastAPI:
    """The gateway app; connections are made by its lifespan, never at import or creation."""
    options = options or GatewayOptions()
    broker = Broker(settings.RABBITMQ_URL, name=SERVICE, publish_timeout_s=settings.PUBLISH_TIMEOUT_S)
    hub = LiveHub(
        subscriber_queue_size=options.subscriber_queue_size,
        max_per_key=options.max_streams_per_token,
        queue_max_length=options.live_queue_max_length,
        message_ttl_ms=options.live_queue_message_ttl_ms,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.DATABASE_URL)
        sessionmaker = make_sessionmaker(engine)
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(
                connect_and_listen(broker, hub, settings.RETRY_DELAYS_MS, stop), name="gateway-connect"
            ),
            asyncio.create_task(
                run_relay(
                    broker,
                    sessionmaker,
                    interval_s=settings.OUTBOX_RELAY_INTERVAL_S,
                    stop=stop,
                    database_url=settings.DATABASE_URL,
                ),
                name="gateway-outbox-relay",
            ),
        ]
        log.info("gateway started", extra={"environment": settings.ENVIRONMENT})
        try:
            yield
        finally:
            stop.set()
            hub.close_streams()
            tasks[0].cancel()
            await asyncio.wait(tasks, timeout=5)
            await hub.stop()
            await broker.close()
            await engine.dispose()
            log.info("gateway stopped")

    app = FastAPI(
        title="YClients marketplace gateway",
        lifespan=lifespan,
        docs_url=None if settings.is_production else "/docs",
        redoc_url=None,
        openapi_url=None if settings.is_production else "/openapi.json",
        # No OpenTelemetry here: with it on, FastAPI asks the global providers on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.settings = settings
    app.state.options = options
    app.state.broker = broker
    app.state.hub = hub
    app.state.templates = make_templates()

    install_error_handlers(app)
    # The routers' routes are listed in the app itself rather than through include_router: FastAPI resolves an
    # included router on every request (matching twice, through per-inclusion contexts), a tenth of a
    # webhook's CPU, and these routers have no prefix, dependencies or overrides an inclusion would merge.
    # First in the list, so the two hot routes are matched before FastAPI's /openapi.json and /docs.
    app.router.routes[:0] = [route for module in ROUTERS for route in module.router.routes]
    app.include_router(health.probes(app))
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    install_openapi(app)

    # The size limit applies before anything reads the body.
    app.add_middleware(GatewayMiddleware, max_bytes=settings.MAX_BODY_BYTES)
    return app
