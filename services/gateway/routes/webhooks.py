"""What YClients (and the onboarding page) tell us: lifecycle and data webhooks, manual activation requests.

Every route validates, authenticates, publishes through the sink (confirmed by the broker, else kept in the
Postgres outbox, else 503) and answers only once the message is safe; the work happens in the workers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import uuid
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.responses import Response

from services.gateway.auth import BEARER, authorize, pick_salon
from services.gateway.deps import SessionMakerDep, SettingsDep
from services.gateway.direct import direct_route
from services.gateway.errors import ApiError
from services.gateway.ids import PageSalonId, YClientsId
from services.gateway.openapi import Accepted, ActivationAccepted, json_body, json_errors
from services.gateway.publishing import SinkDep, sink_of
from shared.config import Settings
from shared.db.models import ProcessedMessage
from shared.logging import log_context
from shared.messages import (
    DataChangedData,
    RequestActivation,
    RequestActivationData,
    WebhookReceivedData,
    YClientsDataChanged,
    YClientsWebhookReceived,
)
from shared.tokens import MAX_TOKEN_CHARS

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])
_M = TypeVar("_M", bound=BaseModel)

# Data-webhook de-duplication: YClients retries a delivery twice, 1.5 s apart, after a 10 s timeout, so a
# copy arrives within ~25 s; two minutes covers that without swallowing a real change back to an old state.
DATA_DEDUP_CONSUMER = "gateway.data_webhook"
DATA_DEDUP_WINDOW = timedelta(minutes=2)
DATA_DEDUP_KEEP = timedelta(hours=1)
DATA_DEDUP_PRUNE_PROBABILITY = 0.01
_DATA_NAMESPACE = uuid.UUID("6f1c2a0e-5b7d-4c8e-9a3f-2d4b6e8f0a1c")

JSON = "application/json"
FORBIDDEN_MESSAGE = "Webhook отклонён: неверный partner_token или application_id."
# Webhook bodies are a few levels deep; far deeper nesting is an attack on the parsers and serialisers after us.
MAX_JSON_DEPTH = 32
TOO_DEEP_MESSAGE = f"JSON в теле запроса вложен глубже {MAX_JSON_DEPTH} уровней."


class LifecycleWebhook(BaseModel):
    """`{salon_id, application_id, event, partner_token}` (YCLIENTS.md §5); other fields are kept as they came."""

    model_config = ConfigDict(extra="allow")

    salon_id: YClientsId
    application_id: YClientsId
    event: str = Field(min_length=1, max_length=64)
    partner_token: str = Field(max_length=1024)


class DataWebhook(BaseModel):
    """`{company_id, resource, resource_id, status, data}` (YCLIENTS.md §5)."""

    model_config = ConfigDict(extra="allow")

    company_id: YClientsId
    resource: str = Field(min_length=1, max_length=64)
    resource_id: Annotated[int, Strict()] | Annotated[str, Strict(), Field(max_length=256)] | None = None
    status: str | None = Field(default=None, max_length=64)
    data: Any = None


class ActivationRequest(BaseModel):
    """Seed-compatible `{token}` (the token may also come as `Authorization: Bearer`), optionally one salon."""

    model_config = ConfigDict(extra="ignore")

    token: str | None = Field(default=None, max_length=MAX_TOKEN_CHARS)
    salon_id: PageSalonId | None = None


@direct_route(
    router,
    "/webhook/yclients",
    methods=["POST"],
    response_model=Accepted,
    responses=json_errors(403, 413, 422, 503),
    openapi_extra=json_body(LifecycleWebhook),
)
async def lifecycle_webhook(request: Request) -> Response:
    """Lifecycle webhook (uninstall, freeze, payment, ...): 200 once `yclients.webhook_received` is safe."""
    settings: Settings = request.app.state.settings
    raw = await _json_object(request)
    hook = _validated(LifecycleWebhook, raw)
    if not _is_ours(hook, settings):
        log.warning(
            "lifecycle webhook refused",
            extra={"salon_id": hook.salon_id, "event": hook.event, "application_id": hook.application_id},
        )
        raise ApiError(403, "forbidden", FORBIDDEN_MESSAGE)
    body = {key: value for key, value in raw.items() if key != "partner_token"}
    msg = YClientsWebhookReceived(
        salon_id=hook.salon_id,
        data=WebhookReceivedData(
            salon_id=hook.salon_id, application_id=hook.application_id, event=hook.event, body=body
        ),
    )
    message_id = str(msg.id)
    with log_context(message_id=message_id, correlation_id=msg.correlation_id, salon_id=hook.salon_id):
        outcome = await sink_of(request).send(msg)
        # DEBUG: the activation worker logs every lifecycle webhook it applies (same message_id), and a fallback
        # to the outbox is a warning of its own; at INFO this line was 3% of the ingest path's CPU.
        log.debug("lifecycle webhook accepted", extra={"event": hook.event, "outcome": outcome})
    # What JSONResponse would render for {"success": true, "status": "accepted", "message_id": ...}.
    return Response(b'{"success":true,"status":"accepted","message_id":"%s"}' % message_id.encode(), media_type=JSON)


@router.post(
    "/webhook/yclients/data",
    response_model=Accepted,
    responses=json_errors(413, 422, 503),
    openapi_extra=json_body(DataWebhook),
)
async def data_webhook(request: Request, sink: SinkDep, sessionmaker: SessionMakerDep) -> JSONResponse:
    """Data webhook (records, clients, ...): de-duplicated, published as `yclients.data_changed`."""
    raw = await _json_object(request)
    hook = _validated(DataWebhook, raw)
    key = data_dedup_key(hook)
    msg = YClientsDataChanged(
        id=uuid.uuid5(_DATA_NAMESPACE, key),
        salon_id=hook.company_id,
        data=DataChangedData(
            company_id=hook.company_id,
            resource=hook.resource,
            resource_id=hook.resource_id,
            status=hook.status,
            dedup_key=key,
            payload=raw,
        ),
    )
    with log_context(message_id=str(msg.id), salon_id=hook.company_id):
        sent = False
        try:
            async with sessionmaker() as session:
                if not await _claim_data_key(session, msg.id):
                    log.info("data webhook duplicate", extra={"resource": hook.resource})
                    return JSONResponse({"success": True, "status": "duplicate", "message_id": str(msg.id)})
                # The claim stays uncommitted until the message is safe: a copy arriving meanwhile waits on it,
                # and a failed publish releases the key for YClients' retry.
                await sink.send(msg)
                sent = True
                await session.commit()
            if random.random() < DATA_DEDUP_PRUNE_PROBABILITY:
                await _prune_data_keys(sessionmaker)
        except (SQLAlchemyError, OSError) as exc:
            if not sent:
                # Without the de-duplication store a copy may go out twice; consumers see the same message id.
                log.warning("data webhook dedup unavailable", extra={"error": repr(exc)})
                await sink.send(msg)
        log.info("data webhook accepted", extra={"resource": hook.resource, "status": hook.status})
    return JSONResponse({"success": True, "status": "accepted", "message_id": str(msg.id)})


@router.post(
    "/marketplace/activate",
    status_code=202,
    response_model=ActivationAccepted,
    responses=json_errors(401, 403, 413, 422, 503),
    dependencies=[Security(BEARER)],
    openapi_extra=json_body(ActivationRequest, required=False),
)
async def request_activation(request: Request, settings: SettingsDep, sink: SinkDep) -> JSONResponse:
    """Manual (re)activation from the onboarding page: `activation.requested` for the token's salon(s)."""
    raw = await _json_object(request, allow_empty=True)
    body = _validated(ActivationRequest, raw)
    _, claims = authorize(request, settings, body.token)
    salon_ids = [pick_salon(claims, body.salon_id)] if body.salon_id is not None else list(claims.salon_ids)
    for salon_id in salon_ids:
        msg = RequestActivation(salon_id=salon_id, data=RequestActivationData(salon_id=salon_id, reason="manual"))
        with log_context(message_id=str(msg.id), correlation_id=msg.correlation_id, salon_id=salon_id):
            await sink.send(msg)
            log.info("activation requested")
    return JSONResponse({"success": True, "status": "activation_requested", "salon_ids": salon_ids}, status_code=202)


def data_dedup_key(hook: DataWebhook) -> str:
    """SHA-256 over company, resource, resource id, status and a hash of `data`: equal for a repeated delivery."""
    data_hash = hashlib.sha256(_canonical(hook.data)).hexdigest()
    resource_id = None if hook.resource_id is None else str(hook.resource_id)
    material = _canonical([hook.company_id, hook.resource, resource_id, hook.status, data_hash])
    return hashlib.sha256(material).hexdigest()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _is_ours(hook: LifecycleWebhook, settings: Settings) -> bool:
    expected = settings.YCLIENTS_PARTNER_TOKEN.get_secret_value().encode("utf-8")
    token_ok = bool(expected) and hmac.compare_digest(hook.partner_token.encode("utf-8"), expected)
    return token_ok and hook.application_id == settings.YCLIENTS_APP_ID


async def _claim_data_key(session: AsyncSession, message_id: uuid.UUID) -> bool:
    """True when no copy of this data webhook was accepted within the window (the row is then held locked)."""
    stmt = insert(ProcessedMessage).values(consumer=DATA_DEDUP_CONSUMER, message_id=message_id)
    result = await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[ProcessedMessage.consumer, ProcessedMessage.message_id],
            set_={"processed_at": func.now()},
            where=ProcessedMessage.processed_at < func.now() - DATA_DEDUP_WINDOW,
        ).returning(ProcessedMessage.message_id)
    )
    return result.first() is not None


async def _prune_data_keys(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    try:
        async with sessionmaker() as session:
            await session.execute(
                delete(ProcessedMessage).where(
                    ProcessedMessage.consumer == DATA_DEDUP_CONSUMER,
                    ProcessedMessage.processed_at < func.now() - DATA_DEDUP_KEEP,
                )
            )
            await session.commit()
    except (SQLAlchemyError, OSError) as exc:
        log.info("data webhook dedup prune failed", extra={"error": repr(exc)})


async def _json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise ApiError(422, "invalid_json", "Пустое тело запроса: ожидается JSON-объект.")
    try:
        # What json.loads does with bytes, keeping the text for the cheap checks below.
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        value = _DECODER.decode(text)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(422, "invalid_json", "Тело запроса — некорректный JSON.") from None
    except RecursionError:
        raise ApiError(422, "invalid_json", TOO_DEEP_MESSAGE) from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_json", "Ожидается JSON-объект в теле запроса.")
    # The nesting is at most the number of opening brackets in the text; only then is it walked.
    if text.count("{") + text.count("[") > MAX_JSON_DEPTH and nesting_exceeds(value, MAX_JSON_DEPTH):
        raise ApiError(422, "invalid_json", TOO_DEEP_MESSAGE)
    # Strict JSON has no raw control characters: a decoded NUL can only come from the escape \u0000.
    if "\\u0000" not in text:
        return value
    cleaned: dict[str, Any] = without_nul(value)
    return cleaned


def without_nul(value: Any) -> Any:
    """The JSON value with NUL characters removed from every string (keys too).

    PostgreSQL's text and jsonb cannot hold U+0000: a webhook carrying one would fail in the worker on every
    delivery and its effect (an uninstall) would never apply. Call only after the depth check (it recurses).
    """
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    return value


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: Python accepts them, PostgreSQL's jsonb and other consumers do not.
    raise ValueError(f"{name} is not valid JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def nesting_exceeds(value: Any, limit: int) -> bool:
    """True when objects/arrays nest deeper than `limit` (walked without recursion, so any depth is safe)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _validated(model: type[_M], raw: dict[str, Any]) -> _M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors() if e.get("loc")})
        detail = "Проверьте поля запроса: " + ", ".join(fields) + "." if fields else "Некорректный запрос."
        raise ApiError(422, "invalid_request", detail) from None
