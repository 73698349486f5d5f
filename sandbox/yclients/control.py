"""The control API for tests and people (DESIGN §10): calls log, faults, installs, webhooks, reset, limits."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sandbox.yclients.faults import FaultSpec
from sandbox.yclients.lifecycle import GatewayNotifier
from sandbox.yclients.state import SandboxState

_EVENT = re.compile(r"[a-z][a-z0-9_]{0,31}")
# What a lifecycle event does to the install on the platform side before it is announced.
_EVENT_STATUS = {"uninstall": "uninstalled", "freeze": "freezed"}


class RateLimitSpec(BaseModel):
    """The body of ``PUT /__sandbox/ratelimit`` (null = no limit for that window)."""

    model_config = ConfigDict(extra="forbid")

    per_second: int | None = Field(default=None, ge=1)
    per_minute: int | None = Field(default=None, ge=1)


def build_control_router(state: SandboxState, notifier: GatewayNotifier) -> APIRouter:
    """Routes under ``/__sandbox`` plus ``/healthz``."""
    router = APIRouter()

    @router.get("/healthz")
    @router.get("/readyz")
    async def healthz() -> dict[str, str]:
        """Liveness and readiness: the sandbox keeps everything in memory, so alive means ready."""
        return {"status": "ok"}

    @router.get("/__sandbox/calls")
    async def calls(path: str | None = None) -> list[dict[str, Any]]:
        return [c.as_json() for c in state.calls if path is None or c.path.startswith(path)]

    @router.delete("/__sandbox/calls")
    async def clear_calls() -> dict[str, int]:
        count = len(state.calls)
        state.calls.clear()
        return {"cleared": count}

    @router.post("/__sandbox/faults", status_code=201)
    async def add_fault(spec: FaultSpec) -> dict[str, Any]:
        return state.faults.add(spec).as_json()

    @router.get("/__sandbox/faults")
    async def faults() -> list[dict[str, Any]]:
        return [f.as_json() for f in state.faults.active()]

    @router.delete("/__sandbox/faults")
    async def clear_faults() -> dict[str, int]:
        return {"cleared": state.faults.clear()}

    @router.get("/__sandbox/installs")
    async def installs() -> list[dict[str, Any]]:
        return [i.as_json() for _, i in sorted(state.installs.items())]

    @router.get("/__sandbox/webhooks")
    async def webhooks() -> list[dict[str, Any]]:
        return list(state.webhooks)

    @router.post("/__sandbox/webhooks/{event}")
    async def send_webhook(event: str, body: dict[str, Any] = Body(...)) -> Response:
        if not _EVENT.fullmatch(event):
            raise HTTPException(422, "event must be a lowercase word")
        salon_id = body.get("salon_id")
        if isinstance(salon_id, bool) or not isinstance(salon_id, int) or salon_id <= 0:
            raise HTTPException(422, "salon_id must be a positive integer")
        current = state.install(salon_id)
        if current is not None and _changes(event, current.status):
            current.move(_EVENT_STATUS[event], f"{event} webhook")
        overrides = {k: v for k, v in body.items() if k != "salon_id"}
        delivery = await notifier.send(event, salon_id, overrides)
        if delivery.status is None:
            return JSONResponse({"gateway_status": None, "error": delivery.error}, status_code=502)
        if delivery.status < 200 or delivery.status in (204, 304):
            return Response(status_code=delivery.status)
        return JSONResponse(
            {"gateway_status": delivery.status, "gateway_body": delivery.body}, status_code=delivery.status
        )

    @router.post("/__sandbox/reset")
    async def reset() -> dict[str, bool]:
        state.reset()
        return {"reset": True}

    @router.get("/__sandbox/ratelimit")
    async def ratelimit() -> dict[str, int | None]:
        return {"per_second": state.limiter.per_second, "per_minute": state.limiter.per_minute}

    @router.put("/__sandbox/ratelimit")
    async def set_ratelimit(spec: RateLimitSpec) -> dict[str, int | None]:
        state.limiter.configure(spec.per_second, spec.per_minute)
        return {"per_second": state.limiter.per_second, "per_minute": state.limiter.per_minute}

    return router


def _changes(event: str, status: str) -> bool:
    if event == "uninstall":
        return status != "uninstalled"
    return event == "freeze" and status == "active"
