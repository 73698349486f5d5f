"""The onboarding snapshot: what the page shows for each salon, read from Postgres (read-only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.gateway.qr import qr_svg
from services.gateway.wording import activation_error_text
from shared.db.models import ActivationAttempt, Company, WhatsAppSession
from shared.messages import session_id_for, utcnow

ActivationStatus = Literal["waiting", "activating", "active", "failed", "frozen", "uninstalled"]
ACTIVATION_BY_INTEGRATION: dict[str, ActivationStatus] = {
    "pending_whatsapp": "waiting",
    "activating": "activating",
    "active": "active",
    "activation_failed": "failed",
    "frozen": "frozen",
    "uninstalled": "uninstalled",
}
# Clocks of the gateway and PostgreSQL may differ a little.
CLOCK_SKEW = timedelta(seconds=5)


class QrView(BaseModel):
    """The QR code to scan now."""

    payload: str
    svg: str | None
    seq: int | None
    max: int | None
    expires_at: datetime | None
    attempt_id: str | None = None


class PairingCodeView(BaseModel):
    """The code to type on the phone instead of scanning."""

    code: str
    display: str
    expires_at: datetime | None
    attempt_id: str | None = None


class WhatsAppView(BaseModel):
    """The salon's WhatsApp session as the page needs it (`state` is null before the first pairing request)."""

    session_id: str
    state: str | None
    phone: str | None
    qr: QrView | None
    pairing_code: PairingCodeView | None
    last_error: str | None
    retrying: bool


class ActivationView(BaseModel):
    """The outcome of the partner callback, with a plain-Russian reason when it failed."""

    status: ActivationStatus | None
    error: str | None


class SalonView(BaseModel):
    """One salon (branch) of the install."""

    salon_id: int
    title: str | None
    integration_status: str | None
    registered: bool
    whatsapp: WhatsAppView
    activation: ActivationView


class Snapshot(BaseModel):
    """Everything the onboarding page shows, for every salon of the token, in the token's order."""

    server_time: datetime
    salons: list[SalonView]


def format_pairing_code(code: str) -> str:
    """`ABCDEFGH` → `ABCD-EFGH` (an already formatted code is kept)."""
    raw = code.replace("-", "").strip().upper()
    return f"{raw[:4]}-{raw[4:]}" if len(raw) == 8 else raw


def qr_view(
    payload: str, seq: int | None, max_: int | None, expires_at: datetime | None, attempt_id: str | None
) -> QrView:
    """A QR view with its SVG rendered from the payload."""
    return QrView(payload=payload, svg=qr_svg(payload), seq=seq, max=max_, expires_at=expires_at, attempt_id=attempt_id)


def pairing_code_view(code: str, expires_at: datetime | None, attempt_id: str | None) -> PairingCodeView:
    """A pairing-code view with its display form."""
    return PairingCodeView(code=code, display=format_pairing_code(code), expires_at=expires_at, attempt_id=attempt_id)


def whatsapp_view(salon_id: int, row: WhatsAppSession | None) -> WhatsAppView:
    """The session row as the page sees it; the QR/code only while pairing is under way."""
    session_id = session_id_for(salon_id)
    if row is None:
        return WhatsAppView(
            session_id=session_id, state=None, phone=None, qr=None, pairing_code=None, last_error=None, retrying=False
        )
    pairing = row.state == "pairing"
    qr = (
        qr_view(row.qr_payload, row.qr_seq, row.qr_max, row.qr_expires_at, row.attempt_id)
        if pairing and row.qr_payload
        else None
    )
    code = (
        pairing_code_view(row.pairing_code, row.pairing_code_expires_at, row.attempt_id)
        if pairing and row.pairing_code
        else None
    )
    return WhatsAppView(
        session_id=session_id,
        state=row.state,
        phone=row.phone,
        qr=qr,
        pairing_code=code,
        last_error=row.last_error,
        retrying=row.state in ("disconnected", "engine_unreachable", "connecting") and row.retry_at is not None,
    )


def _registered(company: Company | None, issued_at: datetime | None) -> bool:
    if company is None:
        return False
    # After a re-install the old row says "uninstalled" until the registration worker has processed this install.
    if company.integration_status == "uninstalled" and issued_at is not None:
        return company.updated_at >= issued_at - CLOCK_SKEW
    return True


async def load_snapshot(session: AsyncSession, salon_ids: list[int], *, issued_at: datetime | None) -> Snapshot:
    """Read the companies and sessions of `salon_ids` (3 small indexed queries)."""
    companies = {
        c.yclients_id: c
        for c in (await session.execute(select(Company).where(Company.yclients_id.in_(salon_ids)))).scalars()
    }
    sessions = {
        s.salon_id: s
        for s in (
            await session.execute(
                select(WhatsAppSession).where(WhatsAppSession.session_id.in_([session_id_for(s) for s in salon_ids]))
            )
        ).scalars()
    }
    failed = [sid for sid, c in companies.items() if c.integration_status == "activation_failed"]
    last_attempts: dict[int, ActivationAttempt] = {}
    if failed:
        latest = (
            select(func.max(ActivationAttempt.id))
            .where(ActivationAttempt.salon_id.in_(failed))
            .group_by(ActivationAttempt.salon_id)
        )
        rows = await session.execute(select(ActivationAttempt).where(ActivationAttempt.id.in_(latest)))
        last_attempts = {a.salon_id: a for a in rows.scalars()}

    salons: list[SalonView] = []
    for salon_id in salon_ids:
        company = companies.get(salon_id)
        registered = _registered(company, issued_at)
        status = company.integration_status if company is not None and registered else None
        error = None
        if status == "activation_failed" and company is not None:
            attempt = last_attempts.get(salon_id)
            error = activation_error_text(
                attempt.status_code if attempt else None, (attempt.error if attempt else None) or company.last_error
            )
        salons.append(
            SalonView(
                salon_id=salon_id,
                title=company.title if company is not None and registered else None,
                integration_status=status,
                registered=registered,
                whatsapp=whatsapp_view(salon_id, sessions.get(salon_id)),
                activation=ActivationView(
                    status=ACTIVATION_BY_INTEGRATION.get(status) if status else None, error=error
                ),
            )
        )
    return Snapshot(server_time=utcnow(), salons=salons)


async def session_status(session: AsyncSession, salon_id: int) -> tuple[bool, str] | None:
    """Seed-compatible `(connected, status)` of a salon's session; None when neither session nor company exists."""
    row = await session.get(WhatsAppSession, session_id_for(salon_id))
    if row is not None:
        return row.state == "connected", row.state
    exists = (await session.execute(select(Company.id).where(Company.yclients_id == salon_id))).first()
    return (False, "not_started") if exists else None
