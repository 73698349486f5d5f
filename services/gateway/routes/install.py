"""`GET /auth/yclients/redirect`: YClients sends the admin's browser here after "Подключить" (YCLIENTS.md §1)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from services.gateway.direct import direct_route
from services.gateway.openapi import INSTALL_RESPONSES, install_parameters
from services.gateway.pages import Action, error_page
from services.gateway.publishing import Unavailable, sink_of
from services.gateway.userdata import storable_user
from shared.config import Settings
from shared.logging import log_context
from shared.messages import MarketplaceUser, RegistrationRequested, RegistrationRequestedData
from shared.tokens import (
    InvalidSalonId,
    InvalidSignature,
    InvalidUserData,
    issue_onboarding_token,
    parse_salon_ids,
    verify_user_data,
)

log = logging.getLogger(__name__)
router = APIRouter(tags=["install"])
ONBOARDING_PATH = "/marketplace/onboarding?token="
_REDIRECT_HEADERS = {"cache-control": "no-store", "referrer-policy": "no-referrer"}


def _back_to_yclients(settings: Settings) -> list[Action]:
    return [Action("Вернуться в YClients", settings.YCLIENTS_UI_URL)]


@direct_route(
    router,
    "/auth/yclients/redirect",
    methods=["GET"],
    status_code=302,
    response_class=RedirectResponse,
    responses=INSTALL_RESPONSES,
    openapi_extra={"parameters": install_parameters()},
)
async def install_redirect(request: Request) -> Response:
    """Verify the install redirect, publish `RegistrationRequested`, and send the admin to the onboarding page."""
    settings: Settings = request.app.state.settings
    try:
        salon_ids = parse_salon_ids(request.query_params.multi_items())
    except InvalidSalonId as exc:
        log.info("install redirect refused: salon id", extra={"reason": str(exc)})
        return error_page(
            request,
            400,
            title="Не удалось определить салон",
            message="В ссылке из YClients нет номера филиала или он указан неверно. Откройте наше приложение "
            "в маркетплейсе YClients и нажмите «Подключить» ещё раз.",
            actions=_back_to_yclients(settings),
        )

    user: MarketplaceUser | None = None
    user_data = request.query_params.get("user_data")
    if user_data is not None:
        try:
            user = storable_user(
                verify_user_data(user_data, request.query_params.get("user_data_sign"), settings.YCLIENTS_PARTNER_TOKEN)
            )
        except (InvalidSignature, InvalidUserData) as exc:
            # The reason is ours (no secret in it); the sign and the data themselves are never logged.
            log.warning("install redirect refused: user data", extra={"reason": str(exc), "salon_ids": salon_ids})
            return error_page(
                request,
                403,
                title="Ссылка не прошла проверку",
                message="Мы не смогли подтвердить, что ссылка пришла из YClients: подпись данных неверна или "
                "отсутствует. Откройте приложение в маркетплейсе YClients и нажмите «Подключить» ещё раз — "
                "не копируйте ссылку вручную.",
                actions=_back_to_yclients(settings),
            )

    msg = RegistrationRequested(salon_id=salon_ids[0], data=RegistrationRequestedData(salon_ids=salon_ids, user=user))
    with log_context(message_id=str(msg.id), correlation_id=msg.correlation_id, salon_id=salon_ids[0]):
        try:
            outcome = await sink_of(request).send(msg)
        except Unavailable:
            retry_url = request.url.path + "?" + request.url.query
            page = error_page(
                request,
                503,
                title="Сервис временно недоступен",
                message="Мы не смогли принять подключение прямо сейчас. Пожалуйста, попробуйте ещё раз через минуту.",
                actions=[Action("Попробовать ещё раз", retry_url), *_back_to_yclients(settings)],
                hint="Ваши данные в YClients не изменились — просто повторите попытку.",
            )
            page.headers["Retry-After"] = "60"
            return page
        # DEBUG: the registration worker logs every install it applies (salon ids), and a fallback to the outbox
        # is a warning of its own; at INFO this line was a few per cent of the redirect's CPU.
        log.debug("install redirect accepted", extra={"salon_ids": salon_ids, "outcome": outcome})

    token = issue_onboarding_token(
        salon_ids, secret=settings.JWT_SECRET, ttl_s=settings.JWT_TTL_S, user_id=user.id if user else None
    )
    # A JWT is base64url segments and dots: nothing in it needs escaping in a query string.
    return Response(status_code=302, headers={"location": ONBOARDING_PATH + token, **_REDIRECT_HEADERS})
