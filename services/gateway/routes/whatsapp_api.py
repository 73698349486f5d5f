"""WhatsApp pairing API for the onboarding page: start QR or phone-code pairing, seed-compatible status."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.auth import BEARER, authorize, pick_salon
from services.gateway.deps import SessionDep, SettingsDep
from services.gateway.errors import ApiError
from services.gateway.ids import PageSalonId
from services.gateway.openapi import json_errors
from services.gateway.phone import InvalidPhone, normalize_phone
from services.gateway.publishing import SinkDep
from services.gateway.snapshot import session_status
from shared.logging import log_context
from shared.messages import RequestPairing, RequestPairingData, salon_id_from_session, session_id_for
from shared.tokens import MAX_SALON_ID

router = APIRouter(prefix="/marketplace/api", tags=["whatsapp"])


class QrRequest(BaseModel):
    """Body of `POST /marketplace/api/qr` (optional: the first salon of the token by default)."""

    model_config = ConfigDict(extra="ignore")

    salon_id: PageSalonId | None = None
    token: str | None = None


class PairingCodeRequest(BaseModel):
    """Body of `POST /marketplace/api/pairing-code`."""

    model_config = ConfigDict(extra="ignore")

    phone: str = Field(max_length=256)
    salon_id: PageSalonId | None = None
    token: str | None = None


class PairingAccepted(BaseModel):
    """The pairing request is on its way to the WhatsApp service."""

    session_id: str
    salon_id: int
    status: Literal["pairing_requested"] = "pairing_requested"
    mode: Literal["qr", "phone"]


class SessionStatus(BaseModel):
    """Seed-compatible status of a session (nothing else is revealed: the route needs no token)."""

    connected: bool
    status: str


async def _request_pairing(
    salon_id: int, mode: Literal["qr", "phone"], phone: str | None, sink: SinkDep
) -> JSONResponse:
    session_id = session_id_for(salon_id)
    msg = RequestPairing(salon_id=salon_id, data=RequestPairingData(session_id=session_id, mode=mode, phone=phone))
    with log_context(message_id=str(msg.id), correlation_id=msg.correlation_id, salon_id=salon_id):
        await sink.send(msg)
    body = PairingAccepted(session_id=session_id, salon_id=salon_id, mode=mode)
    return JSONResponse(body.model_dump(), status_code=202)


@router.post(
    "/qr",
    status_code=202,
    response_model=PairingAccepted,
    responses=json_errors(400, 401, 403, 413, 422, 503),
    dependencies=[Security(BEARER)],
)
async def request_qr(
    request: Request, settings: SettingsDep, sink: SinkDep, body: QrRequest | None = None
) -> JSONResponse:
    """Start (or restart) QR pairing for a salon of the token; the QR arrives on the event stream."""
    _, claims = authorize(request, settings, body.token if body else None)
    salon_id = pick_salon(claims, body.salon_id if body else None)
    return await _request_pairing(salon_id, "qr", None, sink)


@router.post(
    "/pairing-code",
    status_code=202,
    response_model=PairingAccepted,
    responses=json_errors(400, 401, 403, 413, 422, 503),
    dependencies=[Security(BEARER)],
)
async def request_pairing_code(
    request: Request, settings: SettingsDep, sink: SinkDep, body: PairingCodeRequest
) -> JSONResponse:
    """Pair by phone number instead of QR: WhatsApp answers with an 8-character code to type on the phone."""
    _, claims = authorize(request, settings, body.token)
    salon_id = pick_salon(claims, body.salon_id)
    try:
        phone = normalize_phone(body.phone)
    except InvalidPhone as exc:
        raise ApiError(422, "invalid_phone", str(exc)) from None
    return await _request_pairing(salon_id, "phone", phone, sink)


@router.get("/status/{session_id}", response_model=SessionStatus, responses=json_errors(404, 422, 503))
async def whatsapp_status(session_id: str, session: SessionDep) -> SessionStatus:
    """`{connected, status}` of a `company_<salon_id>` session (404 for an unknown or malformed id)."""
    try:
        salon_id = salon_id_from_session(session_id)
    except ValueError:
        raise ApiError(404, "unknown_session", "Такой сессии нет.") from None
    if not 0 < salon_id <= MAX_SALON_ID:
        raise ApiError(404, "unknown_session", "Такой сессии нет.")
    found = await session_status(session, salon_id)
    if found is None:
        raise ApiError(404, "unknown_session", "Такой сессии нет.")
    connected, status = found
    return SessionStatus(connected=connected, status=status)
