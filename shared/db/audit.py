"""The audit trail (`marketplace_events`) every service appends to."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import MarketplaceEvent


async def record_event(
    session: AsyncSession,
    *,
    salon_id: int,
    company_id: int | None,
    event_type: str,
    data: dict[str, Any],
    message_id: uuid.UUID | None = None,
) -> bool:
    """Append to the audit trail; False when this message already recorded this event type."""
    result = await session.execute(
        insert(MarketplaceEvent)
        .values(salon_id=salon_id, company_id=company_id, event_type=event_type, event_data=data, message_id=message_id)
        .on_conflict_do_nothing()
        .returning(MarketplaceEvent.id)
    )
    return result.first() is not None


_BULK_INSERT = insert(MarketplaceEvent.metadata.tables[MarketplaceEvent.__tablename__]).on_conflict_do_nothing()


@dataclass(frozen=True)
class AuditEvent:
    """One audit-trail row, for `record_events`."""

    salon_id: int
    company_id: int | None
    event_type: str
    data: dict[str, Any]
    message_id: uuid.UUID | None = None


async def record_events(session: AsyncSession, events: Sequence[AuditEvent]) -> None:
    """Append several rows in one statement; a row its message already recorded is skipped."""
    if events:
        await (await session.connection()).execute(
            _BULK_INSERT,
            [
                {
                    "salon_id": e.salon_id,
                    "company_id": e.company_id,
                    "event_type": e.event_type,
                    "event_data": e.data,
                    "message_id": e.message_id,
                }
                for e in events
            ],
        )
