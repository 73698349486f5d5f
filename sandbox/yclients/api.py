"""The YClients endpoints themselves (YCLIENTS.md §2–4); the gate in front already checked the headers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from sandbox.yclients import envelopes, profiles, validation
from sandbox.yclients.lifecycle import GatewayNotifier
from sandbox.yclients.options import SandboxOptions
from sandbox.yclients.state import INSTALLED, Install, SandboxState, now_iso

MAX_SALONS_PAGE = 1000


def build_api_router(
    state: SandboxState,
    *,
    application_id: int,
    ui_url: str,
    options: SandboxOptions,
    notifier: GatewayNotifier,
) -> APIRouter:
    """Routes answering like api.yclients.com, backed by ``state``."""
    router = APIRouter()

    @router.get("/api/v1/company/{company_id}/")
    @router.get("/api/v1/company/{company_id}")
    async def company(company_id: str) -> Response:
        salon_id = _positive(company_id)
        found = profiles.salon(salon_id) if salon_id else None
        if found is None:
            return envelopes.error(404, envelopes.NOT_FOUND)
        return envelopes.ok(found.as_json())

    async def install(request: Request) -> tuple[Install | None, Response | None]:
        body = validation.parse_json_object(await request.body())
        if body is None:
            return None, envelopes.error(422, envelopes.INVALID_PARAMS, {"body": ["Ожидается JSON-объект"]})
        parsed, errors = validation.callback_body(body, options.http_webhook_hosts)
        if parsed is None:
            return None, envelopes.error(422, envelopes.INVALID_PARAMS, errors)
        if parsed.application_id != application_id:
            return None, envelopes.error(403, envelopes.NO_ACCESS)
        current = state.install(parsed.salon_id)
        if current is not None and current.status in INSTALLED:
            return None, envelopes.error(403, envelopes.ALREADY_INSTALLED)
        if current is None:
            current = Install(salon_id=parsed.salon_id, status="pending")
            state.installs[parsed.salon_id] = current
        current.api_key = parsed.api_key
        current.webhook_urls = parsed.webhook_urls
        current.channels = parsed.channels
        current.channel_available = dict.fromkeys(parsed.channels, True)
        current.move("active", "partner callback")
        return current, None

    @router.post("/marketplace/partner/callback")
    async def callback(request: Request) -> Response:
        _, problem = await install(request)
        return problem or envelopes.ok(None, status=201, meta=[])

    @router.post("/marketplace/partner/callback/redirect")
    async def callback_redirect(request: Request) -> Response:
        done, problem = await install(request)
        if problem is not None or done is None:
            return problem or envelopes.error(500, envelopes.SERVER_ERROR)
        target = f"{ui_url.rstrip('/')}/appstore/{done.salon_id}/applications/{application_id}"
        return RedirectResponse(target, status_code=301)

    @router.get("/marketplace/salon/{salon_id}/application/{app_id}")
    async def install_status(salon_id: str, app_id: str) -> Response:
        sid, problem = _salon_of_our_app(salon_id, app_id, application_id)
        if problem is not None:
            return problem
        current = state.install(sid)
        if current is None:
            return envelopes.error(404, envelopes.NOT_INSTALLED)
        return envelopes.ok(current.as_status_data(application_id))

    @router.post("/marketplace/salon/{salon_id}/application/{app_id}/uninstall")
    async def uninstall(salon_id: str, app_id: str, background: BackgroundTasks) -> Response:
        sid, problem = _salon_of_our_app(salon_id, app_id, application_id)
        if problem is not None:
            return problem
        current = state.install(sid)
        if current is None or current.status not in INSTALLED:
            return envelopes.error(404, envelopes.NOT_INSTALLED)
        current.move("uninstalled", "uninstalled by the partner")
        # The platform notifies the app after answering, as it does for a click in the YClients UI.
        background.add_task(notifier.send, "uninstall", sid)
        return envelopes.ok(None)

    @router.get("/marketplace/application/{app_id}/salons")
    async def salons(app_id: str, request: Request) -> Response:
        if _positive(app_id) != application_id:
            return envelopes.error(403, envelopes.NO_ACCESS)
        page = _positive(request.query_params.get("page", "1"))
        count = _positive(request.query_params.get("count", "100"))
        errors: validation.Errors = {}
        if page is None:
            errors["page"] = [validation.NOT_INT]
        if count is None or count > MAX_SALONS_PAGE:
            errors["count"] = [f"От 1 до {MAX_SALONS_PAGE}"]
        if page is None or count is None or errors:
            return envelopes.error(422, envelopes.INVALID_PARAMS, errors)
        installed = sorted((i for i in state.installs.values() if i.status in INSTALLED), key=lambda i: i.salon_id)
        chosen = installed[(page - 1) * count : page * count]
        data = [_salon_row(i) for i in chosen]
        return envelopes.ok(data, meta={"page": page, "count": count, "total_count": len(installed)})

    @router.post("/marketplace/partner/payment")
    async def payment(request: Request) -> Response:
        body = validation.parse_json_object(await request.body())
        parsed, errors = validation.payment_body(body or {})
        if parsed is None:
            return envelopes.error(422, envelopes.INVALID_PARAMS, errors)
        if parsed.application_id != application_id:
            return envelopes.error(403, envelopes.NO_ACCESS)
        current = state.install(parsed.salon_id)
        if current is None or current.status not in INSTALLED:
            return envelopes.error(404, envelopes.NOT_INSTALLED)
        payment_id = state.next_payment_id()
        record: dict[str, Any] = {
            "id": payment_id,
            "salon_id": parsed.salon_id,
            "payment_sum": parsed.payment_sum,
            "currency_iso": parsed.currency_iso,
            "payment_date": parsed.payment_date,
            "period_from": parsed.period_from,
            "period_to": parsed.period_to,
            "refunded": False,
            "created_at": now_iso(),
        }
        state.payments[payment_id] = record
        current.payments.append(record)
        if current.status == "freezed":
            current.move("active", f"payment {payment_id}")
        return envelopes.ok({"id": payment_id})

    @router.post("/marketplace/partner/payment/refund/{payment_id}")
    async def refund(payment_id: str) -> Response:
        pid = _positive(payment_id)
        record = state.payments.get(pid) if pid else None
        if record is None:
            return envelopes.error(404, envelopes.NOT_FOUND)
        record["refunded"] = True
        return envelopes.ok(None)

    @router.post("/marketplace/application/update_channel")
    async def update_channel(request: Request) -> Response:
        body = validation.parse_json_object(await request.body())
        parsed, errors = validation.channel_body(body or {})
        if parsed is None:
            return envelopes.error(422, envelopes.INVALID_PARAMS, errors)
        if parsed.application_id != application_id:
            return envelopes.error(403, envelopes.NO_ACCESS)
        current = state.install(parsed.salon_id)
        if current is None or current.status not in INSTALLED:
            return envelopes.error(404, envelopes.NOT_INSTALLED)
        current.channel_available[parsed.channel_slug] = parsed.is_available
        return envelopes.ok(None)

    return router


def _positive(text: str) -> int | None:
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        return None
    value = int(text)
    return value if 0 < value <= profiles.MAX_COMPANY_ID else None


def _salon_of_our_app(salon_id: str, app_id: str, application_id: int) -> tuple[int, JSONResponse | None]:
    sid = _positive(salon_id)
    if sid is None:
        return 0, envelopes.error(404, envelopes.NOT_FOUND)
    if _positive(app_id) != application_id:
        return sid, envelopes.error(403, envelopes.NO_ACCESS)
    return sid, None


def _salon_row(install: Install) -> dict[str, Any]:
    found = profiles.salon(install.salon_id)
    return {
        "salon_id": install.salon_id,
        "title": found.title if found else "",
        "status": install.status,
        "created_at": install.created_at,
    }
