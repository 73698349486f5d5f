"""Company rows as registration writes them (identity and profile columns)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import TextClause, func, select, text, update
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


# Reinstalling after an uninstall starts the integration over: these columns go back to a fresh install's values.
_RESET_ON_REINSTALL = {
    "integration_status": "'pending_whatsapp'",
    "whatsapp_connected": "false",
    "whatsapp_phone": "NULL",
    "api_key_hash": "NULL",
    "api_key_created_at": "NULL",
    "activated_at": "NULL",
    "last_error": "NULL",
}
_USER_COLUMNS = ("marketplace_user_id", "marketplace_user_name", "marketplace_user_phone", "marketplace_user_email")

_LOCK = text(
    "SELECT yclients_id, integration_status FROM companies WHERE yclients_id = ANY(CAST(:ids AS bigint[]))"
    " ORDER BY yclients_id FOR UPDATE"
)


def _upsert_statement(*, with_user: bool) -> TextClause:
    """One INSERT … ON CONFLICT for a whole batch (unnest of arrays); user columns only when the install had one.

    Without a user the stored one is kept. The rows are locked first (`_LOCK`), so `c.integration_status` in the
    SET list is the status read under that lock.
    """
    user_cols = list(_USER_COLUMNS) if with_user else []
    arrays = ["CAST(:salon_ids AS bigint[])", "CAST(:titles AS text[])"] + [
        f"CAST(:{col} AS text[])" for col in user_cols
    ]
    names = ["salon_id", "title", *user_cols]
    sets = [f"{col} = excluded.{col}" for col in user_cols]
    sets += [
        f"{col} = CASE WHEN c.integration_status = 'uninstalled' THEN {value} ELSE c.{col} END"
        for col, value in _RESET_ON_REINSTALL.items()
    ]
    sets.append("updated_at = now()")
    columns = ", ".join(["yclients_id", "title", "integration_status", "whatsapp_connected", *user_cols])
    values = ", ".join(["u.salon_id", "u.title", "'pending_whatsapp'", "false", *(f"u.{col}" for col in user_cols)])
    source = f"unnest({', '.join(arrays)}) AS u({', '.join(names)})"
    returning = "c.id, c.yclients_id, c.title, c.integration_status, c.enriched_at IS NOT NULL AS enriched"
    # Assembled from the constant column names above only, never from input.
    sql = f"INSERT INTO companies AS c ({columns}) SELECT {values} FROM {source}"  # noqa: S608
    return text(f"{sql} ON CONFLICT (yclients_id) DO UPDATE SET {', '.join(sets)} RETURNING {returning}")


_UPSERT_WITH_USER = _upsert_statement(with_user=True)
_UPSERT_WITHOUT_USER = _upsert_statement(with_user=False)


def _user_values(user: MarketplaceUser | None) -> tuple[str | None, str | None, str | None, str | None]:
    if user is None:
        return (None, None, None, None)
    return (fit(user.id, 255), fit(user.name, 255), fit(user.phone, 64), fit(user.email, 255))


async def upsert_companies(
    session: AsyncSession, installs: Sequence[tuple[int, MarketplaceUser | None]]
) -> dict[int, UpsertResult]:
    """Insert or refresh every salon in one statement per kind; an uninstalled salon goes back to `pending_whatsapp`.

    Each salon id may appear once (one `ON CONFLICT DO UPDATE` can't touch a row twice); the caller splits.
    """
    salon_ids = [salon_id for salon_id, _ in installs]
    if len(set(salon_ids)) != len(salon_ids):
        raise ValueError("a salon id appears twice in one upsert")
    conn = await session.connection()
    previous = {row[0]: row[1] for row in await conn.execute(_LOCK, {"ids": salon_ids})}
    results: dict[int, UpsertResult] = {}
    for with_user in (True, False):
        # In id order, as the lock took them: two workers inserting the same new salons can't deadlock.
        group = sorted(((s, u) for s, u in installs if (u is not None) == with_user), key=lambda pair: pair[0])
        if not group:
            continue
        params: dict[str, Any] = {
            "salon_ids": [salon_id for salon_id, _ in group],
            "titles": [fallback_title(salon_id) for salon_id, _ in group],
        }
        if with_user:
            columns = list(zip(*(_user_values(user) for _, user in group), strict=True))
            params |= {col: list(values) for col, values in zip(_USER_COLUMNS, columns, strict=True)}
        statement = _UPSERT_WITH_USER if with_user else _UPSERT_WITHOUT_USER
        for row in await conn.execute(statement, params):
            results[row.yclients_id] = UpsertResult(
                row.id, row.title, row.integration_status, previous.get(row.yclients_id), row.enriched
            )
    return results


async def upsert_company(session: AsyncSession, salon_id: int, user: MarketplaceUser | None) -> UpsertResult:
    """Insert the company or refresh it; an uninstalled salon goes back to `pending_whatsapp`."""
    return (await upsert_companies(session, [(salon_id, user)]))[salon_id]


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
