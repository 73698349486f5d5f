"""Health: the seed-compatible `GET /marketplace/health`, and `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.gateway.deps import BrokerDep, SettingsDep
from shared.bus.topology import ACTIVATION, REGISTRATION, WHATSAPP
from shared.health import Check, database_ok, probes_router
from shared.messages import utcnow

router = APIRouter(tags=["health"])


class HealthEnvironment(BaseModel):
    """Whether each piece of configuration is present (never the values)."""

    partner_token: bool
    app_id: bool
    jwt_secret: bool
    base_url: bool


class HealthDependencies(BaseModel):
    """Whether the gateway reaches PostgreSQL and RabbitMQ."""

    database: bool
    broker: bool


class HealthWorkers(BaseModel):
    """Whether each work queue has at least one consumer."""

    registration: bool
    whatsapp: bool
    activation: bool


class HealthReport(BaseModel):
    """The seed's health shape."""

    status: Literal["ok", "degraded"]
    service: str
    timestamp: datetime
    environment: HealthEnvironment
    dependencies: HealthDependencies
    workers: HealthWorkers


@router.get("/marketplace/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def marketplace_health(request: Request, settings: SettingsDep, broker: BrokerDep) -> JSONResponse:
    """Configuration present, database and broker reachable, every worker consuming: 200 when all hold, else 503."""
    environment = HealthEnvironment(
        partner_token=bool(settings.YCLIENTS_PARTNER_TOKEN.get_secret_value()),
        app_id=settings.YCLIENTS_APP_ID > 0,
        jwt_secret=bool(settings.JWT_SECRET.get_secret_value()),
        base_url=bool(settings.BASE_URL),
    )
    queues = (REGISTRATION, WHATSAPP, ACTIVATION)
    database, *consumers = await asyncio.gather(
        database_ok(request.app.state.engine), *(broker.queue_consumers(q.name) for q in queues)
    )
    registration, whatsapp, activation = ((count or 0) >= 1 for count in consumers)
    report = HealthReport(
        status="ok",
        service="gateway",
        timestamp=utcnow(),
        environment=environment,
        dependencies=HealthDependencies(database=bool(database), broker=broker.is_connected),
        workers=HealthWorkers(registration=registration, whatsapp=whatsapp, activation=activation),
    )
    parts = (report.environment, report.dependencies, report.workers)
    healthy = all(value for part in parts for value in part.model_dump().values())
    report = report.model_copy(update={"status": "ok" if healthy else "degraded"})
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if healthy else 503)


def probes(app: FastAPI) -> APIRouter:
    """`/healthz`, `/readyz` (database, broker, live-update consumer) and `/metrics`."""

    async def database() -> bool:
        return await database_ok(app.state.engine)

    async def broker() -> bool:
        return bool(app.state.broker.is_connected)

    async def live_hub() -> bool:
        return bool(app.state.hub.is_consuming)

    checks: dict[str, Check] = {"database": database, "broker": broker, "live_hub": live_hub}
    return probes_router("gateway", checks)
