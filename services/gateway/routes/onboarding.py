"""`GET /marketplace/onboarding?token=`: the page the admin lands on after the install redirect."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.responses import Response

from services.gateway.auth import issued_at
from services.gateway.deps import OptionsDep, SessionMakerDep, SettingsDep
from services.gateway.openapi import ONBOARDING_RESPONSES, json_errors
from services.gateway.pages import PAGE_HEADERS, Action, error_page, templates_of
from services.gateway.snapshot import Snapshot, load_snapshot
from shared.tokens import ExpiredToken, TokenError, read_onboarding_token

log = logging.getLogger(__name__)
router = APIRouter(tags=["onboarding"])


@router.get(
    "/marketplace/onboarding", response_class=HTMLResponse, responses={**ONBOARDING_RESPONSES, **json_errors(422)}
)
async def onboarding_page(
    request: Request, settings: SettingsDep, options: OptionsDep, sessionmaker: SessionMakerDep, token: str = ""
) -> Response:
    """The onboarding page: every salon of the token, kept live by server-sent events."""
    back = [Action("Открыть YClients", settings.YCLIENTS_UI_URL)]
    try:
        claims = read_onboarding_token(token, secret=settings.JWT_SECRET)
    except ExpiredToken:
        return error_page(
            request,
            401,
            title="Ссылка устарела",
            message="Ссылка на подключение действует один час. Откройте наше приложение в маркетплейсе YClients "
            "и нажмите «Подключить» ещё раз — вы вернётесь сюда с новой ссылкой.",
            actions=back,
            hint="Если WhatsApp уже был подключён, повторно сканировать QR-код не придётся.",
        )
    except TokenError:
        return error_page(
            request,
            401,
            title="Ссылка недействительна",
            message="Эта ссылка не подходит для подключения. Откройте наше приложение в маркетплейсе YClients "
            "и нажмите «Подключить» — не копируйте ссылку вручную.",
            actions=back,
        )

    snapshot: Snapshot | None = None
    try:
        async with asyncio.timeout(options.snapshot_timeout_s), sessionmaker() as session:
            snapshot = await load_snapshot(session, claims.salon_ids, issued_at=issued_at(claims, settings))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        # The page still opens; its script fetches the state again until the database answers.
        log.warning("onboarding page rendered without state", extra={"error": repr(exc)})

    salons = (
        [s.model_dump(mode="json") for s in snapshot.salons]
        if snapshot is not None
        else [{"salon_id": sid, "title": None, "registered": False} for sid in claims.salon_ids]
    )
    return templates_of(request).TemplateResponse(
        request,
        "onboarding.html",
        {
            "token": token,
            "salons": salons,
            "snapshot": snapshot.model_dump(mode="json") if snapshot is not None else None,
            "yclients_url": settings.YCLIENTS_UI_URL,
            "redirect_after_s": options.redirect_after_activation_s,
            "expires_at": claims.expires_at.isoformat(),
        },
        headers=PAGE_HEADERS,
    )
