"""The onboarding state: `GET /marketplace/api/state` (a snapshot) and `GET /marketplace/api/events` (live)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response

from services.gateway.auth import TOKEN_SECURITY, authorize, issued_at, token_key
from services.gateway.deps import HubDep, OptionsDep, SessionMakerDep, SettingsDep
from services.gateway.errors import ApiError
from services.gateway.livehub import HubClosed, TooManyStreams
from services.gateway.openapi import EVENT_STREAM_RESPONSES, json_errors
from services.gateway.snapshot import Snapshot, load_snapshot
from services.gateway.sse import EventStreamResponse
from shared.config import Settings
from shared.tokens import OnboardingClaims

log = logging.getLogger(__name__)
router = APIRouter(prefix="/marketplace/api", tags=["onboarding"])


async def read_snapshot(
    sessionmaker: async_sessionmaker[AsyncSession], claims: OnboardingClaims, settings: Settings, timeout_s: float
) -> Snapshot:
    """The snapshot of the token's salons, or a 503 ApiError when the database does not answer in time."""
    try:
        async with asyncio.timeout(timeout_s), sessionmaker() as session:
            return await load_snapshot(session, claims.salon_ids, issued_at=issued_at(claims, settings))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        log.warning("state unavailable", extra={"error": repr(exc)})
        raise ApiError(
            503,
            "unavailable",
            "Не удалось получить состояние подключения. Попробуйте через минуту.",
            {"Retry-After": "5"},
        ) from None


@router.get("/state", response_model=Snapshot, responses=json_errors(401, 503), dependencies=TOKEN_SECURITY)
async def onboarding_state(
    request: Request, settings: SettingsDep, options: OptionsDep, sessionmaker: SessionMakerDep
) -> Snapshot:
    """Everything the onboarding page shows, for each salon of the token."""
    _, claims = authorize(request, settings)
    return await read_snapshot(sessionmaker, claims, settings, options.snapshot_timeout_s)


@router.get(
    "/events",
    status_code=200,
    response_class=EventStreamResponse,
    responses=EVENT_STREAM_RESPONSES,
    dependencies=TOKEN_SECURITY,
)
async def live_events(
    request: Request, settings: SettingsDep, options: OptionsDep, sessionmaker: SessionMakerDep, hub: HubDep
) -> Response:
    """Server-sent events: a `snapshot` first, then one event per message type, heartbeats in between."""
    token, claims = authorize(request, settings)
    try:
        # Subscribe before reading the snapshot, so nothing that happens in between is missed.
        subscription = hub.subscribe(claims.salon_ids, key=token_key(token))
    except TooManyStreams:
        raise ApiError(
            429,
            "too_many_streams",
            "Страница подключения открыта в слишком многих вкладках. Закройте лишние и обновите эту.",
            {"Retry-After": "10"},
        ) from None
    except HubClosed:
        raise ApiError(503, "unavailable", "Сервис перезапускается. Страница переподключится сама.") from None
    try:
        first = await read_snapshot(sessionmaker, claims, settings, options.snapshot_timeout_s)
    except BaseException:
        subscription.close()
        raise

    async def reload() -> Snapshot | None:
        try:
            return await read_snapshot(sessionmaker, claims, settings, options.snapshot_timeout_s)
        except ApiError:
            return None

    return EventStreamResponse(
        subscription=subscription, first=first, reload=reload, options=options, expires_at=claims.expires_at
    )
