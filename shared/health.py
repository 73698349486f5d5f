"""Liveness, readiness and metrics endpoints, mounted by every service on its own port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus.broker import Broker

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]


async def database_ok(engine: AsyncEngine) -> bool:
    """True when PostgreSQL answers a trivial query within 3 s."""
    try:
        async with asyncio.timeout(3):
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        return True
    except Exception as exc:
        log.debug("database check failed", extra={"error": repr(exc)})
        return False


def probes_router(service: str, checks: dict[str, Check]) -> APIRouter:
    """`/healthz` (the process is alive), `/readyz` (every check passes) and `/metrics`."""
    router = APIRouter(tags=["probes"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the event loop answers."""
        return {"status": "ok", "service": service}

    @router.get("/readyz")
    async def readyz(response: Response) -> dict[str, object]:
        """Readiness: database, broker and consumers are all up."""
        names = list(checks)
        results = await asyncio.gather(*(checks[n]() for n in names), return_exceptions=True)
        status = {n: (r is True) for n, r in zip(names, results, strict=True)}
        ready = all(status.values())
        response.status_code = 200 if ready else 503
        return {"status": "ready" if ready else "not_ready", "service": service, "checks": status}

    @router.get("/metrics")
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def standard_checks(engine: AsyncEngine, broker: Broker) -> dict[str, Check]:
    """The database and broker checks every service has."""

    async def broker_ok() -> bool:
        return broker.is_connected

    async def db_ok() -> bool:
        return await database_ok(engine)

    return {"database": db_ok, "broker": broker_ok}


def probes_app(service: str, checks: dict[str, Check]) -> FastAPI:
    """A small app with only the probes (for workers)."""
    app = FastAPI(title=f"{service} probes", docs_url=None, redoc_url=None)
    app.include_router(probes_router(service, checks))
    return app
