"""Error answers: JSON for API callers, a Russian HTML page for people; never a bare 500 for bad input."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from services.gateway.pages import Action, error_page
from services.gateway.publishing import Unavailable

log = logging.getLogger(__name__)

# Machine callers (the page's JS, YClients, probes) get JSON from these paths whatever they accept.
JSON_PREFIXES = (
    "/marketplace/api/",
    "/marketplace/activate",
    "/marketplace/health",
    "/webhook/",
    "/healthz",
    "/readyz",
)

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An API answer other than success: status, a stable code, and a Russian message for the page."""

    def __init__(self, status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers


def wants_html(request: Request) -> bool:
    """True for a person's browser on a page route; API paths always answer JSON."""
    if request.url.path.startswith(JSON_PREFIXES):
        return False
    return "text/html" in request.headers.get("accept", "")


def json_error(
    status_code: int, code: str, detail: Any, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    """The JSON error body every gateway route uses: `{error, detail, ...}`."""
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status_code, headers=headers)


def _yclients_action(request: Request) -> Action:
    return Action("Открыть YClients", request.app.state.settings.YCLIENTS_UI_URL)


def _page_for_status(request: Request, status_code: int, headers: Mapping[str, str] | None) -> Response:
    texts = {
        404: (
            "Страница не найдена",
            "Такой страницы нет. Чтобы подключить WhatsApp, откройте наше приложение "
            "в маркетплейсе YClients и нажмите «Подключить».",
        ),
        405: (
            "Эту страницу так не открыть",
            "Откройте ссылку из YClients заново — кнопкой «Подключить» в карточке приложения.",
        ),
        413: ("Слишком большой запрос", "Запрос больше допустимого размера. Вернитесь назад и попробуйте ещё раз."),
    }
    title, message = texts.get(
        status_code,
        ("Не получилось открыть страницу", "Попробуйте ещё раз или откройте приложение из YClients заново."),
    )
    response = error_page(request, status_code, title=title, message=message, actions=[_yclients_action(request)])
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _validation_message(errors: list[dict[str, Any]]) -> str:
    types = {str(e.get("type")) for e in errors}
    if "json_invalid" in types:
        return "Тело запроса — некорректный JSON."
    if any(tuple(e.get("loc", ())) == ("body",) for e in errors):
        return "Ожидается JSON-объект в теле запроса (Content-Type: application/json)."
    fields = sorted({str(e["loc"][-1]) for e in errors if e.get("loc")})
    return "Проверьте поля запроса: " + ", ".join(fields) + "." if fields else "Некорректный запрос."


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every failure into a clear 4xx/5xx answer."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return json_error(exc.status_code, exc.code, exc.message, exc.headers)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if wants_html(request):
            return _page_for_status(request, exc.status_code, exc.headers)
        code = ERROR_CODES.get(exc.status_code, "error")
        return json_error(exc.status_code, code, exc.detail, exc.headers)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # `input` can echo a large body (or a token) back; location, type and message are enough.
        errors = [{"loc": list(e.get("loc", ())), "type": e.get("type"), "msg": e.get("msg")} for e in exc.errors()]
        return json_error(422, "invalid_request", errors, message=_validation_message(errors))

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        message = "Сервис временно недоступен. Попробуйте ещё раз через минуту."
        if wants_html(request):
            return error_page(
                request, 503, title="Сервис временно недоступен", message=message, actions=[_yclients_action(request)]
            )
        return json_error(503, "unavailable", message, {"Retry-After": "30"})

    async def on_dependency_error(request: Request, exc: Exception) -> Response:
        # PostgreSQL (or another dependency) did not answer: asyncpg raises OSError for a refused connection.
        log.error("dependency unavailable", extra={"error": repr(exc), "path": request.url.path})
        return await on_unavailable(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        # Last resort: every expected failure has its own answer above.
        log.exception("unexpected error", extra={"path": request.url.path})
        if wants_html(request):
            return error_page(
                request,
                500,
                title="Что-то пошло не так",
                message="На нашей стороне произошла ошибка. Обновите страницу через минуту; если не поможет, "
                "откройте приложение из YClients заново.",
                actions=[_yclients_action(request)],
            )
        return json_error(500, "internal_error", "Внутренняя ошибка. Попробуйте ещё раз через минуту.")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Unavailable, on_unavailable)
    app.add_exception_handler(SQLAlchemyError, on_dependency_error)
    app.add_exception_handler(OSError, on_dependency_error)
    app.add_exception_handler(Exception, on_unexpected)
