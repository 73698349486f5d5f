"""The activation worker's reads and writes: company rows under lock, attempts, the audit trail."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import ActivationAttempt, Company, MarketplaceEvent

# Outcomes of an activation_attempts row that prove the app is installed on the salon.
INSTALLED_OUTCOMES = ("installed", "already_installed")
ACTIVATION_STARTED = "activation_started"
REGISTRATION_STARTED = "registration_started"
WHATSAPP_FLAG_EVENTS = ("whatsapp_connected", "whatsapp_logged_out")


async def lock_company(session: AsyncSession, salon_id: int) -> Company | None:
    """The salon's company row, locked (`FOR UPDATE`) until the transaction ends; None when not registered."""
    result = await session.execute(select(Company).where(Company.yclients_id == salon_id).with_for_update())
    return result.scalar_one_or_none()


async def record_attempt(
    session: AsyncSession,
    *,
    salon_id: int,
    company_id: int | None,
    attempt: int,
    action: str,
    outcome: str,
    status_code: int | None = None,
    error: str | None = None,
    message_id: uuid.UUID | None = None,
) -> None:
    """One call towards YClients (callback or status check) and what came of it."""
    session.add(
        ActivationAttempt(
            salon_id=salon_id,
            company_id=company_id,
            attempt=attempt,
            action=action,
            outcome=outcome,
            status_code=status_code,
            error=error,
            message_id=message_id,
        )
    )
    await session.flush()


async def has_unconfirmed_callback(session: AsyncSession, salon_id: int) -> bool:
    """True when a callback was sent after the last call that proved the app installed (its answer may be lost)."""
    last_installed = (
        select(func.coalesce(func.max(ActivationAttempt.id), 0))
        .where(ActivationAttempt.salon_id == salon_id, ActivationAttempt.outcome.in_(INSTALLED_OUTCOMES))
        .scalar_subquery()
    )
    found = await session.execute(
        select(ActivationAttempt.id)
        .where(
            ActivationAttempt.salon_id == salon_id,
            ActivationAttempt.action == "callback",
            ActivationAttempt.id > last_installed,
        )
        .limit(1)
    )
    return found.first() is not None


async def mark_activation_started(
    session: AsyncSession, *, salon_id: int, company_id: int, message_id: uuid.UUID, data: dict[str, Any]
) -> None:
    """Make `message_id` the owner of the salon's activation (again, for a retried or replayed message)."""
    stmt = insert(MarketplaceEvent).values(
        salon_id=salon_id, company_id=company_id, event_type=ACTIVATION_STARTED, event_data=data, message_id=message_id
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[MarketplaceEvent.event_type, MarketplaceEvent.message_id, MarketplaceEvent.salon_id],
            index_where=MarketplaceEvent.message_id.is_not(None),
            set_={"created_at": func.now(), "event_data": stmt.excluded.event_data},
        )
    )


@dataclass(frozen=True)
class Owner:
    """The message that started the activation in flight, and when it last showed a sign of life."""

    message_id: uuid.UUID | None
    last_seen: datetime


async def activation_owner(session: AsyncSession, salon_id: int) -> Owner | None:
    """Who started the latest activation of the salon (None if it never started)."""
    started = (
        await session.execute(
            select(MarketplaceEvent.message_id, MarketplaceEvent.created_at)
            .where(MarketplaceEvent.salon_id == salon_id, MarketplaceEvent.event_type == ACTIVATION_STARTED)
            .order_by(MarketplaceEvent.created_at.desc(), MarketplaceEvent.id.desc())
            .limit(1)
        )
    ).first()
    if started is None:
        return None
    last_call = (
        await session.execute(
            select(func.max(ActivationAttempt.at)).where(
                ActivationAttempt.salon_id == salon_id, ActivationAttempt.message_id == started.message_id
            )
        )
    ).scalar_one_or_none()
    last_seen: datetime = max(started.created_at, last_call) if last_call is not None else started.created_at
    return Owner(started.message_id, last_seen)


async def latest_flag_change(session: AsyncSession, salon_id: int) -> datetime | None:
    """When the newest WhatsApp link event applied to the salon happened (its `occurred_at`)."""
    value = (
        await session.execute(
            select(func.max(MarketplaceEvent.event_data["occurred_at"].astext.cast(DateTime(timezone=True)))).where(
                MarketplaceEvent.salon_id == salon_id, MarketplaceEvent.event_type.in_(WHATSAPP_FLAG_EVENTS)
            )
        )
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


async def registered_after(session: AsyncSession, salon_id: int, moment: datetime) -> bool:
    """True when the salon went through the install redirect (again) after `moment`."""
    found = await session.execute(
        select(MarketplaceEvent.id)
        .where(
            MarketplaceEvent.salon_id == salon_id,
            MarketplaceEvent.event_type == REGISTRATION_STARTED,
            MarketplaceEvent.created_at > moment,
        )
        .limit(1)
    )
    return found.first() is not None
