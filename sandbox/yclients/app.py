"""Assemble the sandbox: YClients API behind the gate, marketplace page, control API."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.yclients import envelopes
from sandbox.yclients.api import build_api_router
from sandbox.yclients.control import build_control_router
from sandbox.yclients.gate import YClientsGate, classify
from sandbox.yclients.lifecycle import GatewayNotifier
from sandbox.yclients.marketplace_page import build_marketplace_router
from sandbox.yclients.options import SandboxOptions
from sandbox.yclients.ratelimit import SlidingWindowLimiter
from sandbox.yclients.state import SandboxState
from shared.config import Settings


def create_app(
    settings: Settings,
    *,
    options: SandboxOptions | None = None,
    gateway_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """The sandbox app; ``gateway_transport`` and ``clock`` are for tests."""
    if settings.is_production:
        raise RuntimeError("the YClients sandbox must not run with ENVIRONMENT=production")
    opts = options or SandboxOptions.from_env()
    limits = (opts.rate_per_second, opts.rate_per_minute)
    state = SandboxState(limiter=SlidingWindowLimiter(*limits, clock=clock), default_limits=limits)
    notifier = GatewayNotifier(
        state,
        base_url=settings.BASE_URL,
        partner_token=settings.YCLIENTS_PARTNER_TOKEN,
        application_id=settings.YCLIENTS_APP_ID,
        transport=gateway_transport,
    )
    app = FastAPI(title="YClients sandbox", docs_url="/__sandbox/docs", openapi_url="/__sandbox/openapi.json")
    app.include_router(build_control_router(state, notifier))
    app.include_router(
        build_marketplace_router(
            state,
            partner_token=settings.YCLIENTS_PARTNER_TOKEN,
            gateway_url=settings.BASE_URL,
            application_id=settings.YCLIENTS_APP_ID,
        )
    )
    app.include_router(
        build_api_router(
            state,
            application_id=settings.YCLIENTS_APP_ID,
            ui_url=settings.YCLIENTS_UI_URL,
            options=opts,
            notifier=notifier,
        )
    )
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(YClientsGate, state=state, partner_token=settings.YCLIENTS_PARTNER_TOKEN, options=opts)
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else "error"
    if classify(request.url.path) is not None:
        return envelopes.error(status, envelopes.NOT_FOUND if status == 404 else str(detail))
    return JSONResponse({"detail": detail}, status_code=status)
