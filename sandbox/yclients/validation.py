"""Body validation of the partner endpoints, with YClients-style per-field errors (422 ``meta.errors``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

MAX_WEBHOOK_URLS = 10
MAX_URL_CHARS = 2048
MAX_API_KEY_CHARS = 255
CHANNELS = frozenset({"whatsapp", "sms"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

REQUIRED = "Обязательное поле"
NOT_INT = "Должно быть целым положительным числом"

Errors = dict[str, list[str]]


@dataclass(frozen=True)
class CallbackBody:
    """A valid partner-callback body."""

    salon_id: int
    application_id: int
    api_key: str
    webhook_urls: list[str]
    channels: list[str]


@dataclass(frozen=True)
class PaymentBody:
    """A valid payment body."""

    salon_id: int
    application_id: int
    payment_sum: float
    currency_iso: str
    payment_date: str
    period_from: str
    period_to: str


@dataclass(frozen=True)
class ChannelBody:
    """A valid update_channel body."""

    salon_id: int
    application_id: int
    channel_slug: str
    is_available: bool


def parse_json_object(raw: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None."""
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def callback_body(body: dict[str, Any], http_hosts: frozenset[str]) -> tuple[CallbackBody | None, Errors]:
    """Validate a partner-callback body."""
    errors: Errors = {}
    salon_id = _positive_int(body, "salon_id", errors)
    application_id = _positive_int(body, "application_id", errors)
    api_key = body.get("api_key")
    if not isinstance(api_key, str) or not api_key.strip():
        errors["api_key"] = ["Должно быть непустой строкой"]
    elif len(api_key) > MAX_API_KEY_CHARS:
        errors["api_key"] = [f"Не длиннее {MAX_API_KEY_CHARS} символов"]
    urls = _webhook_urls(body.get("webhook_urls", []), http_hosts, errors)
    channels = _channels(body.get("channels", []), errors)
    if errors or salon_id is None or application_id is None or not isinstance(api_key, str):
        return None, errors
    return CallbackBody(salon_id, application_id, api_key, urls, channels), errors


def payment_body(body: dict[str, Any]) -> tuple[PaymentBody | None, Errors]:
    """Validate a payment body (dates as ``YYYY-MM-DD HH:MM:SS``)."""
    errors: Errors = {}
    salon_id = _positive_int(body, "salon_id", errors)
    application_id = _positive_int(body, "application_id", errors)
    amount = body.get("payment_sum")
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount <= 0:
        errors["payment_sum"] = ["Должно быть положительным числом"]
    currency = body.get("currency_iso")
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha() or not currency.isascii():
        errors["currency_iso"] = ["Трёхбуквенный код валюты ISO 4217"]
    dates = {name: _date(body, name, errors) for name in ("payment_date", "period_from", "period_to")}
    start, end = dates["period_from"], dates["period_to"]
    if start is not None and end is not None and end < start:
        errors["period_to"] = ["Конец периода раньше начала"]
    if errors or salon_id is None or application_id is None:
        return None, errors
    assert isinstance(amount, int | float) and isinstance(currency, str)
    return (
        PaymentBody(
            salon_id,
            application_id,
            float(amount),
            currency.upper(),
            str(body["payment_date"]),
            str(body["period_from"]),
            str(body["period_to"]),
        ),
        errors,
    )


def channel_body(body: dict[str, Any]) -> tuple[ChannelBody | None, Errors]:
    """Validate an update_channel body."""
    errors: Errors = {}
    salon_id = _positive_int(body, "salon_id", errors)
    application_id = _positive_int(body, "application_id", errors)
    slug = body.get("channel_slug")
    if slug not in CHANNELS:
        errors["channel_slug"] = ["Допустимые значения: whatsapp, sms"]
    available = body.get("is_available")
    if not isinstance(available, bool):
        errors["is_available"] = ["Должно быть true или false"]
    if errors or salon_id is None or application_id is None:
        return None, errors
    return ChannelBody(salon_id, application_id, str(slug), bool(available)), errors


def _positive_int(body: dict[str, Any], name: str, errors: Errors) -> int | None:
    if name not in body:
        errors[name] = [REQUIRED]
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        errors[name] = [NOT_INT]
        return None
    return value


def _webhook_urls(value: Any, http_hosts: frozenset[str], errors: Errors) -> list[str]:
    if not isinstance(value, list):
        errors["webhook_urls"] = ["Должно быть массивом адресов"]
        return []
    if len(value) > MAX_WEBHOOK_URLS:
        errors["webhook_urls"] = [f"Не более {MAX_WEBHOOK_URLS} адресов"]
        return []
    problems = [f"{i}: {p}" for i, url in enumerate(value) if (p := _url_problem(url, http_hosts))]
    if problems:
        errors["webhook_urls"] = problems
    return [str(url) for url in value]


def _url_problem(url: Any, http_hosts: frozenset[str]) -> str | None:
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        return "Некорректный адрес"
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return "Некорректный адрес"
    if not host:
        return "Некорректный адрес"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http" and (host in LOOPBACK_HOSTS or host in http_hosts):
        return None
    return "Адрес должен начинаться с https://"


def _channels(value: Any, errors: Errors) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(c, str) and c in CHANNELS for c in value):
        errors["channels"] = ["Допустимые значения: whatsapp, sms"]
        return []
    return list(dict.fromkeys(value))


def _date(body: dict[str, Any], name: str, errors: Errors) -> datetime | None:
    value = body.get(name)
    if not isinstance(value, str):
        errors[name] = [REQUIRED if value is None else "Формат: YYYY-MM-DD HH:MM:SS"]
        return None
    try:
        return datetime.strptime(value, DATE_FORMAT)  # a wall-clock date, as YClients sends it
    except ValueError:
        errors[name] = ["Формат: YYYY-MM-DD HH:MM:SS"]
        return None
