"""The emulated phone and the test controls, on the whatsapp worker's own port (DESIGN §10).

- ``POST /emulator/scan {"session_id", "qr", "phone"?}``: the phone scans a QR; 200 when it is the session's
  currently valid payload and the session's client confirmed the pairing (it may take up to
  ``WHATSAPP_EMULATOR_CONFIRM_S``), 409 when it is stale, wrong, no pairing is waiting, or the client did not
  confirm (dead, or its attempt was replaced).
- ``POST /emulator/pair {"session_id", "code"}``: the phone enters a pairing code; 200 / 409 likewise.
- ``POST /emulator/drop {"session_id", "code"}``: the server ends the open connection with a WhatsApp code
  (408, 428, 503 transient; 515 restart; 401 removed on the phone; 403 banned; 440 replaced; 500 bad session);
  409 when the session is not connected.
- ``GET /emulator/sessions/{session_id}``: the server's record (linked device, connection, attempt).

Any worker answers: the state is the shared emulated server (services/whatsapp/emulator/server.py), and the
owner of the session is woken by a PostgreSQL notification.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from services.whatsapp.emulator.protocol import default_phone, normalize_pairing_code, normalize_phone, unwrap_qr
from services.whatsapp.emulator.server import DROP_CODES, EmulatorServer, LinkOutcome

_NOT_CONFIRMED = "the device did not answer (its pairing was cancelled or it is offline); scan the current QR again"
_SESSION_ID = Field(min_length=1, max_length=64, pattern=r"^company_[0-9]+$")


class ScanBody(BaseModel):
    """A scan by the emulated phone."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = _SESSION_ID
    qr: str = Field(min_length=1, max_length=2048)
    phone: str | None = Field(None, max_length=32)


class PairBody(BaseModel):
    """A pairing code typed on the emulated phone."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = _SESSION_ID
    code: str = Field(min_length=1, max_length=32)


class DropBody(BaseModel):
    """A disconnect the emulated server sends."""

    model_config = ConfigDict(extra="forbid")

    session_id: str = _SESSION_ID
    code: int


def emulator_router(server: EmulatorServer) -> APIRouter:
    """The phone and control endpoints over ``server``."""
    router = APIRouter(prefix="/emulator", tags=["emulator"])

    @router.post("/scan")
    async def scan(body: ScanBody) -> dict[str, Any]:
        """The phone scans a QR: accepted only while it is the currently valid one."""
        phone = default_phone(body.session_id)
        if body.phone is not None:
            normalized = normalize_phone(body.phone)
            if normalized is None:
                raise HTTPException(422, "phone must be digits with the country code, e.g. 79991234567")
            phone = normalized
        outcome = await server.link_by_qr(body.session_id, unwrap_qr(body.qr), phone)
        if outcome is LinkOutcome.UNCONFIRMED:
            raise HTTPException(409, _NOT_CONFIRMED)
        if outcome is not LinkOutcome.LINKED:
            raise HTTPException(409, "this QR code is not valid now (expired, replaced by a newer one, or wrong)")
        return {"status": "linked", "session_id": body.session_id, "phone": phone}

    @router.post("/pair")
    async def pair(body: PairBody) -> dict[str, Any]:
        """The phone enters a pairing code: accepted only while it is the valid one."""
        code = normalize_pairing_code(body.code)
        outcome = LinkOutcome.INVALID if code is None else await server.link_by_code(body.session_id, code)
        if outcome is LinkOutcome.UNCONFIRMED:
            raise HTTPException(
                409,
                "the device did not answer (its pairing was cancelled or it is offline); request a new pairing code",
            )
        if outcome is not LinkOutcome.LINKED:
            raise HTTPException(409, "this pairing code is not valid now (expired, replaced, or wrong)")
        return {"status": "linked", "session_id": body.session_id}

    @router.post("/drop")
    async def drop(body: DropBody) -> dict[str, Any]:
        """The server ends the session's open connection with ``code``."""
        if body.code not in DROP_CODES:
            raise HTTPException(422, f"code must be one of {sorted(DROP_CODES)}")
        if not await server.request_drop(body.session_id, body.code):
            raise HTTPException(409, "the session is not connected")
        return {"status": "dropping", "session_id": body.session_id, "code": body.code}

    @router.get("/sessions/{session_id}")
    async def describe(session_id: str) -> dict[str, Any]:
        """The emulated server's record of a session."""
        return await server.describe(session_id)

    return router
