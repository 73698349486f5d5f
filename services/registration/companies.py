"""Company rows as registration writes them (identity and profile columns)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Company
from shared.messages import MarketplaceUser


def fit(value: str | None, size: int) -> str | None:
    """Text as the column can hold it: no NUL (PostgreSQL refuses it), at most `size` characters."""
    if value is None:
        return None
    return value.replace("\x00", "")[:size]


def fallback_title(salon_id: int) -> str:
    """The title a company carries until YClients told us its real one."""
    return f"Салон {salon_id}"


@dataclass(frozen=True)
class UpsertResult:
    """What the upsert found and left."""

    company_id: int
    title: str
    status: str
    previous_status: str | None
    enriched: bool

    @property
    def reinstalled(self) -> bool:
        """True when an uninstalled salon came back."""
        return self.previous_status == "uninstalled"


async def upsert_company(session: AsyncSession, salon_id: int, user: MarketplaceUser | None) -> UpsertResult:
    """Insert the company or refresh it; an uninstalled salon goes back to `pending_whatsapp`."""
    previous = (
        await session.execute(
            select(Company.integration_status).where(Company.yclients_id == salon_id).with_for_update()
        )
    ).scalar_one_or_none()
    user_fields: dict[str, Any] = {}
    if user is not None:
        user_fields = {
            "marketplace_user_id": fit(user.id, 255),
            "marketplace_user_name": fit(user.name, 255),
            "marketplace_user_phone": fit(user.phone, 64),
            "marketplace_user_email": fit(user.email, 255),
        }
    stmt = insert(Company).values(
        yclients_id=salon_id,
        title=fallback_title(salon_id),
        integration_status="pending_whatsapp",
        whatsapp_connected=False,
        **user_fields,
    )
    on_conflict: dict[str, Any] = {k: stmt.excluded[k] for k in user_fields}
    if previous == "uninstalled":
        on_conflict |= {
            "integration_status": "pending_whatsapp",
            "whatsapp_connected": False,
            "whatsapp_phone": None,
            "api_key_hash": None,
            "api_key_created_at": None,
            "activated_at": None,
            "last_error": None,
        }
    on_conflict["updated_at"] = stmt.excluded.updated_at
    row = (
        await session.execute(
            stmt.on_conflict_do_update(index_elements=[Company.yclients_id], set_=on_conflict).returning(
                Company.id, Company.title, Company.integration_status, Company.enriched_at
            )
        )
    ).one()
    return UpsertResult(row.id, row.title, row.integration_status, previous, row.enriched_at is not None)


async def apply_profile(
    session: AsyncSession, salon_id: int, *, title: str, phone: str | None, timezone: str | None
) -> int | None:
    """Store the profile fetched from YClients; returns the company id (None if it does not exist)."""
    result = await session.execute(
        update(Company)
        .where(Company.yclients_id == salon_id)
        .values(title=title, phone=phone, timezone=timezone, enriched_at=func.now())
        .returning(Company.id)
    )
    return result.scalar_one_or_none()


async def companies_missing_profile(session: AsyncSession, *, older_than_s: int, limit: int) -> list[int]:
    """Salon ids registered more than `older_than_s` ago whose profile was never fetched."""
    rows = await session.execute(
        select(Company.yclients_id)
        .where(
            Company.enriched_at.is_(None),
            Company.integration_status != "uninstalled",
            Company.created_at < func.now() - timedelta(seconds=older_than_s),
        )
        .order_by(Company.created_at)
        .limit(limit)
    )
    return list(rows.scalars())
