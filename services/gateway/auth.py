"""The onboarding token on API calls: where it is read from, and which salons it may act on."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from fastapi import Request, Security
from fastapi.params import Depends
from fastapi.security import APIKeyQuery, HTTPBearer

from services.gateway.errors import ApiError
from shared.config import Settings
from shared.tokens import ExpiredToken, OnboardingClaims, TokenError, read_onboarding_token

EXPIRED_MESSAGE = "Ссылка устарела. Откройте приложение в YClients и нажмите «Подключить» ещё раз."
INVALID_MESSAGE = "Ссылка недействительна. Откройте приложение в YClients и нажмите «Подключить» ещё раз."

# For the OpenAPI document only (`authorize` reads the token itself, from either place or from the JSON body).
BEARER = HTTPBearer(
    auto_error=False, scheme_name="onboardingToken", description="The onboarding token (JWT, 1 h) of the install."
)
TOKEN_QUERY = APIKeyQuery(
    name="token",
    auto_error=False,
    scheme_name="onboardingTokenQuery",
    description="The same token as `?token=` (EventSource cannot send headers).",
)
TOKEN_SECURITY: list[Depends] = [Security(BEARER), Security(TOKEN_QUERY)]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def request_token(request: Request, body_token: str | None = None) -> str | None:
    """The onboarding token from the header, the query (`?token=`, for EventSource) or the JSON body (seed style)."""
    return bearer_token(request) or request.query_params.get("token") or body_token or None


def authorize(request: Request, settings: Settings, body_token: str | None = None) -> tuple[str, OnboardingClaims]:
    """The token and its claims, or a 401 ApiError saying what to do."""
    token = request_token(request, body_token)
    if not token:
        raise ApiError(401, "token_missing", INVALID_MESSAGE, {"WWW-Authenticate": "Bearer"})
    try:
        return token, read_onboarding_token(token, secret=settings.JWT_SECRET)
    except ExpiredToken:
        raise ApiError(401, "token_expired", EXPIRED_MESSAGE, {"WWW-Authenticate": "Bearer"}) from None
    except TokenError:
        raise ApiError(401, "token_invalid", INVALID_MESSAGE, {"WWW-Authenticate": "Bearer"}) from None


def pick_salon(claims: OnboardingClaims, salon_id: int | None) -> int:
    """The salon a call acts on: the one asked for, if the token covers it (403 otherwise), else the first."""
    if salon_id is None:
        return claims.salon_ids[0]
    if salon_id not in claims.salon_ids:
        raise ApiError(403, "forbidden_salon", "Эта ссылка не даёт доступа к указанному салону.")
    return salon_id


def token_key(token: str) -> str:
    """A stable key for per-token limits that does not keep the token itself in memory maps or metrics."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]


def issued_at(claims: OnboardingClaims, settings: Settings) -> datetime:
    """When the token was issued (its expiry minus the configured lifetime)."""
    return claims.expires_at - timedelta(seconds=settings.JWT_TTL_S)
