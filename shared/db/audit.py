"""The audit trail (`marketplace_events`) every service appends to."""

from __future__ import annotations

import uuid
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
