"""YClients v2 response envelopes and the platform's error messages."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

ACCEPT_V2 = "application/vnd.yclients.v2+json"

UNAUTHORIZED = "Необходима авторизация"
BAD_ACCEPT = f"Неверный заголовок Accept: ожидается {ACCEPT_V2}"
BAD_CONTENT_TYPE = "Неверный заголовок Content-Type: ожидается application/json"
ALREADY_INSTALLED = "Пользователь уже установил это приложение."
NO_ACCESS = "Нет доступа к приложению"
AGGREGATOR_NOT_FOUND = "Агрегатор не найден"
NOT_FOUND = "Не найдено"
NOT_INSTALLED = "Приложение не установлено в филиале"
INVALID_PARAMS = "Переданы некорректные параметры"
TOO_MANY_REQUESTS = "Превышен лимит запросов: не более 5 в секунду и 200 в минуту"
SERVER_ERROR = "Внутренняя ошибка сервера"
GATEWAY_TIMEOUT = "Превышено время ожидания ответа"
BODY_TOO_LARGE = "Слишком большой запрос"


def ok(data: Any, *, status: int = 200, meta: Any = None) -> JSONResponse:
    """A success envelope ``{"success": true, "data": ..., "meta": ...}``."""
    return JSONResponse({"success": True, "data": data, "meta": {} if meta is None else meta}, status_code=status)


def error(status: int, message: str, errors: dict[str, list[str]] | None = None) -> JSONResponse:
    """An error envelope ``{"success": false, "data": null, "meta": {"message", "errors"?}}``."""
    meta: dict[str, Any] = {"message": message}
    if errors is not None:
        meta["errors"] = errors
    return JSONResponse({"success": False, "data": None, "meta": meta}, status_code=status)


def unauthorized() -> JSONResponse:
    """401 in the mixed shape some YClients endpoints use (``errors`` next to ``meta``)."""
    return JSONResponse(
        {
            "success": False,
            "data": None,
            "errors": {"code": 401, "message": UNAUTHORIZED},
            "meta": {"message": UNAUTHORIZED},
        },
        status_code=401,
    )
