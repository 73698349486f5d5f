"""The gateway's OpenAPI document tells the truth: each route's real statuses, media types, bodies and headers.

Schemathesis fuzzes the gateway against this document, so every answer a route can give (pages as text/html,
the install redirect as 302, live updates as text/event-stream, errors as `{error, detail}`) is declared here.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from services.gateway.snapshot import Snapshot
from shared.bus.topology import LIVE_UPDATE_KEYS
from shared.tokens import MAX_SALON_ID, MAX_SALON_IDS

Responses = dict[int | str, dict[str, Any]]


class ValidationIssue(BaseModel):
    """One problem with a request field (never the rejected value itself)."""

    loc: list[str | int]
    type: str | None
    msg: str | None


class ErrorBody(BaseModel):
    """Every JSON error: a stable code, a Russian explanation (a list of field problems for 422 validation)."""

    error: str
    detail: str | list[ValidationIssue]
    message: str | None = None


class Accepted(BaseModel):
    """A webhook is safe (published with confirm, or kept in the outbox) — or was a duplicate of one that is."""

    success: Literal[True]
    status: Literal["accepted", "duplicate"]
    message_id: str


class ActivationAccepted(BaseModel):
    """`activation.requested` is on its way for these salons."""

    success: Literal[True]
    status: Literal["activation_requested"]
    salon_ids: list[int]


_WHY = {
    400: "The body could not be read as JSON text (e.g. it is not UTF-8).",
    401: "No onboarding token, or it is invalid or expired (`WWW-Authenticate: Bearer`).",
    403: "Not allowed: the token does not cover that salon, or the webhook is not ours.",
    404: "No such resource.",
    413: "The body is over the size limit.",
    422: "The body or a parameter is malformed (the fields are named).",
    429: "Too many open event streams for this token (`Retry-After`).",
    503: "A dependency is unavailable; try again later (`Retry-After`).",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}}
TEXT_SCHEMA = {"type": "string"}
_REF = "#/components/schemas/{model}"


def json_errors(*codes: int) -> Responses:
    """JSON error answers (`ErrorBody`) for the given statuses, whatever the route's own media type."""
    responses: Responses = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _WHY[code],
            "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
        }
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        if code == 401:
            entry["headers"] = _WWW_AUTHENTICATE
        responses[code] = entry
    return responses


def html_pages(**descriptions: str) -> Responses:
    """Russian HTML pages for the given statuses (keyword `s400="..."` → 400)."""
    return {
        int(key.removeprefix("s")): {"description": text, "content": {"text/html": {"schema": TEXT_SCHEMA}}}
        for key, text in descriptions.items()
    }


def install_parameters() -> list[dict[str, Any]]:
    """The install redirect's query (read raw by the route, so a bad salon id gets a page, not a JSON 422)."""
    salon_id = {"type": "integer", "minimum": 1, "maximum": MAX_SALON_ID}
    return [
        {"name": "salon_id", "in": "query", "required": False, "schema": salon_id, "description": "One salon."},
        {
            "name": "salon_ids[]",
            "in": "query",
            "required": False,
            "schema": {"type": "array", "items": salon_id, "maxItems": MAX_SALON_IDS},
            "style": "form",
            "explode": True,
            "description": "Several salons of one network (instead of `salon_id`).",
        },
        {
            "name": "user_data",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "Base64 JSON of the YClients user who clicked «Подключить».",
        },
        {
            "name": "user_data_sign",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "Hex HMAC-SHA256 of the decoded `user_data` bytes, keyed with the partner token.",
        },
    ]


INSTALL_RESPONSES: Responses = {
    302: {
        "description": "Accepted: to the onboarding page with a one-hour token.",
        "headers": {"Location": {"required": True, "schema": {"type": "string"}, "description": "The page URL."}},
    },
    **html_pages(
        s400="No salon id, or a malformed one.",
        s403="`user_data` is signed wrongly or the signature is missing.",
        s503="Neither the broker nor the database took the request (`Retry-After`).",
    ),
}
ONBOARDING_RESPONSES: Responses = html_pages(s401="The token is missing, invalid or expired: what to do next.")


def _event(name: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """One kind of server-sent event: its `event` field and the JSON its `data` carries."""
    return {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": name,
            "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
            "retry": {"type": "integer"},
        },
    }


# Before OpenAPI 3.2 (`itemSchema`), the `schema` of a text/event-stream describes each event.
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "oneOf": [
        _event({"const": "snapshot"}, {"$ref": _REF.format(model="Snapshot")}),
        _event(
            {"const": "expired"},
            {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
        ),
        _event(
            {"enum": list(LIVE_UPDATE_KEYS)},
            {
                "type": "object",
                "required": ["salon_id", "message_id", "occurred_at"],
                "properties": {
                    "salon_id": {"type": "integer"},
                    "message_id": {"type": "string"},
                    "occurred_at": {"type": "string"},
                },
            },
        ),
    ],
}
EVENT_STREAM_RESPONSES: Responses = {
    200: {
        "description": "A `snapshot` event, then live events and `: ping` heartbeats; `expired` when the token ends.",
        "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
    },
    **json_errors(401, 429, 503),
}


def _document_probes(schema: dict[str, Any]) -> None:
    """`/readyz` answers 503 when not ready; `/metrics` is Prometheus text, not JSON (shared/health.py is generic)."""
    paths = schema.get("paths", {})
    ready = paths.get("/readyz", {}).get("get")
    if ready is not None:
        ready["responses"]["503"] = {
            "description": "Not ready: a dependency check failed (which one is in `checks`).",
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    metrics = paths.get("/metrics", {}).get("get")
    if metrics is not None:
        metrics["responses"]["200"]["content"] = {"text/plain": {"schema": TEXT_SCHEMA}}


def _add_models(schema: dict[str, Any], *models: type[BaseModel]) -> None:
    """Put models referenced by hand-written responses into `components.schemas`."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        model_schema = model.model_json_schema(ref_template=_REF)
        components.update(model_schema.pop("$defs", {}))
        components[model.__name__] = model_schema


def install_openapi(app: FastAPI) -> None:
    """Serve the generated document with the probes described as they really answer."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            _document_probes(schema)
            _add_models(schema, ErrorBody, Snapshot)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def json_body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself (to answer with its own errors)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}
