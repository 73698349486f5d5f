"""Async client for the YClients partner API (YCLIENTS.md §2–4): typed errors, one place for status mapping."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

log = logging.getLogger(__name__)

ACCEPT = "application/vnd.yclients.v2+json"
ALREADY_INSTALLED_MESSAGE = "Пользователь уже установил это приложение."
MAX_WEBHOOK_URLS = 10
MAX_SALONS_PAGE = 1000
_MAX_MESSAGE_CHARS = 300


class YClientsError(Exception):
    """A YClients call failed; ``retryable`` tells whether trying again may help."""

    retryable: bool = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message if self.status is None else f"HTTP {self.status}: {self.message}"


class YClientsTransientError(YClientsError):
    """429, 5xx, timeouts and network errors: retry later."""

    retryable = True


class YClientsPermanentError(YClientsError):
    """401, 400, 422, other 4xx: retrying will not help."""


class YClientsNotFound(YClientsPermanentError):
    """404: the salon, the install, or the resource does not exist."""


class YClientsAlreadyInstalled(YClientsError):
    """403 "already installed": confirm with the status endpoint, then treat as success."""


class RateLimiter(Protocol):
    """Waits until one more call to YClients is allowed, and learns when that call was done."""

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Entering waits for the call's turn; leaving, once it has been answered or failed, records it."""
        ...


class NoLimit:
    """A limiter that never waits."""

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Enter at once."""
        yield


@dataclass(frozen=True)
class CompanyProfile:
    """A YClients branch as ``GET /api/v1/company/{id}/`` describes it."""

    id: int
    title: str
    phone: str | None = None
    timezone: str | None = None
    city: str | None = None
    address: str | None = None


@dataclass(frozen=True)
class InstallStatus:
    """The install of our app on a salon: ``data.connection_status.status`` and the raw ``data``."""

    status: str
    raw: dict[str, Any] = field(default_factory=dict)


class YClientsClient:
    """Calls YClients with the partner token; every call waits for the limiter first."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        base_url: str,
        partner_token: SecretStr,
        application_id: int,
        limiter: RateLimiter | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        self._token = partner_token
        self._app_id = application_id
        self._limiter: RateLimiter = limiter or NoLimit()
        self._timeout = httpx.Timeout(timeout_s)

    def __repr__(self) -> str:
        return f"YClientsClient(base_url={self._base!r}, application_id={self._app_id})"

    async def get_company(self, salon_id: int) -> CompanyProfile:
        """The branch profile (title, phone, timezone, city, address)."""
        body = await self._call("GET", f"/api/v1/company/{int(salon_id)}/")
        data = _data(body)
        if not isinstance(data, dict):
            raise YClientsPermanentError("company response has no data object")
        return CompanyProfile(
            id=_int_or(data.get("id"), int(salon_id)),
            title=_str(data.get("title")) or "",
            phone=_str(data.get("phone")),
            timezone=_str(data.get("timezone_name")),
            city=_str(data.get("city")),
            address=_str(data.get("address")),
        )

    async def activate(
        self,
        salon_id: int,
        api_key: str,
        webhook_urls: Sequence[str],
        channels: Sequence[str] = ("whatsapp",),
    ) -> None:
        """Partner callback: install the app on the salon (201); raises the typed errors otherwise."""
        if not api_key:
            raise ValueError("api_key is empty")
        if len(webhook_urls) > MAX_WEBHOOK_URLS:
            raise ValueError(f"at most {MAX_WEBHOOK_URLS} webhook urls")
        payload = {
            "salon_id": int(salon_id),
            "application_id": self._app_id,
            "api_key": api_key,
            "webhook_urls": list(webhook_urls),
            "channels": list(channels),
        }
        await self._call("POST", "/marketplace/partner/callback", json=payload, secrets=(api_key,))

    async def get_install_status(self, salon_id: int) -> InstallStatus | None:
        """The install status of our app on the salon, or None when it was never installed (404)."""
        try:
            body = await self._call("GET", f"/marketplace/salon/{int(salon_id)}/application/{self._app_id}")
        except YClientsNotFound:
            return None
        data = _data(body)
        if not isinstance(data, dict):
            raise YClientsPermanentError("install status response has no data object")
        connection = data.get("connection_status")
        status = _str(connection.get("status")) if isinstance(connection, dict) else None
        return InstallStatus(status=status or _str(data.get("status")) or "unknown", raw=data)

    async def uninstall(self, salon_id: int) -> None:
        """Uninstall our app from the salon (YClients then sends the ``uninstall`` webhook)."""
        await self._call("POST", f"/marketplace/salon/{int(salon_id)}/application/{self._app_id}/uninstall")

    async def list_salons(self, page: int = 1, count: int = 100) -> list[dict[str, Any]]:
        """One page of the salons that installed our app."""
        if page < 1 or not 1 <= count <= MAX_SALONS_PAGE:
            raise ValueError(f"page must be >= 1 and count within 1..{MAX_SALONS_PAGE}")
        body = await self._call(
            "GET", f"/marketplace/application/{self._app_id}/salons", params={"page": page, "count": count}
        )
        data = _data(body)
        if not isinstance(data, list):
            raise YClientsPermanentError("salons response has no data list")
        return [item for item in data if isinstance(item, dict)]

    async def update_channel(self, salon_id: int, is_available: bool, channel_slug: str = "whatsapp") -> None:
        """Tell YClients whether the salon's channel can be used."""
        payload = {
            "salon_id": int(salon_id),
            "application_id": self._app_id,
            "channel_slug": channel_slug,
            "is_available": bool(is_available),
        }
        await self._call("POST", "/marketplace/application/update_channel", json=payload)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Mapping[str, Any] | None = None,
        params: Mapping[str, int | str] | None = None,
        secrets: Sequence[str] = (),
    ) -> Any:
        hidden = (self._token.get_secret_value(), *secrets)
        try:
            # The limiter learns when the answer came back: YClients counted the call before that.
            async with self._limiter.slot():
                started = time.monotonic()
                response = await self._http.request(
                    method,
                    self._base + path,
                    headers=self._headers(),
                    json=json,
                    params=params,
                    timeout=self._timeout,
                    follow_redirects=False,
                )
                elapsed_ms = (time.monotonic() - started) * 1000
        except httpx.TimeoutException as exc:
            log.warning("yclients %s %s timed out", method, path)
            raise YClientsTransientError(f"timeout ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            log.warning("yclients %s %s network error %s", method, path, type(exc).__name__)
            raise YClientsTransientError(f"network error ({type(exc).__name__})") from None
        log.info("yclients %s %s -> %s in %.0f ms", method, path, response.status_code, elapsed_ms)
        body = _json_or_none(response)
        if response.is_success:
            if isinstance(body, dict) and body.get("success") is False:
                raise YClientsPermanentError(_scrub(_message(body, response), hidden), status=response.status_code)
            return body
        raise error_for_response(response.status_code, body, reason=response.reason_phrase, secrets=hidden)

    def _headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._token.get_secret_value()}",
            "Accept": ACCEPT,
            "Content-Type": "application/json",
        }


def error_for_response(status: int, body: Any, *, reason: str = "", secrets: Sequence[str] = ()) -> YClientsError:
    """Map a non-2xx answer to the typed error (YCLIENTS.md §2), its message free of the given secrets."""
    message = _scrub(_message(body, None) or reason or "error", secrets)
    if status == 403:
        if "уже установил" in message.casefold():
            return YClientsAlreadyInstalled(message, status=status)
        return YClientsPermanentError(message, status=status)
    if status == 404:
        return YClientsNotFound(message, status=status)
    if status in (408, 429) or status >= 500:
        return YClientsTransientError(message, status=status)
    if status == 422:
        fields = _error_fields(body)
        if fields:
            message = f"{message} (fields: {_scrub(', '.join(fields), secrets)})"
    return YClientsPermanentError(message, status=status)


def _message(body: Any, response: httpx.Response | None) -> str:
    # ``meta.message`` first, then ``errors.message`` (both shapes are used by YClients).
    if isinstance(body, dict):
        meta, errors = body.get("meta"), body.get("errors")
        for holder in (meta, errors):
            if isinstance(holder, dict):
                text = _str(holder.get("message"))
                if text:
                    return text
    return response.reason_phrase if response is not None else ""


def _error_fields(body: Any) -> list[str]:
    meta = body.get("meta") if isinstance(body, dict) else None
    errors = meta.get("errors") if isinstance(meta, dict) else None
    return sorted(str(k) for k in errors) if isinstance(errors, dict) else []


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:_MAX_MESSAGE_CHARS]


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _data(body: Any) -> Any:
    # The v2 envelope wraps the payload in ``data``; tolerate a bare object too.
    if isinstance(body, dict) and "data" in body:
        return body["data"]
    if body is None:
        raise YClientsTransientError("response body is not JSON")
    return body


def _str(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str):
        text = str(value).strip()
        return text or None
    return None


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
